"""The TLS context every broker client uses: one place reads ``[brokers.<name>.tls]``."""

from __future__ import annotations

import ssl

from gateway.manifest import TlsSpec


def ssl_context(tls: TlsSpec | None) -> ssl.SSLContext | None:
    """An SSL context from ``[brokers.<name>.tls]``, or None for plain connections.

    Verifies the broker with ``ca-file`` (the system's CAs without it), presents
    ``cert-file``/``key-file`` when given, and verifies nothing with
    ``insecure-skip-verify``. Raises ``OSError``/``ssl.SSLError`` for unreadable files.
    """
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


__all__ = ["ssl_context"]
