"""Secrets never appear: not in a handler's error, a retry message, a host error, a refused
URL (which the host lowercases), the log, or `wasmgate invoke`'s output; in any letter case.

The secret sits in an app's secrets file, as in production; the failures come from real
components (tests/fixtures/handlers/secrets and caps).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from bindings.host.imports import LOG_MESSAGE_MAX_CHARS
from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.cli import main
from gateway.redaction import MASK, SecretRedactor, mask_secrets_processor, remember_secrets
from tests.fixtures.build import build_handler

SECRET = "S3cr3t-Value-42"


def _leaks(text: str) -> bool:
    return SECRET.lower() in text.lower()


def _app_manifest(tmp_path: Path, handler: str, extra: str = "") -> Path:
    (tmp_path / "secrets.toml").write_text(f'token = "{SECRET}"\n')
    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "secrets"
secrets-file = "secrets.toml"

[variables]
token = {{ secret = true }}

[component.{handler}]
source = "{build_handler(handler)}"
{extra}
""")
    return path


def _event(subject: str, data: bytes = b"") -> Event:
    return Event(id=new_event_id(), source="test", type="test", subject=subject, data=data)


# -- the redactor itself ---------------------------------------------------------------


def test_masking_ignores_letter_case() -> None:
    redact = SecretRedactor(["S3cr3t-Value"])
    assert redact("url http://s3cr3t-value.example and S3CR3T-VALUE") == \
        f"url http://{MASK}.example and {MASK}"


def test_the_log_processor_masks_every_field_nested_and_in_tracebacks() -> None:
    remember_secrets([SECRET])
    try:
        raise RuntimeError(f"failed with {SECRET.upper()}")
    except RuntimeError as exc:
        event = mask_secrets_processor(None, "error", {
            "event": f"token {SECRET}", "error": exc, "headers": [("auth", SECRET.lower())],
            "nested": {"deeper": (SECRET,)}, "count": 3, "exc_info": True,
        })
    assert not _leaks(json.dumps(event, default=str))
    assert event["event"] == f"token {MASK}"
    assert event["count"] == 3
    assert "RuntimeError: failed with ***" in event["exception"]


def test_a_cut_inside_a_secret_masks_its_head() -> None:
    redact = SecretRedactor(["S3cr3t-Value"])
    assert redact.cut("ab s3CR3t-value x", 8) == f"ab {MASK}"
    assert redact.cut("S3cr3t-Value and S3cr3t-Va", 100) == f"{MASK} and S3cr3t-Va"
    assert redact.cut("S3cr3t-Value and S3cr3t-Value", 26) == f"{MASK} and {MASK}"
    assert redact.cut("nothing here", 7) == "nothing"
    # Masked before the cut: no head is left behind whatever the secret's case or position.
    for cut in range(1, 30):
        assert not _leaks_head(SecretRedactor([SECRET]).cut("ab " + SECRET.upper() + "z", cut))
    assert redact.cut("ab s3CR3t-value x", 6) == f"ab {MASK}"
    assert redact.cut("x" * 10_000 + "S3cr3t-Value", 20) == "x" * 20


# -- through real components -----------------------------------------------------------


@pytest.mark.wasm
@pytest.mark.parametrize("mode", ["raise", "retry", "host"])
async def test_a_handler_failure_never_shows_the_secret(tmp_path: Path, mode: str) -> None:
    """An exception, a Retry (upper-cased secret) and a host error whose key is the secret:
    the outcome every trigger logs, dead-letters or replies with is masked, and so is every
    log line the CLI's log configuration writes."""
    app = App.load(_app_manifest(tmp_path, "secrets"))
    try:
        with structlog.testing.capture_logs(processors=[
                structlog.contextvars.merge_contextvars, mask_secrets_processor]) as logs:
            outcome = await app.dispatcher.dispatch("secrets", _event(f"/s/{mode}"))
    finally:
        await app.stop()
    assert outcome.response is None
    assert outcome.error is not None and MASK in outcome.error, outcome.error
    assert not _leaks(outcome.error)
    assert not _leaks(json.dumps(logs, default=str))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.wasm
