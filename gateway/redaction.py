"""Keeping secrets out of logs and error messages.

* :func:`redact_url`: a broker or database URL without its password.
* :class:`SecretRedactor`: replaces the values of variables marked ``secret = true`` in any
  text a guest logs or an error carries, so a handler that prints its token by mistake
  does not leak it into the gateway's log stream.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
# Very short values would mask innocent text everywhere ("1", "on"); they are not masked.
_MIN_SECRET_LENGTH = 4


def redact_url(url: str) -> str:
    """``url`` without a password (``amqp://guest:***@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}" if ":" in userinfo else f"{scheme}://{user}@{host}"


class SecretRedactor:
    """Masks every occurrence of known secret values in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH},
                               key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
