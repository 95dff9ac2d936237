"""The gateway's log: one structured record per line on stderr, JSON off a terminal and
the console renderer on one, with secrets masked in every field.

Libraries log through the standard ``logging`` module (uvicorn's "ASGI callable returned
without completing response.", aiokafka, aio-pika, nats): their records go through the
same processors, so the log stays one record per line in one format, masked alike.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from gateway.redaction import mask_secrets_processor

# Control characters (tab aside) as visible escapes: \n, \r, \x1b ...
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
                    if c != 0x09} | {0x0A: "\\n", 0x0D: "\\r"}
# Library records below this level are dropped: their INFO lines are per-connection chatter.
_LIBRARY_LEVEL = logging.WARNING


def _escape_event_controls(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog processor for the console renderer, which prints the event text as it is
    (other fields it shows with repr): a guest's ``log.emit`` message is that text, and a
    line break or terminal escape in it would print a line the gateway never wrote or
    rewrite the operator's terminal."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = event.translate(_CONTROL_ESCAPES)
    return event_dict


def configure_logging(stream: TextIO | None = None) -> None:
    """Send the gateway's records and the libraries' (WARNING and up) to ``stream``
    (stderr by default)."""
    stream = stream or sys.stderr
    console = stream.isatty()
    renderer: Any = (structlog.dev.ConsoleRenderer() if console
                     else structlog.processors.JSONRenderer())
    shared: list[Any] = [
        structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
        mask_secrets_processor, *([_escape_event_controls] if console else []),
    ]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
                        logger_factory=structlog.PrintLoggerFactory(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([] if console else [structlog.processors.format_exc_info]), renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LIBRARY_LEVEL)
    # uvicorn configures its own loggers only from a log config, which the gateway does not
    # give it (log_config=None): they propagate to the handler above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()


__all__ = ["configure_logging"]
