"""App variables and secrets: the values each component sees through ``config.get``.

Precedence, lowest first: the ``[variables]`` entry's ``default``, the application's
``secrets-file``, ``WASMGATE_VAR_<NAME>`` from the environment, the component's own
``variables`` table. Values of ``secret = true`` variables are collected by
:func:`secret_values` so that logs can mask them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping

from gateway.errors import ConfigError
from gateway.manifest import LoadedManifest

VARIABLE_ENV_PREFIX = "WASMGATE_VAR_"




def variable_env_name(name: str) -> str:
    """The environment variable that sets app variable ``name``: ``WASMGATE_VAR_<NAME>``."""
    return VARIABLE_ENV_PREFIX + name.upper().replace("-", "_")


def resolve_variables(
    manifest: LoadedManifest, component_name: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variable values component ``component_name`` sees.

    Precedence, lowest first: the app variable's ``default``, the application's
    ``secrets-file``, ``WASMGATE_VAR_<NAME>`` from ``env`` (default ``os.environ``), the
    component's own ``variables`` table. A required
    variable left without a value is a ConfigError naming the env var to set.
    """
    environ = os.environ if env is None else env
    component = manifest.component(component_name)
    from_file = read_secrets_file(manifest)
    values: dict[str, str] = {}
    for name, spec in manifest.spec.variables.items():
        env_name = variable_env_name(name)
        value: str | None
        if name in component.variables:
            value = component.variables[name]
        elif env_name in environ:
            value = environ[env_name]
        elif name in from_file:
            value = from_file[name]
        else:
            value = spec.default
        if value is None:
            if spec.required:
                raise ConfigError(
                    f"required variable {name!r} has no value (needed by component "
                    f"{component_name!r}); set {env_name} in the environment",
                    path=str(manifest.path),
                    field=f"variables.{name}",
                )
            continue
        values[name] = value
    for name, value in component.variables.items():
        values.setdefault(name, value)
    return values


def secret_names(manifest: LoadedManifest) -> set[str]:
    """Names of app variables marked ``secret = true`` (never logged)."""
    return {name for name, spec in manifest.spec.variables.items() if spec.secret}


def read_secrets_file(manifest: LoadedManifest) -> dict[str, str]:
    """``name = "value"`` pairs from the application's ``secrets-file`` (none: empty).

    Only declared variables may appear there, so a typo is caught rather than ignored.
    """
    relative = manifest.application.secrets_file
    if relative is None:
        return {}
    path = manifest.resolve(relative)
    field = "application.secrets-file"
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"secrets file {str(path)!r} does not exist; create it or remove "
                          "`secrets-file`", path=str(manifest.path), field=field) from None
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        # ValueError: a NUL in the path (UnicodeDecodeError is one too).
        raise ConfigError(f"cannot read secrets file {str(path)!r}: {exc}",
                          path=str(manifest.path), field=field) from None
    values: dict[str, str] = {}
    for name, value in document.items():
        if name not in manifest.spec.variables:
            raise ConfigError(f"{name!r} is not a declared variable; declare it in "
                              "[variables] (with secret = true)", path=str(path), field=name)
        if not isinstance(value, str):
            raise ConfigError("secret values are strings", path=str(path), field=name)
        values[name] = value
    return values


def secret_values(manifest: LoadedManifest, env: Mapping[str, str] | None = None) -> list[str]:
    """The values of every ``secret = true`` variable, as any component could see them, so
    they can be masked in logs."""
    environ = os.environ if env is None else env
    from_file = read_secrets_file(manifest)
    names = secret_names(manifest)
    values = [from_file[n] for n in names if n in from_file]
    values += [environ[variable_env_name(n)] for n in names if variable_env_name(n) in environ]
    values += [v for n in names if (v := manifest.spec.variables[n].default) is not None]
    for component in manifest.components.values():
        values += [v for n, v in component.variables.items() if n in names]
    return values


__all__ = [
    "VARIABLE_ENV_PREFIX",
    "read_secrets_file",
    "resolve_variables",
    "secret_names",
    "secret_values",
    "variable_env_name",
]
