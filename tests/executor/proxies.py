"""Loopback proxies that inject faults between the executor and a real server.

* :class:`TcpProxy` forwards bytes; it can CUT every connection after N bytes from the server
  (an abrupt close mid-response) or PAUSE after N bytes until released (to kill the server
  while it is blocked mid-stream).
* :class:`HttpProxy` is an HTTP reverse proxy (aiohttp) that re-serves responses with chunked
  encoding; a rule can answer a request with an error status, or end a response cleanly after
  N body bytes (a truncated body that looks complete at the HTTP level). It rewrites
  ``Location`` headers so redirects and GCS session URIs keep going through it, and records
  every request.

Test infrastructure, not product code. Bound to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


class TcpProxy:
    """Byte-level proxy to ``upstream_port`` on 127.0.0.1."""

    def __init__(
        self,
        upstream_port: int,
        *,
        cut_after: int | None = None,
        pause_after: int | None = None,
        upstream_rcvbuf: int | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.upstream_rcvbuf = upstream_rcvbuf
        self.cut_after = cut_after
        self.pause_after = pause_after
        self.paused = asyncio.Event()
        self.release = asyncio.Event()
        self.bytes_down = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_r, up_w = await self._connect()
        except OSError:
            writer.close()
            return
        up = asyncio.create_task(self._pipe(reader, up_w, count=False))
        down = asyncio.create_task(self._pipe(up_r, writer, count=True))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (writer, up_w):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._tasks.discard(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream_rcvbuf is None:
            return await asyncio.open_connection("127.0.0.1", self.upstream_port)
        # A small receive buffer keeps the server blocked mid-write while we pause.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.upstream_rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.upstream_port))
        return await asyncio.open_connection(sock=sock, limit=self.upstream_rcvbuf)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, count: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                limit = 65536
                if count and self.cut_after is not None:
                    limit = min(limit, self.cut_after - self.bytes_down)
                    if limit <= 0:
                        return  # cut: the caller aborts both sides
                if count and self.pause_after is not None and not self.release.is_set():
                    left = self.pause_after - self.bytes_down
                    if left <= 0:
                        self.paused.set()
                        await self.release.wait()
                        continue
                    limit = min(limit, left)
                data = await r.read(limit)
                if not data:
                    return
                if count:
                    self.bytes_down += len(data)
                w.write(data)
                await w.drain()


@dataclass
class Fault:
    status: int | None = None  # answer this status instead of forwarding
    truncate_body_after: int | None = None  # forward, but end the body cleanly after N bytes


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class HttpProxy:
    upstream: str  # e.g. http://127.0.0.1:1234 (no path)
    rule: Callable[[web.Request, int], Fault | None] = lambda _r, _n: None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HttpProxy:
        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Seen(request.method, request.path_qs, dict(request.headers))
        self.seen.append(record)
        fault = self.rule(request, len(self.seen))
        body = await request.read()
        if fault is not None and fault.status is not None:
            record.status = fault.status
            return web.Response(status=fault.status, text="injected fault")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body if body else None,
            headers=headers,
            allow_redirects=False,
        ) as up:
            record.status = up.status
            out = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() in _HOP:
                    continue
                if k.lower() == "location":
                    v = v.replace(self.upstream, self.url)
                out.headers.add(k, v)
            out.enable_chunked_encoding()
            await out.prepare(request)
            sent = 0
            limit = fault.truncate_body_after if fault is not None else None
            async for chunk in up.content.iter_chunked(65536):
                if limit is not None and sent + len(chunk) >= limit:
                    await out.write(chunk[: limit - sent])
                    break
                sent += len(chunk)
                await out.write(chunk)
            await out.write_eof()
            return out
