"""The executor: isolated wasmtime instances of one component, bounded and off the loop.

The call itself is native (native/src/pool.rs): the event is copied out of its Python
object once, then lowered, run and lifted on one of the pool's own threads with the GIL
released; bytes cross as a memcpy. A finished call comes back through the loop's
:class:`_LoopCompletions`: one eventfd wake-up drains every call finished since the last.

Admission stays here, where the event loop is: a semaphore of ``max-instances`` slots
taken *before* instantiation. When every slot is busy the caller waits (up to
``admission-timeout-ms``); it is never refused at once.

Isolation ``fresh`` gives every event a new instance (``spare-instances`` keeps some ready);
``pooled`` reuses warm instances and retires one after ``max-uses`` calls, after any trap,
timeout or error, and when its memory nears ``memory-mb``, so a failed call never leaks
state into the next event.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import itertools
import re
import time
import weakref
from typing import Any

import msgspec
import structlog

from bindings.host.imports import LOG_BUDGET, HostImports, LogBudget
from bindings.types import Event, Response
from gateway import _native, wasi_http
from gateway.deadline import deadline_after, reset_deadline, set_deadline
from gateway.engine import LoadedComponent, WasmEngine
from gateway.errors import (
    AdmissionTimeout,
    ComponentContractError,
    ComponentError,
    HandlerError,
    HandlerReturnedError,
    HandlerTimeout,
    HandlerTrap,
    InvalidResponse,
)
from gateway.manifest import ComponentSpec
from gateway.redaction import SecretRedactor, redact_secrets
from gateway.response_stream import STREAMED_RESPONSE, ResponseSlot, StreamedResponse

log = structlog.get_logger("wasmgate.executor")
guest_log = structlog.get_logger("wasmgate.guest")

# Host calls end this much before the event's deadline at most (a tenth of it when less).
HOST_CALL_RESERVE_MAX_S = 0.5

# Outcome kinds of a native call (native/src/event.rs).
OK, RETURNED, TRAP, TIMEOUT, UNAVAILABLE, INVALID, HEAD = range(7)


# componentize-py's runtime reports an uncaught exception by panicking after the traceback.
_RUNTIME_PANIC = re.compile(r"^thread '.*' (\(\d+\) )?panicked at ")


def _explanation(lines: list[str]) -> str | None:
    """The guest's own account of a failure: the last line before its runtime's panic (a
    Python exception's ``RuntimeError: boom``), else its last line."""
    for i, line in enumerate(lines):
        if _RUNTIME_PANIC.match(line):
            return lines[i - 1] if i else None
    return lines[-1] if lines else None


class _LoopCompletions:
    """The finished calls of one event loop: what each call waits on, by call id, and the
    eventfd reader that settles them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue = _native.CompletionQueue()
        # call id -> (its result, its slot, the end of a streamed call after its HEAD)
        self.waiting: dict[int, tuple[asyncio.Future[_native.CallResult], asyncio.Semaphore,
                                      asyncio.Future[_native.CallResult] | None]] = {}
        self._ids = itertools.count()
        self._loop = loop
        loop.add_reader(self.queue.fileno(), self._drain)

    def expect(self, slots: asyncio.Semaphore, streaming: bool = False
               ) -> tuple[int, asyncio.Future[_native.CallResult],
                          asyncio.Future[_native.CallResult] | None]:
        """A call id and the future its result will settle; ``slots`` gets its slot back
        when the call ends, whether or not anyone still waits for it. A ``streaming`` call
        may settle the first future with its HEAD; the second then gets its outcome."""
        call_id = next(self._ids)
        future: asyncio.Future[_native.CallResult] = self._loop.create_future()
        ended = self._loop.create_future() if streaming else None
        self.waiting[call_id] = (future, slots, ended)
        return call_id, future, ended

    def _drain(self) -> None:
        for call_id, kind, payload, stderr, dropped in self.queue.drain():
            if kind == HEAD:
                # The guest still runs (writing the body): its slot stays taken.
                head = self.waiting[call_id][0]
                if not head.done():
                    head.set_result((kind, payload, stderr, dropped))
                else:
                    payload[2].close()  # nobody will read this body
                continue
            future, slots, ended = self.waiting.pop(call_id)
            # The slot is freed when the guest is done, not when a cancelled caller stopped
            # waiting: until now the call held an instance.
            slots.release()
            target = ended if ended is not None and future.done() else future
            if not target.done():
                target.set_result((kind, payload, stderr, dropped))


# Every live native pool. Its worker threads keep a Python thread state (native/src/pool.rs),
# so they must be stopped before the interpreter finalizes: at exit, close them all.
_live_pools: weakref.WeakSet[_native.Pool] = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_live_pools):
        pool.close()


_completions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopCompletions] = (
    weakref.WeakKeyDictionary())


def _completions_for(loop: asyncio.AbstractEventLoop) -> _LoopCompletions:
    found = _completions.get(loop)
    if found is None:
        found = _completions[loop] = _LoopCompletions(loop)
    return found


class InstancePool:
    """Instances of one component, bounded by ``max-instances`` slots."""

    def __init__(self, name: str, spec: ComponentSpec, engine: WasmEngine,
                 component: LoadedComponent, host: HostImports) -> None:
        self.name = name
        self.spec = spec
        self._host = host
        pooling = engine.pooling
        if pooling is not None and spec.memory_mb > pooling.max_memory_mb:
            # Past the pool's slot size the guest would trap on its first large allocation.
            raise ComponentError(
                f"component `{name}`: `memory-mb` = {spec.memory_mb} exceeds the pooling "
                f"allocator's {pooling.max_memory_mb} MiB memory slots; lower it, or raise "
                "PoolingLimits.max_memory_mb (or set WASMGATE_POOLING=0)")
        if component.world not in ("wasmgate:handler/handler", wasi_http.WORLD):
            raise ComponentContractError(
                f"component `{name}` targets `{component.world}`, which this gateway cannot "
                "run; build it against `wasmgate:handler/handler` (bindings/wit/handler.wit) "
                "or the standard `wasi:http/proxy` world")
        # A wasi:http component gets every event as an HTTP request (gateway/wasi_http.py).
        self._http_path = spec.http_path if component.world == wasi_http.WORLD else None
        settings: dict[str, Any] = {
            "name": name,
            "pooled": spec.isolation == "pooled",
            "max_instances": spec.max_instances,
            "max_uses": spec.max_uses,
            "memory_bytes": spec.memory_mb << 20,
            "timeout_ms": spec.timeout_ms,
            "fuel": spec.fuel,
            "spare_instances": spec.spare_instances if spec.isolation == "fresh" else 0,
            "stderr_max_bytes": 0 if spec.guest_stderr == "discard" else spec.stderr_max_bytes,
            "max_response_headers": spec.max_response_headers,
            "max_response_bytes": spec.max_response_bytes,
            "variables": dict(host.variables),
        }
        try:
            self._native = _native.Pool(engine.native, component, host, settings)
        except _native.ComponentContractError as exc:
            raise ComponentContractError(str(exc)) from None
        except _native.InstantiateError as exc:
            raise ComponentError(_instantiate_failure(name, spec, str(exc),
                                                      pooling is not None)) from None
        _live_pools.add(self._native)
        self._slots = asyncio.Semaphore(spec.max_instances)
        # Host calls must end a little before the event does, so the guest can still take
        # the error a late host call returns and answer with it, instead of being cut off.
        timeout_s = spec.timeout_ms / 1000
        self._host_deadline_s = timeout_s - min(timeout_s / 10, HOST_CALL_RESERVE_MAX_S)

    @property
    def streams_request_body(self) -> bool:
        """True for a wasi:http component: it reads an HTTP request body as it arrives."""
        return self._http_path is not None

    @property
    def instantiated(self) -> int:
        """How many instances this pool has created, the load-time check included."""
        return self._native.instantiated

    @property
    def ready_instances(self) -> int:
        """Instances ready for the next call: warm ones (pooled) or spares (fresh)."""
        return self._native.ready_instances

    async def call(self, event: Event) -> Response:
        """Run ``event`` through a free instance; wait for a slot if all are busy."""
        body: _native.RequestBody | None = None
        source = wasi_http.STREAMED_BODY.get()
        if source is not None and not source.taken:
            if self._http_path is not None:
                body = _native.RequestBody(wasi_http.BODY_CHANNEL_CHUNKS)
            else:
                # A component that takes the body as one value (the route's component was
                # replaced by one of the other world after the trigger looked). Read before
                # admission: no await may come between taking a slot and handing it on.
                event = msgspec.structs.replace(event, data=await source.read_all())
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(),
                                       self.spec.admission_timeout_ms / 1000)
            else:
                # A free slot is taken without suspending. wait_for would wrap the acquire
                # in a Task and cost extra event-loop turns on every call.
                await self._slots.acquire()
        except TimeoutError:
            raise AdmissionTimeout(
                f"component `{self.name}`: all {self.spec.max_instances} instances stayed busy "
                f"for {self.spec.admission_timeout_ms} ms; raise `max-instances` or "
                "`admission-timeout-ms`") from None
        if self._http_path is not None:
            event = wasi_http.request_event(event, self._http_path)
        loop = asyncio.get_running_loop()
        completions = _completions_for(loop)
        # An HTTP route's wasi:http response is streamed (gateway/response_stream.py).
        slot = STREAMED_RESPONSE.get() if self._http_path is not None else None
        call_id, future, ended = completions.expect(self._slots, streaming=slot is not None)
        deadline = loop.time() + self.spec.timeout_ms / 1000
        # Host calls made by this event bound their waits by what is left of it; they run
        # on the pool's thread inside a copy of this context.
        token = set_deadline(time.monotonic() + self._host_deadline_s)
        budget = LogBudget(self.spec.log_emit_max_bytes)
        budget_token = LOG_BUDGET.set(budget)
        context = contextvars.copy_context()
        LOG_BUDGET.reset(budget_token)
        reset_deadline(token)
        try:
            self._native.submit(call_id, event, context, completions.queue, body,
                                slot is not None)
        except BaseException as exc:
            completions.waiting.pop(call_id, None)
            self._slots.release()
            if isinstance(exc, ValueError):
                raise HandlerTrap(f"component `{self.name}`: the event cannot be passed to "
                                  f"it: {exc}") from None
            raise
        if body is None or source is None:
            kind, payload, stderr, dropped = await future
            if kind == HEAD and slot is not None and ended is not None:
                return self._streamed(payload, slot, ended, deadline, None, budget=budget)
            return self._outcome(kind, payload, stderr, dropped, budget)
        feeding = asyncio.create_task(wasi_http.feed(source, body))
        try:
            kind, payload, stderr, dropped = await future
        except BaseException:
            await _stop(feeding)
            raise
        if kind == HEAD and slot is not None and ended is not None:
            # The guest may still read the request body while it writes the response.
            return self._streamed(payload, slot, ended, deadline, feeding, budget=budget)
        # The guest is done: what it did not read stays unread.
        await _stop(feeding)
        return self._outcome(kind, payload, stderr, dropped, budget)

    def _streamed(self, head: Any, slot: ResponseSlot,
                  ended: asyncio.Future[_native.CallResult], deadline: float,
                  feeding: asyncio.Task[None] | None, *, budget: LogBudget) -> Response:
        """The response whose head a streaming call returned; its body goes into ``slot``.
        The call's outcome, when it comes, is logged (the client has the head already)."""
        status, headers, stream = head

        def finished(done: asyncio.Future[_native.CallResult]) -> None:
            if feeding is not None:
                feeding.cancel()
            if done.cancelled():
                return
            kind, payload, stderr, dropped = done.result()
            error = self._error_for(kind, payload,
                                    self._log_guest_output(stderr, dropped, budget))
            if error is not None:
                log.error("handler failed after its response head was sent",
                          component=self.name, error=redact_secrets(str(error)),
                          kind=type(error).__name__)

        ended.add_done_callback(finished)
        if len(headers) > self.spec.max_response_headers:
            stream.close()
            raise InvalidResponse(
                f"component `{self.name}` returned {len(headers)} headers, over its "
                f"max-response-headers = {self.spec.max_response_headers}; raise "
                f"`max-response-headers` in [component.{self.name}] if that many are intended")
        slot.body = StreamedResponse(stream, deadline, ended, self._failure_text)
        return Response(status=status, headers=headers, body=b"")

    def _failure_text(self, result: _native.CallResult) -> str | None:
        kind, payload, _, _ = result
        error = self._error_for(kind, payload, None)
        return redact_secrets(str(error)) if error is not None else None

    def call_blocking(self, event: Event) -> Response:
        """Run ``event`` on this thread (GIL released), without admission: for tools and
        benchmarks that have no event loop."""
        if self._http_path is not None:
            event = wasi_http.request_event(event, self._http_path)
        budget = LogBudget(self.spec.log_emit_max_bytes)
        budget_token = LOG_BUDGET.set(budget)
        try:
            with deadline_after(self._host_deadline_s):
                kind, payload, stderr, dropped = self._native.call(
                    event, contextvars.copy_context())
        except ValueError as exc:
            raise HandlerTrap(f"component `{self.name}`: the event cannot be passed to "
                              f"it: {exc}") from None
        finally:
            LOG_BUDGET.reset(budget_token)
        return self._outcome(kind, payload, stderr, dropped, budget)

    def _outcome(self, kind: int, payload: Any, stderr: bytes, dropped: int,
                 budget: LogBudget) -> Response:
        last_line = self._log_guest_output(stderr, dropped, budget)
        if kind == OK:
            status, headers, body = payload
            return Response(status=status, headers=headers, body=body)
        error = self._error_for(kind, payload, last_line)
        assert error is not None
        raise error

    def _error_for(self, kind: int, payload: Any, last_line: str | None
                   ) -> HandlerError | None:
        """The error a call's outcome stands for; None for a response."""
        if kind in (OK, HEAD):
            return None
        error: HandlerError
        if kind == RETURNED:
            error = HandlerReturnedError(
                f"component `{self.name}` returned an error: "
                f"{_cut(payload, self._host.redact)}")
        elif kind == TIMEOUT:
            error = HandlerTimeout(
                f"component `{self.name}` ran past its {self.spec.timeout_ms} ms timeout "
                "(`timeout-ms`)")
        elif kind == INVALID:
            error = InvalidResponse(payload)
        elif kind == TRAP:
            said = f"; the guest said: {last_line}" if last_line else ""
            error = HandlerTrap(f"component `{self.name}` trapped: {payload}{said}")
        else:
            error = HandlerTrap(f"component `{self.name}` could not be instantiated for "
                                f"this event: {payload}")
        return error

    def _log_guest_output(self, stderr: bytes, dropped: int, budget: LogBudget
                          ) -> str | None:
        """Log what the guest wrote to stderr, a record a line (masked, component and event
        id bound) within the call's log budget, and once what the budget dropped; return
        the line that explains a failure, if any (kept though its record was dropped)."""
        try:
            return self._log_stderr(stderr, dropped, budget)
        finally:
            if budget.dropped_records:
                guest_log.warning("guest log output truncated", component=self.name,
                                  dropped_records=budget.dropped_records,
                                  dropped_bytes=budget.dropped_bytes,
                                  dropped=dict(budget.dropped_by_kind),
                                  hint="raise `log-emit-max-bytes` to keep more")

    def _log_stderr(self, stderr: bytes, dropped: int, budget: LogBudget) -> str | None:
        if not stderr and not dropped:
            return None
        redact = self._host.redact
        lines = [redact(raw.decode("utf-8", "replace").rstrip())
                 for raw in stderr.splitlines()]
        if dropped and lines and not stderr.endswith(b"\n"):
            # `stderr-max-bytes` cut the last line, maybe inside a secret (or a character).
            lines[-1] = redact.mask_cut_tail(lines[-1].rstrip("\ufffd"))
        lines = [line for line in lines if line]
        for line in lines:
            # 16 KiB of one-character lines would be 8192 records: lines count too.
            if budget.take(line, "guest stderr"):
                guest_log.warning("guest stderr", component=self.name, line=line)
        if dropped and self.spec.guest_stderr != "discard":
            guest_log.warning("guest stderr truncated", component=self.name,
                              dropped_bytes=dropped,
                              hint="raise `stderr-max-bytes` to keep more")
        return _explanation(lines)

    def close(self) -> None:
        """Stop the pool's threads once the calls they have taken end."""
        self._native.close()


def _instantiate_failure(name: str, spec: ComponentSpec, text: str, pooled: bool) -> str:
    """The load-time instantiation's error, with the setting to change where one is at
    fault. Start code that traps or loops is the guest's own failure: no hint then."""
    if "exceeds memory limits" in text:
        return (f"{text}: its memory at start is over `memory-mb` = {spec.memory_mb}; raise "
                f"`memory-mb` in [component.{name}]")
    if not pooled or "start code ran past" in text or "wasm trap" in text:
        return text
    return (f"{text}; the pooling allocator's limits may be too small for it (set "
            "WASMGATE_POOLING=0 to check)")


# A guest's err(...) text goes into a log line per event, dead-letter headers and replies;
# it is as large as the guest's memory can hold, so only its start is kept.
ERROR_TEXT_MAX_CHARS = 1024


def _cut(text: str, redact: SecretRedactor) -> str:
    """The guest's error text, masked and then cut: masking after the cut would leave
    the head of a secret the cut falls inside (19 of its 20 characters) unmasked."""
    if len(text) <= ERROR_TEXT_MAX_CHARS:
        return redact(text)
    return (f"{redact.cut(text, ERROR_TEXT_MAX_CHARS)}... "
            f"({len(text) - ERROR_TEXT_MAX_CHARS} more characters cut)")


async def _stop(feeding: asyncio.Task[None]) -> None:
    feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeding


__all__ = ["InstancePool"]
