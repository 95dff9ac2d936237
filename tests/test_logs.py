"""The gateway's log takes the libraries' records too (uvicorn, aiokafka, aio-pika, nats log
through the standard ``logging`` module): one JSON record per line, secrets masked, instead
of a bare text line between the JSON ones."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.logs import configure_logging
from gateway.redaction import remember_secrets
from tests.fixtures.build import build_handler


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """The log configured as off a terminal, written to a buffer the test reads."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()


def test_a_library_warning_is_a_json_record_with_its_logger_and_no_secret(
        configured: io.StringIO) -> None:
    remember_secrets(["s3cr3t-library-token"])
    logging.getLogger("uvicorn.error").error(
        "ASGI callable returned without completing response. (token s3cr3t-library-token)")
    logging.getLogger("aiokafka").info("per-connection chatter")  # below WARNING: dropped
    structlog.get_logger("wasmgate").info("gateway record")
    lines = configured.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON record
    library, own = records
    assert library["logger"] == "uvicorn.error" and library["level"] == "error"
    assert library["event"].startswith("ASGI callable returned without completing response")
    assert "s3cr3t-library-token" not in lines[0]
    assert own["event"] == "gateway record"


def test_a_library_exception_is_rendered_inside_the_record(
        configured: io.StringIO) -> None:
    try:
        raise ValueError("broken frame")
    except ValueError:
        logging.getLogger("aio_pika").exception("channel closed")
    (line,) = configured.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "channel closed"
    assert "ValueError: broken frame" in record["exception"]


# -- what a guest can make the gateway log, per call ----------------------------------------

BUDGET = 20_000


def _guest_app(tmp_path: Path) -> App:
    manifest = tmp_path / "wasmgate.toml"
    manifest.write_text(f"""
[application]
name = "flood"
[component.caps]
source = "{build_handler('caps')}"
log-emit-max-bytes = {BUDGET}
# Far more than the flood needs, also on a busy machine: the test is about output.
timeout-ms = 60000
allowed-outbound-hosts = ["https://allowed.example"]
""")
    return App.load(manifest)


# Each host call refused, with the guest's text (a store, a destination, a URL) in the
# refusal: a guest refusing a 1 MB store name in a loop wrote 15 MB to the log in a call.
FLOODS = {
    "kv store": {"op": "kv-get", "store": "s" * 10_000, "key": "k"},
    "publish destination": {"op": "publish", "broker": "b", "destination": "d" * 10_000,
                            "body": ""},
    "outbound url": {"op": "http", "url": "https://" + "u" * 10_000 + ".example/"},
    "short refusals": {"op": "kv-get", "store": "", "key": "k"},
    "empty log.emit": {"op": "log", "message": ""},
    # 1000 times 8 one-character lines: 16000 bytes, under `stderr-max-bytes` (16384).
    "stderr lines": {"op": "stderr", "text": "a\n" * 8},
}
# How many records each flood asks for.
CALLS = 1000
ASKED = {**dict.fromkeys(FLOODS, CALLS), "stderr lines": 8 * CALLS}
SUMMARIES = ("guest log output truncated", "guest stderr truncated")


@pytest.mark.wasm
@pytest.mark.parametrize("flood", FLOODS)
async def test_a_guest_s_log_output_is_bounded_per_call_whatever_it_does(
        configured: io.StringIO, tmp_path: Path, flood: str) -> None:
    app = _guest_app(tmp_path)
    calls = CALLS
    try:
        for _ in range(2):  # the next call has a fresh budget
            start = configured.tell()
            response = await app.invoke("caps", Event(
                id=new_event_id(), source="t", type="t",
                data=json.dumps({**FLOODS[flood], "times": calls, "keep-going": True}).encode()))
            errors = 0 if flood in ("empty log.emit", "stderr lines") else calls
            assert json.loads(response.body) == {"ok": {"errors": errors}}
            written = configured.getvalue()[start:]
            records = [json.loads(line) for line in written.splitlines()]
            # The budget, plus the records that say what was dropped.
            assert len(written.encode()) <= BUDGET + 1024, (len(written), len(records))
            (summary,) = [r for r in records if r["event"] == "guest log output truncated"]
            kept = len([r for r in records if r["event"] not in SUMMARIES])
            assert kept > 0
            assert summary["dropped_records"] == ASKED[flood] - kept
            assert "log-emit-max-bytes" in summary["hint"]
    finally:
        await app.stop()
