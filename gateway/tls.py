"""The TLS context every broker client uses: one place reads ``[brokers.<name>.tls]``."""

from __future__ import annotations

import os
import ssl

from gateway.errors import ConfigError
from gateway.manifest import TlsSpec


def ssl_context(tls: TlsSpec | None, *, broker: str | None = None,
                path: str | None = None) -> ssl.SSLContext | None:
    """An SSL context from ``[brokers.<name>.tls]``, or None for plain connections.

    Verifies the broker with ``ca-file`` (the system's CAs without it), presents
    ``cert-file``/``key-file`` when given, and verifies nothing with
    ``insecure-skip-verify``. A file that is missing or unreadable is a ConfigError naming
    the field (``brokers.<broker>.tls``) and the file.
    """
    if tls is None:
        return None
    field = f"brokers.{broker}.tls" if broker else "tls"
    for name, file in (("ca-file", tls.ca_file), ("cert-file", tls.cert_file),
                       ("key-file", tls.key_file)):
        if file is not None and not os.path.isfile(file):
            raise ConfigError(f"{name} {file!r} does not exist (or is not a file)",
                              path=path, field=f"{field}.{name}")
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS files ({_describe(exc)}); check ca-file, "
                          "cert-file and key-file", path=path, field=field) from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe(exc: BaseException) -> str:
    filename = getattr(exc, "filename", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{filename}: {reason}" if filename else f"{type(exc).__name__}: {reason}"


__all__ = ["ssl_context"]