async def test_the_handler_failed_log_of_the_http_trigger_is_masked(tmp_path: Path) -> None:
    path = _app_manifest(tmp_path, "secrets",
                         '[[trigger.http]]\nroute = "/s/..."\ncomponent = "secrets"\n')
    listen = f"127.0.0.1:{_free_port()}"
    app = App.load(path, listen=listen)
    await app.start()
    try:
        # No masking processor here: the error is masked where it is made, not only in logs.
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            async with httpx.AsyncClient() as client:
                for mode in ("raise", "retry", "host"):
                    reply = await client.get(f"http://{listen}/s/{mode}")
                    assert reply.status_code == 500
                    assert not _leaks(reply.text)
    finally:
        await app.stop()
    failed = [e for e in logs if e["event"] == "handler failed"]
    assert len(failed) == 3
    assert all(MASK in e["error"] and not _leaks(e["error"]) for e in failed), failed


@pytest.mark.wasm
async def test_a_refused_url_holding_the_secret_is_masked_though_lowercased(tmp_path: Path
                                                                            ) -> None:
    path = _app_manifest(tmp_path, "caps", 'allowed-outbound-hosts = ["https://example.com"]')
    app = App.load(path)
    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            url = f"https://{SECRET.upper()}.example.org/"
            response = await app.invoke("caps", _event("/caps", json.dumps(
                {"op": "http", "url": url}).encode()))
    finally:
        await app.stop()
    seen_by_guest: dict[str, Any] = json.loads(response.body)
    assert "may not call https://***.example.org" in seen_by_guest["err"]
    refusal = next(e for e in logs if e["event"] == "host call refused or failed")
    assert "may not call https://***.example.org" in refusal["error"]
    assert not _leaks(json.dumps(logs, default=str))


