"""Webhook signature schemes: each checks one request's headers and raw body against the
route's secrets and returns None (genuine) or a short reason (refused).

Every comparison is :func:`hmac.compare_digest`, and every secret is tried (rotation: the
old and the new secret are both valid while the provider switches), so the time a refusal
takes says nothing about how close a guess was. Reasons are fixed words, safe to log and to
use as a metric label: they never carry a secret, a signature or the body.

Schemes:

* ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
* ``stripe``: ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>...]`` over ``"<t>.<body>"``;
  the secret (``whsec_...``) is the key as written.
* ``standard-webhooks`` (Svix and others): ``webhook-signature: v1,<base64> [v1,<base64>]``
  over ``"<webhook-id>.<webhook-timestamp>.<body>"``; the key is the base64 after ``whsec_``.
* ``hmac-sha256``: a header of the route's choosing, an optional prefix, hex or base64.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Literal

Scheme = Literal["github", "stripe", "standard-webhooks", "hmac-sha256"]
SCHEMES: tuple[Scheme, ...] = ("github", "stripe", "standard-webhooks", "hmac-sha256")

# Reasons, as logged and as the `reason` label of wasmgate_webhook_verification_failures_total.
MISSING_HEADER = "missing-header"
MALFORMED_HEADER = "malformed-header"
STALE_TIMESTAMP = "stale-timestamp"
MISMATCH = "signature-mismatch"

DEFAULT_TOLERANCE_S = 300


@dataclasses.dataclass(frozen=True)
class Verifier:
    """One route's signature check. ``headers`` are lower-cased names to values."""

    scheme: Scheme
    secrets: tuple[str, ...]
    tolerance_s: int = DEFAULT_TOLERANCE_S
    header: str = ""  # hmac-sha256 only: the header carrying the signature
    prefix: str = ""  # hmac-sha256 only: text before the signature, e.g. "sha256="
    encoding: Literal["hex", "base64"] = "hex"  # hmac-sha256 only
    now: Callable[[], float] = time.time  # injected by tests

    def verify(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """None if ``body`` carries a valid signature for one of the secrets, else why not."""
        if self.scheme == "github":
            return self._hex_header("x-hub-signature-256", "sha256=", headers, body)
        if self.scheme == "hmac-sha256":
            if self.encoding == "hex":
                return self._hex_header(self.header, self.prefix, headers, body)
            return self._base64_header(headers, body)
        if self.scheme == "stripe":
            return self._stripe(headers, body)
        return self._standard_webhooks(headers, body)

    # -- schemes ----------------------------------------------------------------------------

    def _hex_header(self, name: str, prefix: str, headers: Mapping[str, str],
                    body: bytes) -> str | None:
        value = headers.get(name)
        if value is None:
            return MISSING_HEADER
        if not value.startswith(prefix):
            return MALFORMED_HEADER
        given = value[len(prefix):].strip().lower().encode("ascii", "replace")
        return _first_match([given], [_hmac_hex(s.encode(), body) for s in self.secrets])

    def _base64_header(self, headers: Mapping[str, str], body: bytes) -> str | None:
        value = headers.get(self.header)
        if value is None:
            return MISSING_HEADER
        if not value.startswith(self.prefix):
            return MALFORMED_HEADER
        given = _b64decode(value[len(self.prefix):].strip())
        if given is None:
            return MALFORMED_HEADER
        return _first_match([given], [_hmac(s.encode(), body) for s in self.secrets])

    def _stripe(self, headers: Mapping[str, str], body: bytes) -> str | None:
        value = headers.get("stripe-signature")
        if value is None:
            return MISSING_HEADER
        timestamp, signatures = "", []
        for item in value.split(","):
            key, _, item_value = item.strip().partition("=")
            if key == "t":
                timestamp = item_value
            elif key == "v1":  # v0 is Stripe's test-mode legacy scheme: never accepted
                signatures.append(item_value.lower().encode("ascii", "replace"))
        seconds = _unix_seconds(timestamp)
        if seconds is None or not signatures:
            return MALFORMED_HEADER
        if abs(self.now() - seconds) > self.tolerance_s:
            return STALE_TIMESTAMP
        signed = timestamp.encode() + b"." + body
        return _first_match(signatures, [_hmac_hex(s.encode(), signed) for s in self.secrets])

    def _standard_webhooks(self, headers: Mapping[str, str], body: bytes) -> str | None:
        message_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        value = headers.get("webhook-signature")
        if message_id is None or timestamp is None or value is None:
            return MISSING_HEADER
        seconds = _unix_seconds(timestamp)
        if seconds is None:
            return MALFORMED_HEADER
        signatures = []
        for item in value.split():
            version, _, signature = item.partition(",")
            if version == "v1" and (decoded := _b64decode(signature)) is not None:
                signatures.append(decoded)
        if not signatures:
            return MALFORMED_HEADER
        if abs(self.now() - seconds) > self.tolerance_s:
            return STALE_TIMESTAMP
        # latin-1 gives back the header's bytes as sent (the server decoded them so): the
        # sender signed those bytes, whatever their encoding.
        signed = f"{message_id}.{timestamp}.".encode("latin-1") + body
        keys = [standard_webhooks_key(s) for s in self.secrets]
        return _first_match(signatures, [_hmac(k, signed) for k in keys])


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after ``whsec_``. Raises
    ValueError for text that is not base64 (the manifest check reports it)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("a standard-webhooks secret is `whsec_` followed by base64") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _hmac_hex(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode()


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text (a plain ValueError)
        return None


# Unix seconds have 10 digits until the year 2286; more than this is no timestamp, and
# would overflow the float it is compared with (past ~308 digits) or int() (past 4300).
_MAX_TIMESTAMP_DIGITS = 12


def _unix_seconds(text: str) -> int | None:
    """A header's timestamp: ASCII digits only (str.isdigit() also takes "\xb9", which
    int() refuses), or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_TIMESTAMP_DIGITS:
        return None
    return int(text)


def _first_match(given: list[bytes], expected: list[bytes]) -> str | None:
    # Every pair is compared (no early exit), so timing does not tell which secret matched.
    matched = False
    for signature in given:
        for candidate in expected:
            matched |= hmac.compare_digest(signature, candidate)
    return None if matched else MISMATCH


__all__ = ["DEFAULT_TOLERANCE_S", "MALFORMED_HEADER", "MISMATCH", "MISSING_HEADER",
           "SCHEMES", "STALE_TIMESTAMP", "Scheme", "Verifier", "standard_webhooks_key"]
