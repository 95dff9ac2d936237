"""The Trigger protocol and the registry of trigger kinds.

A trigger adapter owns its connection, its config schema and its settle primitives. It turns
a native message into an :class:`~bindings.types.Event` and hands it, with a
:class:`~triggers.delivery.Settle`, to :func:`~triggers.delivery.deliver`, which runs it
through ``dispatch(component, event)`` and settles it (HTTP awaits ``dispatch`` itself). Awaiting is
the backpressure: a full instance pool makes the adapter wait, never drop.

The manifest keeps every ``[[trigger.<kind>]]`` table raw; the adapter registered for
``<kind>`` decodes it into its own schema, so the manifest never learns the list of kinds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, overload, runtime_checkable

import msgspec

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec, schema_error

if TYPE_CHECKING:
    from bindings.host.kv import KeyValueStore
    from bindings.host.publish import BrokerClients
    from bindings.types import Event
    from gateway.dispatch import Outcome, RetryPolicy

# dispatch(component_id, event) -> Outcome: one classified call. Never raises for handler
# failures. A broker trigger runs it through triggers.delivery.deliver with its own retry
# policy (max-attempts, backoff) and retry mode; HTTP answers with the one call's status.
Dispatch = Callable[[str, "Event"], Awaitable["Outcome"]]


class Trigger(Protocol):
    """One configured trigger (one ``[[trigger.<kind>]]`` table) bound to a component."""

    kind: ClassVar[str]
    component: str

    async def start(self, dispatch: Dispatch) -> None:
        """Begin intake. Returns once the trigger is accepting events."""

    async def stop(self) -> None:
        """Stop intake, let in-flight events finish and settle, release the connection."""


@runtime_checkable
class RetryingTrigger(Trigger, Protocol):
    """A trigger whose events are retried and dead-lettered (every broker trigger, cron):
    :func:`triggers.delivery.deliver` applies ``retry_policy`` (max-attempts, backoff) to
    each event. The HTTP trigger is not one: its caller retries."""

    @property
    def retry_policy(self) -> RetryPolicy: ...



class TriggerFactory(Protocol):
    def __call__(self, config: dict[str, Any], *, context: TriggerContext) -> Trigger: ...


class TriggerContext(msgspec.Struct, kw_only=True):
    """What every adapter may need from the app, besides its own table."""

    manifest_path: str
    field: str  # e.g. "trigger.http[0]" for error messages
    listen: str = "127.0.0.1:3000"
    brokers: dict[str, BrokerSpec] = msgspec.field(default_factory=dict)
    # Where adapters keep local state (e.g. a Redis Streams consumer name): <app>/.wasmgate
    state_dir: str = ".wasmgate"
    application: str = "app"
    # The app's key-value stores by name (cron's claim store); None outside an app.
    key_value: Callable[[str], KeyValueStore] | None = None
    # Each key-value store's name -> the components granted it: a store the gateway keeps
    # its own records in (a webhook route's delivery ids) must be out of their reach.
    store_grants: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # (variable name, field naming it) -> a webhook signing secret's value
    # (gateway.webhooks.secrets); None where secrets are not resolved (`wasmgate build`).
    webhook_secret: Callable[[str, str], str] | None = None
    # The app's broker producers, shared with `publish` (an enqueueing HTTP route uses them).
    broker_clients: BrokerClients | None = None
    # Whether a component reads a request body as a stream (a wasi:http component): the
    # HTTP trigger then hands it the body as it arrives instead of reading it whole first.
    streams_body: Callable[[str], bool] | None = None

    def broker(self, name: str) -> BrokerSpec:
        """The ``[brokers.<name>]`` table (the manifest already checked that it exists)."""
        try:
            return self.brokers[name]
        except KeyError:
            raise ConfigError(f"unknown broker {name!r}; declare it with [brokers.{name}]",
                              path=self.manifest_path, field=f"{self.field}.broker") from None

    @overload
    def store(self, name: str, field: str) -> KeyValueStore: ...
    @overload
    def store(self, name: str | None, field: str) -> KeyValueStore | None: ...

    def store(self, name: str | None, field: str) -> KeyValueStore | None:
        """The key-value store a table names in ``field`` (``claim-store``,
        ``attempts-store``), or None when it names none; a bad name is a ConfigError at
        that field."""
        if name is None:
            return None
        where = {"path": self.manifest_path, "field": f"{self.field}.{field}"}
        if self.key_value is None:
            raise ConfigError(f"`{field}` needs the app's key-value stores", **where)
        try:
            return self.key_value(name)
        except ConfigError as exc:
            raise ConfigError(exc.reason, **where) from None


_REGISTRY: dict[str, TriggerFactory] = {}
T = TypeVar("T")


def register(kind: str, factory: TriggerFactory) -> None:
    """Make ``[[trigger.<kind>]]`` tables build triggers with ``factory``."""
    _REGISTRY[kind] = factory


def factory_for(kind: str, *, manifest_path: str) -> TriggerFactory:
    """Return the factory for ``kind`` or raise a ConfigError listing the known kinds."""
    _load_builtin_triggers()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        missing = "".join(f"; {m} could not be imported ({why}), install the broker "
                          "clients with: pip install 'wasmgate[brokers]'"
                          for m, why in _MISSING.items())
        raise ConfigError(
            f"unknown trigger kind {kind!r}; known kinds: {known}{missing}", path=manifest_path,
            field=f"trigger.{kind}",
        ) from None


def decode_config(raw: dict[str, Any], schema: type[T], context: TriggerContext) -> T:
    """Decode a raw trigger table into ``schema``; errors name the file and field the way
    the rest of the manifest does (an unknown field gets "did you mean")."""
    for old, new in _RENAMED_FIELDS.items():
        if old in raw:
            raise ConfigError(f"`{old}` is now `{new}` (one name on every broker trigger); "
                              f"rename it", path=context.manifest_path,
                              field=f"{context.field}.{old}")
    try:
        return msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        raise schema_error(raw, schema, exc, path=context.manifest_path,
                           field=context.field) from exc


def _load_builtin_triggers() -> None:
    # Imported lazily so `import triggers.base` stays cheap and cycle-free.
    import importlib

    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # A broker adapter whose client library is not installed: its kind stays
            # unknown and the error says which extra to install.
            _MISSING[module] = str(exc)


# Fields renamed since 0.1, refused with their new name rather than "unknown field".
_RENAMED_FIELDS = {"shutdown-grace-ms": "stop-grace-ms", "drain-timeout-ms": "stop-grace-ms"}

_BUILTIN_MODULES = ("triggers.cron", "triggers.http", "triggers.kafka", "triggers.nats",
                    "triggers.jetstream", "triggers.amqp", "triggers.redis_pubsub",
                    "triggers.redis_streams")
_MISSING: dict[str, str] = {}


__all__ = ["Dispatch", "RetryingTrigger", "Trigger", "TriggerContext", "TriggerFactory",
           "decode_config", "factory_for", "register"]
