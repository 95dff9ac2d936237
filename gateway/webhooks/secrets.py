"""Webhook signing secrets: named in the manifest, valued only in the secrets file (or the
``WASMGATE_VAR_<NAME>`` environment variable), never inline.

A webhook's ``secrets = ["github-secret"]`` names ``[variables]`` entries marked
``secret = true``, so the redaction that masks every secret variable in logs
(:mod:`gateway.redaction`) masks these too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from gateway.errors import ConfigError
from gateway.manifest import LoadedManifest
from gateway.variables import read_secrets_file, variable_env_name

# (variable name, manifest field naming it) -> its value, or a ConfigError.
SecretResolver = Callable[[str, str], str]


def secret_resolver(manifest: LoadedManifest,
                    env: Mapping[str, str] | None = None) -> SecretResolver:
    """A resolver for webhook secrets of ``manifest``; the secrets file is read on first use."""
    environ = os.environ if env is None else env
    where = str(manifest.path)
    cache: dict[str, dict[str, str]] = {}

    def resolve(name: str, field: str) -> str:
        spec = manifest.spec.variables.get(name)
        if spec is None:
            raise ConfigError(
                f"secret {name!r} is not declared; declare it in [variables] as "
                f"`{name} = {{ secret = true }}` and put its value in the secrets file",
                path=where, field=field)
        if not spec.secret:
            raise ConfigError(
                f"variable {name!r} signs webhooks but is not marked `secret = true`; mark "
                "it so that its value stays masked in logs", path=where, field=field)
        if spec.default is not None:
            raise ConfigError(
                f"variable {name!r} has a `default`: a webhook secret is never written in "
                "the manifest; remove the default and put the value in the secrets file",
                path=where, field=f"variables.{name}.default")
        if "file" not in cache:
            cache["file"] = read_secrets_file(manifest)
        value = environ.get(variable_env_name(name)) or cache["file"].get(name)
        if not value:
            file = manifest.application.secrets_file
            hint = (f"add `{name} = \"...\"` to the secrets file {file!r}" if file else
                    "set `secrets-file` in [application] and add it there")
            raise ConfigError(
                f"secret {name!r} has no value; {hint} (or set "
                f"{variable_env_name(name)} in the environment)", path=where, field=field)
        return value

    return resolve


__all__ = ["SecretResolver", "secret_resolver"]
