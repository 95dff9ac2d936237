"""The executor: isolated wasmtime instances of one component, bounded and off the loop.

Admission is a semaphore taken *before* instantiation: when every slot is busy the caller
waits (up to ``admission-timeout-ms``), it is never refused at once. Calls run on worker
threads so the event loop never blocks on guest code.

Isolation ``fresh`` gives every event a new Store and instance. ``pooled`` reuses warm
instances and recycles one after ``max-uses`` calls and always after a trap, timeout or
error, so a failed call never leaks state into the next event.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, Literal

import structlog
import wasmtime
from wasmtime import component as wc

from bindings.types import Event, Response
from gateway.convert import HandleCall
from gateway.deadline import deadline_after
from gateway.engine import EPOCH_TICK_SECONDS, WasmEngine
from gateway.errors import (
    AdmissionTimeout,
    ComponentContractError,
    ComponentError,
    HandlerReturnedError,
    HandlerTimeout,
    HandlerTrap,
)
from gateway.handoff import WorkerThreads
from gateway.manifest import ComponentSpec

log = structlog.get_logger("wasmgate.executor")

# Fuel left in a store when the engine meters fuel but this component asked for none.
UNLIMITED_FUEL = (1 << 63) - 1

LinkerSetup = Callable[[wc.Linker], None]

# "specialised": gateway.convert's fixed-signature path (the default, ~5x less Python per
# call); "stock": wasmtime-py's generic Func.__call__, kept as the reference and fallback.
# WASMGATE_CALL_PATH=stock in the environment is the escape hatch for a whole process.
CallPath = Literal["specialised", "stock"]

# How a call reaches its worker thread: "threads", the pool's own long-lived threads
# (gateway/handoff.py, the default), or "to_thread", asyncio.to_thread on the loop's default
# executor, kept as the reference for benchmarks.
Handoff = Literal["threads", "to_thread"]


def call_path_from_env() -> CallPath:
    """Return the call path ``WASMGATE_CALL_PATH`` asks for (default "specialised")."""
    return "stock" if os.environ.get("WASMGATE_CALL_PATH") == "stock" else "specialised"


class _Instance:
    """One live instance: its store, its `handle` export and how often it has run."""

    __slots__ = ("handle", "store", "uses")

    def __init__(self, store: wasmtime.Store, handle: wc.Func) -> None:
        self.store = store
        self.handle = handle
        self.uses = 0


class InstancePool:
    """Instances of one component, bounded by ``max-instances`` slots."""

    def __init__(self, name: str, spec: ComponentSpec, engine: WasmEngine,
                 component: wc.Component, setup_linker: LinkerSetup,
                 *, call_path: CallPath | None = None,
                 handoff: Handoff = "threads") -> None:
        self.name = name
        self.spec = spec
        self._engine = engine
        self._component = component
        self._linker = wc.Linker(engine.engine)
        self._linker.add_wasip2()
        setup_linker(self._linker)
        pooling = engine.pooling
        if pooling is not None and spec.memory_mb > pooling.max_memory_mb:
            # Past the pool's slot size the guest would trap on its first large allocation.
            raise ComponentError(
                f"component `{name}`: `memory-mb` = {spec.memory_mb} exceeds the pooling "
                f"allocator's {pooling.max_memory_mb} MiB memory slots; lower it or raise "
                "PoolingAllocator.max_memory_mb (or unset WASMGATE_POOLING)")
        self._slots = asyncio.Semaphore(spec.max_instances)
        self._idle: list[_Instance] = []
        self._idle_lock = threading.Lock()
        self._deadline_ticks = max(1, round(spec.timeout_ms / 1000 / EPOCH_TICK_SECONDS))
        self.instantiated = 0
        self._handoff = handoff
        self._workers: WorkerThreads[Event, Response] = WorkerThreads(
            self._call_blocking, name=f"wasmgate-{name}")
        # Fail at load, not on the first event, if the component breaks the contract.
        first = self._instantiate()
        self._handle_call: HandleCall | None = None
        if (call_path or call_path_from_env()) == "specialised":
            # The export's type is the same for every instance of the component: check it
            # once. A signature other than our WIT's keeps the generic path.
            self._handle_call = HandleCall.for_func(first.handle, first.store)
            if self._handle_call is None:
                log.warning("`handle` has an unexpected signature; using the generic "
                            "conversion", component=name)
        self._release(first)

    def _wasi_config(self) -> wasmtime.WasiConfig:
        config = wasmtime.WasiConfig()
        if self.spec.guest_stderr == "inherit":
            # A guest's stderr is where its runtime explains a trap (a Python traceback, a
            # JavaScript exception); without it a trap says only "unreachable executed".
            config.inherit_stderr()
        return config

    def _instantiate(self) -> _Instance:
        store = wasmtime.Store(self._engine.engine)
        # Every store of a WASI-importing component needs a WASI context, or wasmtime
        # aborts the whole process on the first call. The default one grants nothing.
        store.set_wasi(self._wasi_config())
        store.set_limits(memory_size=self.spec.memory_mb << 20)
        if self._engine.consume_fuel:
            store.set_fuel(self.spec.fuel or UNLIMITED_FUEL)
        # Instantiation runs guest start code: it gets the same deadline as a call.
        store.set_epoch_deadline(self._deadline_ticks)
        try:
            instance = self._linker.instantiate(store, self._component)
        except wasmtime.WasmtimeError as exc:
            if self._engine.pooling is not None and "limit" in str(exc):
                raise ComponentError(
                    f"component `{self.name}` cannot be instantiated: {exc}. The pooling "
                    "allocator's limits are too small for it or for this many live instances; "
                    "raise them (PoolingAllocator) or unset WASMGATE_POOLING") from exc
            raise ComponentContractError(
                f"component `{self.name}` cannot be instantiated: {exc}. It must target the "
                "world `wasmgate:handler/handler` (bindings/wit/handler.wit)") from exc
        handle = instance.get_func(store, "handle")
        if handle is None:
            raise ComponentContractError(
                f"component `{self.name}` does not export `handle`; build it against the "
                "world `wasmgate:handler/handler` (bindings/wit/handler.wit)")
        self.instantiated += 1
        return _Instance(store, handle)

    @property
    def call_path(self) -> CallPath:
        """The conversion this pool uses: "specialised" unless asked for or fallen back."""
        return "specialised" if self._handle_call is not None else "stock"

    def _acquire(self) -> _Instance:
        if self.spec.isolation == "pooled":
            with self._idle_lock:
                if self._idle:
                    return self._idle.pop()
        return self._instantiate()

    def _release(self, inst: _Instance) -> None:
        if self.spec.isolation == "pooled" and inst.uses < self.spec.max_uses:
            with self._idle_lock:
                self._idle.append(inst)
            return
        # Free the store now rather than whenever the last reference goes (an exception's
        # traceback can hold one for long): under the pooling allocator a live store holds
        # one of a fixed number of slots.
        inst.store.close()

    def _call_blocking(self, event: Event) -> Response:
        inst = self._acquire()
        try:
            response = self._invoke(inst, event)
        except BaseException:
            # A trap, timeout, error value or host exception: never reuse this instance.
            inst.store.close()
            raise
        self._release(inst)
        return response

    def _invoke(self, inst: _Instance, event: Event) -> Response:
        inst.uses += 1
        inst.store.set_epoch_deadline(self._deadline_ticks)
        if self._engine.consume_fuel and self.spec.fuel:
            inst.store.set_fuel(self.spec.fuel)
        try:
            if self._handle_call is not None:
                result = self._handle_call(inst.handle, inst.store, event)
            else:
                result = _from_record(inst.handle(inst.store, _to_record(event)))
                inst.handle.post_return(inst.store)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            if "interrupt" in text:
                raise HandlerTimeout(
                    f"component `{self.name}` ran past its {self.spec.timeout_ms} ms timeout"
                ) from exc
            raise HandlerTrap(f"component `{self.name}` trapped: {_first_line(text)}") from exc
        if isinstance(result, str):
            raise HandlerReturnedError(f"component `{self.name}` returned an error: {result}")
        return result

    async def call(self, event: Event) -> Response:
        """Run ``event`` through a free instance; wait for a slot if all are busy."""
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(),
                                       self.spec.admission_timeout_ms / 1000)
            else:
                # A free slot is taken without suspending. wait_for would wrap the acquire
                # in a Task and cost extra event-loop turns (~tens of µs) on every call.
                await self._slots.acquire()
        except TimeoutError:
            raise AdmissionTimeout(
                f"component `{self.name}`: all {self.spec.max_instances} instances stayed busy "
                f"for {self.spec.admission_timeout_ms} ms; raise `max-instances` or "
                "`admission-timeout-ms`") from None
        try:
            # Host calls made by this event bound their waits by what is left of it.
            with deadline_after(self.spec.timeout_ms / 1000):
                if self._handoff == "threads":
                    return await self._workers.call(event)
                return await asyncio.to_thread(self._call_blocking, event)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop the pool's worker threads once their current calls end."""
        self._workers.close()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "trap"


def _from_record(result: Any) -> Response | str:
    # wasmtime-py lifts `result<response, string>` as the ok Record or the err str.
    if isinstance(result, str):
        return result
    return Response(status=result.status, headers=list(result.headers), body=bytes(result.body))


def _to_record(event: Event) -> Any:
    rec = wc.Record()
    attrs = rec.__dict__
    attrs["id"] = event.id
    attrs["source"] = event.source
    attrs["type"] = event.type
    attrs["subject"] = event.subject
    attrs["time"] = event.time
    attrs["content-type"] = event.content_type
    attrs["key"] = event.key
    attrs["headers"] = event.headers
    attrs["metadata"] = event.metadata
    attrs["data"] = event.data
    return rec