@pytest.mark.wasm
def test_invoke_output_never_shows_the_secret(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _app_manifest(tmp_path, "secrets")
    event = tmp_path / "event.json"
    for mode in ("raise", "retry", "host"):
        event.write_text(json.dumps({"id": "1", "source": "t", "type": "t",
                                     "subject": f"/s/{mode}"}))
        code = main(["invoke", "secrets", "--event", str(event), "--manifest", str(manifest)])
        captured = capsys.readouterr()
        assert code == 1
        # stderr holds both the error line and the log lines (the SDK logs the traceback).
        assert "error (returned-error): " in captured.err
        assert MASK in captured.err
        assert not _leaks(captured.out + captured.err), captured.err


# -- a secret cut in two by a size limit -------------------------------------------------

# A limit may fall inside the secret: what is left of it before the cut is still most of it.
SECRET_HEAD = SECRET[:9]


def _leaks_head(text: str) -> bool:
    return SECRET_HEAD.lower() in text.lower()


@pytest.mark.wasm
async def test_a_secret_cut_by_the_log_emit_limit_is_not_shown_in_part(tmp_path: Path) -> None:
    path = _app_manifest(tmp_path, "caps")
    app = App.load(path)
    message = "x" * (LOG_MESSAGE_MAX_CHARS - len(SECRET_HEAD)) + SECRET + " and more"
    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            await app.invoke("caps", _event("/caps", json.dumps(
                {"op": "log", "message": message}).encode()))
    finally:
        await app.stop()
    (logged,) = [e for e in logs if e.get("component") == "caps"
                 and e["event"].startswith("xxx")]
    assert "characters dropped" in logged["event"]
    assert not _leaks_head(json.dumps(logs, default=str)), logged["event"][-40:]


@pytest.mark.wasm
async def test_a_secret_cut_by_stderr_max_bytes_is_not_shown_in_part(tmp_path: Path) -> None:
    path = _app_manifest(tmp_path, "caps", "stderr-max-bytes = 1000")
    app = App.load(path)
    text = "y" * (1000 - len(SECRET_HEAD)) + SECRET + " and more\n"
    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await app.invoke("caps", _event("/caps", json.dumps(
                {"op": "stderr", "text": text}).encode()))
    finally:
        await app.stop()
    assert json.loads(response.body) == {"ok": True}
    assert any(e["event"] == "guest stderr truncated" for e in logs)
    (line,) = [e["line"] for e in logs if e["event"] == "guest stderr"]
    assert line.startswith("yyy")
    assert not _leaks_head(json.dumps(logs, default=str)), line[-40:]


# The error text of `err()` is cut at 1024 characters, a kv key over 1 KiB is shown by its
# first 64 and a value that cannot be incremented by its first 32. Each cut here falls 12
# characters into the secret: cut before masking, "S3cr3t-Value" was left in the text.


def _cut_after(limit: int) -> int:
    """Padding that puts the cut at ``limit`` 12 characters into the secret."""
    return limit - 12


# `Retry(text)` becomes `err(text)` as it is: the cut falls 12 characters into it.
LONG_ERROR = f"long-{_cut_after(1024)}"


@pytest.mark.wasm
async def test_a_secret_cut_by_the_error_text_limit_is_not_shown_in_part(tmp_path: Path
                                                                          ) -> None:
    mode = LONG_ERROR
    app = App.load(_app_manifest(tmp_path, "secrets"))
    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            outcome = await app.dispatcher.dispatch("secrets", _event(f"/s/{mode}"))
    finally:
        await app.stop()
    assert outcome.error is not None and "more characters cut" in outcome.error
    assert outcome.error.rstrip(")").endswith(" more characters cut") and MASK in outcome.error
    assert not _leaks_head(outcome.error), outcome.error[-80:]
    assert not _leaks_head(json.dumps(logs, default=str))


@pytest.mark.wasm
def test_invoke_shows_no_part_of_a_secret_the_error_text_limit_cut(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _app_manifest(tmp_path, "secrets")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"id": "1", "source": "t", "type": "t",
                                 "subject": f"/s/{LONG_ERROR}"}))
    assert main(["invoke", "secrets", "--event", str(event), "--manifest", str(manifest)]) == 1
    captured = capsys.readouterr()
    assert "more characters cut" in captured.err
    assert not _leaks_head(captured.out + captured.err), captured.err[-200:]


@pytest.mark.wasm
@pytest.mark.parametrize("case", ["long key", "increment"])
async def test_a_secret_cut_in_a_kv_error_is_not_shown_in_part(tmp_path: Path,
                                                               case: str) -> None:
    app = App.load(_app_manifest(tmp_path, "caps", 'key-value-stores = ["default"]'))

    async def call(msg: dict[str, Any]) -> dict[str, Any]:
        response = await app.invoke("caps", _event("/caps", json.dumps(msg).encode()))
        reply: dict[str, Any] = json.loads(response.body)
        return reply

    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            if case == "long key":
                key = "k" * _cut_after(64) + SECRET + "k" * 1100
                seen = await call({"op": "kv-get", "store": "default", "key": key})
                assert "bytes of UTF-8, over the limit of 1024 bytes" in seen["err"]
            else:
                value = "v" * _cut_after(32) + SECRET + " and more"
                assert await call({"op": "kv-set", "store": "default", "key": "n",
                                   "value": value}) == {"ok": True}
                seen = await call({"op": "kv-incr", "store": "default", "key": "n"})
                assert "is not an ASCII decimal integer" in seen["err"]
    finally:
        await app.stop()
    assert MASK in seen["err"], seen["err"]
    assert not _leaks_head(seen["err"]), seen["err"]
    refusals = [e for e in logs if e["event"] == "host call refused or failed"]
    assert refusals and not _leaks_head(json.dumps(logs, default=str)), refusals
