"""The gateway's log takes the libraries' records too (uvicorn, aiokafka, aio-pika, nats log
through the standard ``logging`` module): one JSON record per line, secrets masked, instead
of a bare text line between the JSON ones."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.logs import configure_logging
from gateway.redaction import remember_secrets


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
