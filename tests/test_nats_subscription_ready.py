"""The NATS core trigger reports ready only once the broker holds its subscription, so the
first message published after start is delivered (core NATS keeps nothing for a subject
nobody is subscribed to yet).

nats-py's ``flush()`` writes its PING ahead of a SUB still in the client's buffer; when the
broker saw the PING first, the trigger used to report ready too early and, about once in
160 runs on a loaded machine, the first message was lost. A relay between the trigger and
the shared broker (4222) holds the trigger's SUB back and lets everything before it
through, which makes that ordering happen every time. The hold (1.5 s) outlasts the
broker's connect timeout (1 s), so the trigger's first check times out and it checks again
rather than reporting ready.
"""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from tests.contract.harness import message, unique, wait_until
from tests.holding_relay import HoldingRelay
from tests.test_nats_broker import count, running, write_app

pytestmark = pytest.mark.wasm


async def test_the_first_message_after_ready_is_delivered_when_the_sub_arrives_late(
        tmp_path: Path) -> None:
    subject = f"ready.{unique('sub')}"
    relay = HoldingRelay(("127.0.0.1", 4222), marker=f"SUB {subject}.>".encode(), hold_s=1.5)
    port = await relay.start()
    publisher = await nats.connect("nats://127.0.0.1:4222")
    try:
        manifest = write_app(tmp_path, f"nats://127.0.0.1:{port}", "nats",
                             f'subject = "{subject}.>"\n')
        async with running(manifest):
            assert relay.held, "the relay never saw the trigger's SUB: the test proves nothing"
            await publisher.publish(f"{subject}.first", message("first"))
            await publisher.flush()
            await wait_until(lambda: count(tmp_path, "done:first") == 1, timeout=10,
                             what="the first message published after ready")
    finally:
        await publisher.close()
        await relay.close()
