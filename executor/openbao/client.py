"""One OpenBao connection for one executor run: the session, and plain API calls.

Guarantees:

* :meth:`OpenBao.open` yields a client over ONE verifying session (TLS as in
  :mod:`executor.openbao.transport`; no automatic decompression, no proxy from the
  environment, at most 8 connections) and, on exit, revokes a token obtained by login
  (:mod:`executor.openbao.auth`) before the session closes;
* API calls other than the snapshot stream give up after ``_API_READ_TIMEOUT`` seconds of
  silence; the snapshot and restore bodies use ``OBB_OPENBAO_READ_TIMEOUT`` instead;
* :meth:`OpenBao.call` (freshness marker, restore drill) never follows a redirect and turns a
  transport failure into the caller's ``transport_error``
  (:class:`~executor.errors.LeaderError` by default).

The client is assembled from one class per concern: :mod:`~executor.openbao.leader` (the
active node), :mod:`~executor.openbao.auth` (the token), :mod:`~executor.openbao.snapshot_stream`
and :mod:`~executor.openbao.restore_upload`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from executor.contract import OpenBaoSettings
from executor.errors import ExecutorError, LeaderError
from executor.openbao.auth import TokenAuth
from executor.openbao.restore_upload import RestoreTarget
from executor.openbao.snapshot_stream import SnapshotSource
from executor.openbao.transport import errors_text
from executor.tls import ssl_context

#: Silence allowed on an API answer (not the snapshot body): long enough for a busy node to
#: answer sys/leader or a login, short enough that a hung node fails the call in half a minute.
_API_READ_TIMEOUT = 30.0


class OpenBao(TokenAuth, SnapshotSource, RestoreTarget):
    """A connection to one OpenBao cluster for one executor run."""

    @classmethod
    @asynccontextmanager
    async def open(cls, *, settings: OpenBaoSettings) -> AsyncIterator[OpenBao]:
        """A client whose token (if obtained by login) is revoked on exit."""
        ctx = ssl_context(str(settings.cacert) if settings.cacert else None)
        connector = aiohttp.TCPConnector(ssl=ctx, limit=8)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=_API_READ_TIMEOUT,
        )
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        ) as session:
            client = cls(settings=settings, session=session)
            try:
                yield client
            finally:
                await client.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        base: str | None = None,
        doing: str,
        transport_error: type[ExecutorError] = LeaderError,
        token: bool = True,
    ) -> tuple[int, Any, str]:
        """One JSON API call to ``base`` (default: the configured address): the status, the
        parsed body (None if not JSON) and OpenBao's error text (for messages); a transport
        failure raises ``transport_error``."""
        status, data, payload = await self._json(
            method,
            self._url(base or self.settings.addr, path),
            body=body,
            doing=doing,
            transport_error=transport_error,
            token=token,
        )
        return status, data, errors_text(payload) if payload else "(empty body)"
