"""Webhook signature schemes against the providers' own published vectors, then the ways a
delivery must be refused (wrong secret, tampered body, stale timestamp, missing header) and
secret rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.webhooks.signatures import (
    MALFORMED_HEADER,
    MISMATCH,
    MISSING_HEADER,
    STALE_TIMESTAMP,
    Verifier,
)

# GitHub's docs, "Validating webhook deliveries" (docs.github.com/en/webhooks/using-webhooks/
# validating-webhook-deliveries), section "Testing the webhook payload validation".
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Standard Webhooks' reference library, libraries/go/webhook_test.go (TestSign) in
# github.com/standard-webhooks/standard-webhooks at b2fa7b8719fb75d326b591077f5d1b385cfcdfae.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# Stripe publishes its scheme (docs.stripe.com/webhooks#verify-manually: HMAC-SHA256 of
# "<t>.<body>", hex, in `v1=`) but no fixed vector. Secret and payload are stripe-python's
# own fixtures (tests/test_webhook.py: DUMMY_WEBHOOK_SECRET, DUMMY_WEBHOOK_PAYLOAD); the
# signature was computed with stripe-python 16.1.0's `WebhookSignature._compute_signature`,
# and `WebhookSignature.verify_header` accepted the header, with t = 1492774577 (the
# timestamp of Stripe's docs example header).
STRIPE_SECRET = "whsec_test_secret"
STRIPE_BODY = b'{\n  "id": "evt_test_webhook",\n  "object": "event"\n}'
STRIPE_T = 1492774577
STRIPE_V1 = "c2f890decbc5ede7c5060bb9a6d31e0626a4342bacb9aeae2adb1bcea72f9812"


def test_github_docs_vector_verifies() -> None:
    v = Verifier("github", (GITHUB_SECRET,))
    assert v.verify({"x-hub-signature-256": GITHUB_SIGNATURE}, GITHUB_BODY) is None


@pytest.mark.parametrize(("headers", "body", "secret", "reason"), [
    ({"x-hub-signature-256": GITHUB_SIGNATURE}, GITHUB_BODY, "wrong secret", MISMATCH),
    ({"x-hub-signature-256": GITHUB_SIGNATURE}, b"Hello, World?", GITHUB_SECRET, MISMATCH),
    ({}, GITHUB_BODY, GITHUB_SECRET, MISSING_HEADER),
    ({"x-hub-signature-256": GITHUB_SIGNATURE[7:]}, GITHUB_BODY, GITHUB_SECRET,
     MALFORMED_HEADER),
])
def test_github_refusals(headers: dict[str, str], body: bytes, secret: str,
                         reason: str) -> None:
    assert Verifier("github", (secret,)).verify(headers, body) == reason


def test_rotation_accepts_either_secret_and_refuses_a_retired_one() -> None:
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE}
    assert Verifier("github", ("new secret", GITHUB_SECRET)).verify(headers, GITHUB_BODY) \
        is None
    assert Verifier("github", (GITHUB_SECRET, "new secret")).verify(headers, GITHUB_BODY) \
        is None
    assert Verifier("github", ("new secret",)).verify(headers, GITHUB_BODY) == MISMATCH


def _sw(secrets: tuple[str, ...], now: float, tolerance: int = 300) -> Verifier:
    return Verifier("standard-webhooks", secrets, tolerance_s=tolerance, now=lambda: now)


def _sw_headers(**overrides: str) -> dict[str, str]:
    headers = {"webhook-id": SW_ID, "webhook-timestamp": str(SW_TIMESTAMP),
               "webhook-signature": SW_SIGNATURE}
    headers.update(overrides)
    return headers


def test_standard_webhooks_reference_vector_verifies() -> None:
    assert _sw((SW_SECRET,), SW_TIMESTAMP).verify(_sw_headers(), SW_BODY) is None
    # Several signatures in one header (the sender's own rotation): any valid one passes.
    several = _sw_headers(**{"webhook-signature":
                             f"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SW_SIGNATURE}"})
    assert _sw((SW_SECRET,), SW_TIMESTAMP).verify(several, SW_BODY) is None


def test_standard_webhooks_refusals() -> None:
    good = _sw((SW_SECRET,), SW_TIMESTAMP + 10)
    assert good.verify(_sw_headers(), SW_BODY + b" ") == MISMATCH
    assert good.verify(_sw_headers(**{"webhook-id": "msg_other"}), SW_BODY) == MISMATCH
    other = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()
    assert _sw((other,), SW_TIMESTAMP).verify(_sw_headers(), SW_BODY) == MISMATCH
    assert _sw((other, SW_SECRET), SW_TIMESTAMP).verify(_sw_headers(), SW_BODY) is None
    assert _sw((SW_SECRET,), SW_TIMESTAMP + 301).verify(_sw_headers(), SW_BODY) \
        == STALE_TIMESTAMP
    assert _sw((SW_SECRET,), SW_TIMESTAMP - 301).verify(_sw_headers(), SW_BODY) \
        == STALE_TIMESTAMP
    assert _sw((SW_SECRET,), SW_TIMESTAMP + 301, tolerance=600).verify(
        _sw_headers(), SW_BODY) is None
    missing = _sw_headers()
    del missing["webhook-timestamp"]
    assert good.verify(missing, SW_BODY) == MISSING_HEADER
    assert good.verify(_sw_headers(**{"webhook-signature": "v2,abc"}), SW_BODY) \
        == MALFORMED_HEADER


def _stripe(secrets: tuple[str, ...], now: float) -> Verifier:
    return Verifier("stripe", secrets, now=lambda: now)


def test_stripe_vector_verifies() -> None:
    header = {"stripe-signature": f"t={STRIPE_T},v1={STRIPE_V1}"}
    assert _stripe((STRIPE_SECRET,), STRIPE_T).verify(header, STRIPE_BODY) is None
    # Stripe sends a v0 (test mode) and several v1 while a secret is rolled.
    rolled = {"stripe-signature": f"t={STRIPE_T},v1={'0' * 64},v1={STRIPE_V1},v0=ab"}
    assert _stripe((STRIPE_SECRET,), STRIPE_T).verify(rolled, STRIPE_BODY) is None


def test_stripe_refusals() -> None:
    header = {"stripe-signature": f"t={STRIPE_T},v1={STRIPE_V1}"}
    assert _stripe(("whsec_other",), STRIPE_T).verify(header, STRIPE_BODY) == MISMATCH
    assert _stripe((STRIPE_SECRET,), STRIPE_T).verify(header, STRIPE_BODY + b"x") == MISMATCH
    assert _stripe((STRIPE_SECRET,), STRIPE_T + 301).verify(header, STRIPE_BODY) \
        == STALE_TIMESTAMP
    assert _stripe((STRIPE_SECRET,), STRIPE_T).verify({}, STRIPE_BODY) == MISSING_HEADER
    only_v0 = {"stripe-signature": f"t={STRIPE_T},v0={STRIPE_V1}"}
    assert _stripe((STRIPE_SECRET,), STRIPE_T).verify(only_v0, STRIPE_BODY) \
        == MALFORMED_HEADER
    # The timestamp is signed: moving it into the window breaks the signature.
    moved = {"stripe-signature": f"t={STRIPE_T + 1000},v1={STRIPE_V1}"}
    assert _stripe((STRIPE_SECRET,), STRIPE_T + 1000).verify(moved, STRIPE_BODY) == MISMATCH


def test_generic_hmac_hex_and_base64() -> None:
    # The GitHub vector again, through the generic scheme's knobs.
    hex_route = Verifier("hmac-sha256", (GITHUB_SECRET,), header="x-signature",
                         prefix="sha256=", encoding="hex")
    assert hex_route.verify({"x-signature": GITHUB_SIGNATURE}, GITHUB_BODY) is None
    assert hex_route.verify({"x-signature": GITHUB_SIGNATURE}, b"tampered") == MISMATCH
    assert hex_route.verify({}, GITHUB_BODY) == MISSING_HEADER
    digest = hmac.new(GITHUB_SECRET.encode(), GITHUB_BODY, hashlib.sha256).digest()
    b64_route = Verifier("hmac-sha256", (GITHUB_SECRET,), header="x-sig", encoding="base64")
    assert bytes.fromhex(GITHUB_SIGNATURE[7:]) == digest  # same bytes, other encoding
    assert b64_route.verify({"x-sig": base64.b64encode(digest).decode()}, GITHUB_BODY) is None
    assert b64_route.verify({"x-sig": "not base64!"}, GITHUB_BODY) == MALFORMED_HEADER
    assert Verifier("hmac-sha256", ("other",), header="x-sig", encoding="base64").verify(
        {"x-sig": base64.b64encode(digest).decode()}, GITHUB_BODY) == MISMATCH


# Header values reach the verifier decoded as latin-1, so any byte can be in them: a
# timestamp of superscript digits ("\xb9" isdigit() but int() refuses it), one too long for
# a float or for int(), a base64 signature with non-ASCII text. Each is a refusal (401),
# never an exception (a 500 and a traceback in the log).
_NOW = 1_700_000_000.5  # a float, as time.time() is
_ODD_TIMESTAMPS = ["\xb9\xb2\xb3", "9" * 400, "9" * 5000, " 1700000000", "-1700000000",
                   "1700000000.5", ""]


@pytest.mark.parametrize("timestamp", _ODD_TIMESTAMPS)
def test_odd_timestamps_are_refused_not_raised(timestamp: str) -> None:
    sw = _sw((SW_SECRET,), _NOW).verify(
        _sw_headers(**{"webhook-timestamp": timestamp}), SW_BODY)
    stripe = _stripe((STRIPE_SECRET,), _NOW).verify(
        {"stripe-signature": f"t={timestamp},v1={STRIPE_V1}"}, STRIPE_BODY)
    assert sw in (MALFORMED_HEADER, STALE_TIMESTAMP)
    assert stripe in (MALFORMED_HEADER, STALE_TIMESTAMP)


def test_a_far_future_timestamp_is_stale() -> None:
    future = str(int(_NOW) + 10**10)  # the year 2340
    assert _sw((SW_SECRET,), _NOW).verify(_sw_headers(**{"webhook-timestamp": future}),
                                          SW_BODY) == STALE_TIMESTAMP


def test_non_ascii_signatures_are_malformed_not_raised() -> None:
    odd = "\xe9\xe9\xe9="
    assert _sw((SW_SECRET,), SW_TIMESTAMP).verify(
        _sw_headers(**{"webhook-signature": f"v1,{odd}"}), SW_BODY) == MALFORMED_HEADER
    b64_route = Verifier("hmac-sha256", (GITHUB_SECRET,), header="x-sig", encoding="base64")
    assert b64_route.verify({"x-sig": odd}, GITHUB_BODY) == MALFORMED_HEADER
    hex_route = Verifier("hmac-sha256", (GITHUB_SECRET,), header="x-sig", prefix="sha256=")
    assert hex_route.verify({"x-sig": "sha256=" + odd}, GITHUB_BODY) == MISMATCH
    assert Verifier("github", (GITHUB_SECRET,)).verify(
        {"x-hub-signature-256": "sha256=" + odd * 4000}, GITHUB_BODY) == MISMATCH


def test_a_non_ascii_webhook_id_is_signed_as_the_bytes_sent() -> None:
    # The server decodes header bytes as latin-1; the sender signed the bytes themselves.
    raw_id = "msg_\u00e9t\u00e9".encode()  # UTF-8 on the wire
    timestamp = str(SW_TIMESTAMP)
    key = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
    signed = raw_id + f".{timestamp}.".encode() + SW_BODY
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    headers = _sw_headers(**{"webhook-id": raw_id.decode("latin-1"),
                             "webhook-signature": f"v1,{signature}"})
    assert _sw((SW_SECRET,), SW_TIMESTAMP).verify(headers, SW_BODY) is None
