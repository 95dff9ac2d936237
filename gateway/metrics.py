"""Process metrics in the Prometheus text format, without a client library.

The dispatcher records every outcome (component, verdict, error kind, attempts, duration);
adapters record their own facts (skipped cron ticks, broker connection state, dead
letters) through :func:`counter` / :func:`gauge`. ``GET /metrics`` on the HTTP listener
renders them. Updates happen on the event loop thread, so plain dicts suffice.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

Labels = tuple[tuple[str, str], ...]

# Seconds; covers a pooled call (~0.3 ms) up to a slow handler with retries.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)


class Registry:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, str] = {}

    def counter(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        self._help.setdefault(name, help_text)
        key = _labels(labels)
        series = self._counters[name]
        series[key] = series.get(key, 0.0) + amount

    def gauge(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self._help.setdefault(name, help_text)
        self._gauges[name][_labels(labels)] = value

    def observe(self, name: str, help_text: str, seconds: float, **labels: str) -> None:
        self._help.setdefault(name, help_text)
        key = _labels(labels)
        # One count per bucket plus +Inf, then the sum and the count.
        series = self._histograms[name].setdefault(key, [0.0] * (len(BUCKETS) + 3))
        series[bisect.bisect_left(BUCKETS, seconds)] += 1
        series[-2] += seconds
        series[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
            lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
        for name, series in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
        for name, histograms in sorted(self._histograms.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} histogram"]
            for key, values in sorted(histograms.items()):
                cumulative = 0.0
                for bound, count in zip((*BUCKETS, float("inf")), values, strict=False):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{name}_bucket{_fmt((*key, ('le', le)))} {cumulative:g}")
                lines.append(f"{name}_sum{_fmt(key)} {values[-2]:g}")
                lines.append(f"{name}_count{_fmt(key)} {values[-1]:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


REGISTRY = Registry()
counter = REGISTRY.counter
gauge = REGISTRY.gauge
observe = REGISTRY.observe
render = REGISTRY.render


__all__ = ["BUCKETS", "REGISTRY", "Registry", "counter", "gauge", "observe", "render"]
