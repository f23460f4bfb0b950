"""The one way the executor builds a TLS client context (OpenBao and every storage provider).

Guarantees:

* the context always verifies the peer and its name: the system trust store, or only the
  given CA bundle (``OBB_OPENBAO_CACERT``, ``OBB_STORAGE_CACERT``); there is no switch to turn
  verification off;
* an unreadable or unparsable bundle is a :class:`~executor.errors.ConfigurationError` naming
  the file, raised when the context is built (before any request).
"""

from __future__ import annotations

import ssl

from executor.errors import ConfigurationError


def ssl_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying client context (system store, or only ``cafile`` when given)."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA bundle {cafile}: {exc}") from None
