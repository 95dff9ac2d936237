"""Run one SQL host call through a real component and report the process's peak memory.

``python -m tests.sql_memory_probe <manifest> <op> <statement>`` loads the app, serves a
warm-up event (instance, connection), resets the kernel's peak-RSS mark, serves the event
under test and prints JSON: ``grew_kb`` (peak RSS during the event minus RSS before it)
and ``body`` (what the guest answered, text values replaced by their lengths). A
subprocess, so no other test's memory counts.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from bindings.types import Event, new_event_id
from gateway.app import App


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert match is not None, field
    return int(match.group(1))


async def _invoke(app: App, op: str, statement: str) -> object:
    data = json.dumps({"op": op, "db": "db", "sql": statement}).encode()
    response = await app.invoke("caps", Event(id=new_event_id(), source="probe", type="probe",
                                              data=data))
    if response.status != 200:
        return response.status
    body = json.loads(response.body)
    if isinstance(body.get("ok"), dict):  # text values by their length: the report stays small
        body["ok"]["rows"] = [[len(v) if isinstance(v, str) else v for v in row]
                              for row in body["ok"]["rows"]]
    return body


async def main(manifest: str, op: str, statement: str) -> None:
    app = App.load(Path(manifest))
    try:
        await _invoke(app, "sql-query", "SELECT 1")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # peak RSS := current RSS
        before = _status_kb("VmRSS")
        body = await _invoke(app, op, statement)
        grew = _status_kb("VmHWM") - before
    finally:
        await app.stop()
    print(json.dumps({"grew_kb": grew, "body": body}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
