"""`wasmgate dead-letters` as a user meets its errors, and its pure helpers."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.dead_letters.cli import _Progress, matches, parse_where, preview
from gateway.dead_letters.model import DeadLetter
from gateway.errors import ConfigError
from triggers.delivery import DL_ORIGIN, DL_REASON, DL_STATUS, DL_SUBJECT

# The shared RabbitMQ as broker `r`, for a manifest's trigger tables.
AMQP_BROKER = """
[brokers.r]
kind = "amqp"
url = "amqp://guest:guest@127.0.0.1:5672/"
"""


def _manifest(tmp_path: Path, triggers: str, url: str = "redis://127.0.0.1:6379/0") -> Path:
    """A manifest with Redis as broker `b`, an unreachable Kafka as `k`, component `work`
    and ``triggers`` (tables, or brokers of their own)."""
    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "dl"

[brokers.b]
kind = "redis"
url = "{url}"
connect-timeout-ms = 500

[brokers.k]
kind = "kafka"
url = "kafka://127.0.0.1:9"

[component.work]
source = "work.wasm"
{triggers}
""")
    return path


_TWO = """
[[trigger.redis-streams]]
component = "work"
broker = "b"
stream = "orders"
dead-letter = "orders.dead"

[[trigger.kafka]]
component = "work"
broker = "k"
topics = ["t"]
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["dead-letters", *argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_unknown_trigger_lists_the_known_ones(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, _TWO)
    code, err = _run(capsys, "list", "nats-jetstream[0]", str(manifest))
    assert code == 2
    assert "names no broker trigger" in err
    assert "redis-streams[0] (component work)" in err and "kafka[0]" in err
    assert "Traceback" not in err


def test_a_trigger_without_a_dead_letter_destination_says_how_to_get_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, _TWO)
    code, err = _run(capsys, "list", "kafka", str(manifest))
    assert code == 2
    assert "trigger.kafka[0].dead-letter" in err
    assert "no dead-letter destination" in err and "Set dead-letter" in err


def test_an_amqp_trigger_needs_a_dead_letter_queue_to_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, AMQP_BROKER + """
[[trigger.amqp]]
component = "work"
broker = "r"
queue = "jobs"
dead-letter = "jobs.dlx"
""")
    code, err = _run(capsys, "list", "--manifest", str(manifest))
    assert code == 2
    assert "trigger.amqp[0].dead-letter-queue" in err


def test_an_unreachable_broker_names_its_address_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, _TWO, url="redis://:hunter2@127.0.0.1:9/0")
    code, err = _run(capsys, "list", "redis-streams[0]", str(manifest))
    assert code == 2
    assert "cannot reach broker `b` at redis://" in err
    assert "127.0.0.1:9" in err and "orders.dead" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


def test_replay_needs_exactly_one_selection(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, _TWO)
    code, err = _run(capsys, "replay", "--trigger", "redis-streams[0]", "--manifest",
                     str(manifest))
    assert code == 2
    assert "exactly one of: an id, --all, or --where" in err


def test_where_matches_reason_as_a_substring_and_the_rest_exactly() -> None:
    letter = DeadLetter(id="1", body=b"", headers=[(DL_REASON, "handler answered status 503"),
                                                   (DL_STATUS, "503")])
    assert matches(letter, parse_where(["reason=status 503"]))
    assert matches(letter, parse_where(["status=503", "reason=answered"]))
    assert not matches(letter, parse_where(["status=50"]))
    with pytest.raises(ConfigError, match="KEY one of reason, error-kind"):
        parse_where(["colour=red"])


def test_preview_is_text_when_printable_else_hex() -> None:
    assert preview(b'{"a": 1}\n') == ('{"a": 1}\n', "text")
    assert preview(b"\x00\xff\x10") == ("00 ff 10", "hex")
    long_text = "é" * 2000  # cut inside a character at the preview's end: still text
    text, kind = preview(long_text.encode())
    assert kind == "text" and set(text) == {"é"}


def test_origin_falls_back_to_the_subject_of_older_dead_letters() -> None:
    new = DeadLetter(id="1", body=b"", headers=[(DL_ORIGIN + "topic", "t"),
                                                (DL_ORIGIN + "offset", "7"),
                                                (DL_SUBJECT, "t")])
    old = DeadLetter(id="2", body=b"", headers=[(DL_SUBJECT, "orders")])
    assert new.origin == {"topic": "t", "offset": "7"}
    assert old.origin == {"subject": "orders"}
    assert new.original_headers() == []


def test_a_dead_letter_queue_not_declared_yet_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"wg-missing-{uuid.uuid4().hex[:8]}"
    manifest = _manifest(tmp_path, AMQP_BROKER + f"""
[[trigger.amqp]]
component = "work"
broker = "r"
queue = "jobs"
dead-letter = "jobs.dlx"
dead-letter-queue = "{missing}"
""")
    code, err = _run(capsys, "list", "amqp", str(manifest))
    assert code == 2
    assert f"amqp queue '{missing}' on broker `r` does not exist" in err
    assert "Traceback" not in err


def test_a_bulk_replay_draws_a_bar_on_a_terminal_and_lines_elsewhere(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    plain = _Progress(2)
    plain.step("replayed 1 to t", out)
    plain.step("replayed 2 to t", out)
    plain.end()
    assert out.getvalue() == "replayed 1 to t\nreplayed 2 to t\n"

    monkeypatch.setattr("gateway.dead_letters.cli.is_interactive", lambda *_: True)
    out = io.StringIO()
    live = _Progress(4)
    for i in range(4):
        live.step(f"replayed {i}", out)
    live.end()
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert "1/4 replayed" in err and f"[{'#' * 30}] 4/4 replayed" in err


def test_an_unreachable_nats_fails_at_once_without_tracebacks(tmp_path: Path) -> None:
    # nats-py reads max_reconnect_attempts=0 as "no limit": list retried forever, logging
    # a traceback every 2 s.
    manifest = _manifest(tmp_path, """
[brokers.n]
kind = "nats"
url = "nats://ops:hunter2@127.0.0.1:9"
connect-timeout-ms = 1000

[[trigger.nats-jetstream]]
component = "work"
broker = "n"
stream = "S"
consumer = "c"
dead-letter = "s.dead"
""")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "dead-letters", "list",
                           "--manifest", str(manifest)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).parent.parent)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert time.monotonic() - started < 15
    assert "cannot reach broker `n` at nats://ops:***@127.0.0.1:9" in output
    assert "Connect call failed" in output  # the cause, not only "no servers available"
    assert "hunter2" not in output
    assert "Traceback" not in output
