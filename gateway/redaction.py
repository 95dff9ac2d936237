"""Keeping secrets out of logs and error messages.

* :func:`redact_url`: a broker or database URL without its password.
* :class:`SecretRedactor`: replaces the values of variables marked ``secret = true`` in any
  text a guest logs or an error carries, so a handler that prints its token by mistake
  does not leak it into the gateway's log stream. Matching ignores case: a host that
  lowercases a URL (or a guest that upper-cases a token) must not unmask it.
* The process-wide redactor: :func:`remember_secrets` feeds it (the App does, when it
  loads a manifest), :func:`redact_secrets` masks one text with it, :func:`cut_masked`
  masks one and then shortens it, and
  :func:`mask_secrets_processor` is the structlog processor that masks every log event, so
  no log call site has to remember to redact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import structlog

MASK = "***"
# Very short values would mask innocent text everywhere ("1", "on"); they are not masked.
_MIN_SECRET_LENGTH = 4


def redact_url(url: str) -> str:
    """``url`` without a password (``amqp://guest:***@host``; ``guest:***@host`` when the
    scheme is missing, as in a mistyped URL)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    prefix = f"{scheme}{sep}"
    return f"{prefix}{user}:{MASK}@{host}" if ":" in userinfo else f"{prefix}{user}@{host}"


class SecretRedactor:
    """Masks every occurrence of known secret values in a text, ignoring case."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        # The pattern and the longest secret's length, swapped in together.
        self._pattern: tuple[re.Pattern[str], int] | None = None
        self.add(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        """The values masked (those long enough to mask)."""
        return self._secrets

    def add(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` too, from now on."""
        merged = self._secrets | {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        if merged == self._secrets:
            return
        # Longest first, so a secret that contains another is masked whole. One pattern (built
        # once, swapped in whole so concurrent readers see the old or the new one) keeps a
        # text with many secrets a single scan.
        ordered = sorted(merged, key=len, reverse=True)
        self._pattern = (re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE),
                         len(ordered[0]))
        self._secrets = merged

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        found = self._pattern
        return text if found is None else found[0].sub(MASK, text)

    def cut(self, text: str, limit: int) -> str:
        """``text``'s first ``limit`` characters, masked before the cut: a secret the cut
        falls inside is masked whole (the text may then end in a mask).

        Cutting first would leave the secret's head (19 of its 20 characters, say) where
        no whole-value match sees it. Only the first ``limit`` characters plus the longest
        secret are scanned, so a huge text costs no more than a short one.
        """
        if len(text) <= limit:
            return self(text)
        found = self._pattern
        if found is None:
            return text[:limit]
        pattern, longest = found
        # Any secret that starts before the cut ends inside this window.
        window = text[:limit + longest - 1]
        parts: list[str] = []
        shown = 0  # how much of `window` is in `parts`
        for match in pattern.finditer(window):
            if match.start() >= limit:
                break
            parts += (window[shown:match.start()], MASK)
            shown = match.end()
        parts.append(window[shown:max(shown, limit)])
        return "".join(parts)

    def mask_cut_tail(self, text: str) -> str:
        """``text`` (masked already, then cut short by a size limit) with a trailing head of
        any secret masked. Only for cut text: an innocent last character that happens to
        start a secret is masked too."""
        longest = 0
        for secret in self._secrets:
            for k in range(min(len(secret) - 1, len(text)), longest, -1):
                if text[-k:].lower() == secret[:k].lower():
                    longest = k
                    break
        return text if longest == 0 else text[:-longest] + MASK


_PROCESS_REDACTOR = SecretRedactor()


def remember_secrets(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every log event and CLI error of this process from now on."""
    _PROCESS_REDACTOR.add(secrets)


def redact_secrets(text: str) -> str:
    """``text`` with every secret this process knows of masked."""
    return _PROCESS_REDACTOR(text)


def cut_masked(text: str, limit: int) -> str:
    """``text``'s first ``limit`` characters with every secret this process knows of
    masked before the cut (:meth:`SecretRedactor.cut`): for any text a size limit shortens
    that may hold a secret (a kv key, a value, a guest's error)."""
    return _PROCESS_REDACTOR.cut(text, limit)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _PROCESS_REDACTOR(value)
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_masked(v) for v in value)
    # Exceptions, paths and other objects are rendered with str() by the renderers; mask
    # that text, and keep the object itself when there is nothing to mask.
    text = str(value)
    masked = _PROCESS_REDACTOR(text)
    return value if masked == text else masked


def mask_secrets_processor(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog processor: every secret the process knows of masked in every field.

    Place it after ``merge_contextvars`` and before the renderer. A traceback in
    ``exc_info`` is rendered to text here first, as the secret may sit in its message.
    """
    if not _PROCESS_REDACTOR:
        return event_dict
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    return {key: _masked(value) for key, value in event_dict.items()}


__all__ = [
    "MASK",
    "SecretRedactor",
    "cut_masked",
    "mask_secrets_processor",
    "redact_secrets",
    "redact_url",
    "remember_secrets",
]
