"""The HTTP plumbing every OpenBao request shares: TLS, one JSON call, error texts.

Guarantees:

* TLS is always verified (system trust store, or ``OBB_OPENBAO_CACERT``, :mod:`executor.tls`);
  there is no switch to turn verification off. Plain ``http://`` is used only when the
  configured address says so;
* a JSON call (:meth:`Transport._json`) never follows a redirect, sends the token only when
  asked to, and turns any aiohttp/TLS/timeout/socket failure (:data:`FOREIGN`) into ONE
  :class:`~executor.errors.ExecutorError` of the caller's choosing
  (:class:`~executor.errors.LeaderError` by default) whose message says what was being done,
  why it failed (:func:`describe`) and the URL;
* OpenBao's error bodies reach messages as one short line (:func:`errors_text`), never whole.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from executor.contract import OpenBaoSettings
from executor.errors import ExecutorError, LeaderError

#: Every failure of the HTTP client that is translated into an executor error.
FOREIGN = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def errors_text(payload: bytes) -> str:
    """OpenBao's ``{"errors": [...]}`` as one short line."""
    try:
        data = json.loads(payload)
        errs = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errs, list) and errs:
            return "; ".join(str(e) for e in errs)[:500]
    except ValueError:
        pass
    return payload[:300].decode("utf-8", "replace").strip() or "(empty body)"


def describe(exc: BaseException) -> str:
    """What went wrong on the wire, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the response body broke off: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return f"{exc.__class__.__name__}: {exc}"


async def read_small(resp: aiohttp.ClientResponse, limit: int = 64 << 10) -> bytes:
    """At most ``limit`` bytes of an error body; empty if even that fails."""
    try:
        return await resp.content.read(limit)
    except FOREIGN:
        return b""


class Transport:
    """The session, the token and one JSON call; the base of :class:`~.client.OpenBao`."""

    def __init__(self, *, settings: OpenBaoSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._session = session
        self._token: str | None = None
        self._revocable = False

    def _headers(self) -> dict[str, str]:
        return {"X-Vault-Token": self._token} if self._token else {}

    async def _json(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        doing: str,
        transport_error: type[ExecutorError] = LeaderError,
        token: bool = True,
    ) -> tuple[int, Any, bytes]:
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                headers=self._headers() if token else {},
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                data: Any = None
                if payload:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                return resp.status, data, payload
        except FOREIGN as exc:
            raise transport_error(f"{doing}: {describe(exc)} ({url})") from None

    def _url(self, base: str, path: str) -> str:
        return f"{base.rstrip('/')}/v1/{path.lstrip('/')}"
