"""The wasmgate error tree, whole. Callers catch one family; third-party errors are
translated at the edge with ``raise ... from exc``. The host capabilities' errors are
defined next to their implementation (marked with their module) and come back to the guest
as error values; the dispatcher turns a HandlerError into a status (504 a timeout, 502 an
invalid response, 500 the rest) and the verdict RETRY.

::

    WasmgateError
    ├── ConfigError                 bad wasmgate.toml, bad trigger config (names file + field)
    ├── ComponentError              a component cannot be loaded or linked
    │   ├── ComponentNotFound       the .wasm file is missing
    │   └── ComponentContractError  it does not export `handle` with the wasmgate WIT shape
    ├── HandlerError                one call failed (always worth a retry: 5xx-like)
    │   ├── HandlerTrap             the guest trapped (panic, unreachable, out of memory)
    │   ├── HandlerTimeout          the call ran past its deadline (epoch interruption)
    │   ├── HandlerReturnedError    the guest returned `err(message)`
    │   └── InvalidResponse         its response cannot be sent on (bad status or header,
    │                               over max-response-headers / max-response-bytes)
    ├── AdmissionTimeout            no instance slot became free within the admission wait
    ├── DeadlineExceeded            a host call ran out of the event's deadline (`timeout-ms`)
    ├── BrokerError                 a broker refused or lost a connection, publish or settle
    ├── InvalidEvent                a CloudEvents JSON event is malformed (names the attribute)
    ├── BuildError                  a component's build command failed
    ├── DeadLetterNotFound          gateway.dead_letters: no dead letter with that id
    ├── KeyValueError               bindings.host.kv: a kv call refused (key/value too large,
    │                               not an integer, store closed or unreachable)
    ├── SqlError                    bindings.host.sql: a SQL call refused or failed
    ├── PublishError                bindings.host.publish: a publish refused (no grant, no
    │                               such broker) or not confirmed
    └── OutboundHttpError           bindings.host.outbound_http: a request refused (no grant,
                                    bad URL or header) or failed

Every message a user can cause names the file, field or address and says what to do.
"""

from __future__ import annotations


class WasmgateError(Exception):
    """Base of every error wasmgate raises on purpose."""


class ConfigError(WasmgateError):
    """The manifest or a trigger's configuration is invalid."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        where = ""
        if path and field:
            where = f"{path}: at `{field}`: "
        elif path:
            where = f"{path}: "
        elif field:
            where = f"at `{field}`: "
        super().__init__(where + message)
        self.reason = message  # without the file and field, to say again elsewhere
        self.path = path
        self.field = field


class ComponentError(WasmgateError):
    """A component could not be loaded, compiled or linked."""


class ComponentNotFound(ComponentError):
    """The component's source file does not exist."""


class ComponentContractError(ComponentError):
    """The component does not match the wasmgate:handler world."""


class HandlerError(WasmgateError):
    """One handler call failed; the dispatcher classifies it as RETRY (status 500, 504 for
    a timeout, 502 for an invalid response: gateway.dispatch)."""


class HandlerTrap(HandlerError):
    """The guest trapped; its instance is discarded."""


class HandlerTimeout(HandlerError):
    """The guest ran past its deadline and was interrupted."""


class HandlerReturnedError(HandlerError):
    """The guest returned ``err(message)``."""


class InvalidResponse(HandlerError):
    """The guest's response cannot be sent on (see :mod:`gateway.responses`)."""


class AdmissionTimeout(WasmgateError):
    """Every instance slot stayed busy for the whole admission wait."""


class DeadlineExceeded(WasmgateError):
    """A host call (SQL, outbound HTTP, publish, kv) ran out of the event's deadline."""


class BrokerError(WasmgateError):
    """A broker connection, publish or settle failed (names the broker and address)."""


class InvalidEvent(WasmgateError):
    """A CloudEvents JSON event (``wasmgate invoke --event``) is malformed."""


class BuildError(WasmgateError):
    """A component build command failed."""


__all__ = [
    "AdmissionTimeout",
    "BrokerError",
    "BuildError",
    "ComponentContractError",
    "ComponentError",
    "ComponentNotFound",
    "ConfigError",
    "DeadlineExceeded",
    "HandlerError",
    "HandlerReturnedError",
    "HandlerTimeout",
    "HandlerTrap",
    "InvalidEvent",
    "InvalidResponse",
    "WasmgateError",
]
