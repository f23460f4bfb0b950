"""A loopback TCP proxy that can stall its connections without closing them.

``stall()`` freezes every connection open at that moment: no byte is forwarded either way
and nothing is closed, exactly what a dead NAT/load-balancer entry looks like to a client.
Connections made afterwards are forwarded normally. Test infrastructure only.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Conn:
    def __init__(self) -> None:
        self.stalled = False
        self.writers: list[asyncio.StreamWriter] = []


class StallingProxy:
    def __init__(self, *, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._conns: list[_Conn] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0

    async def start(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stall(self) -> int:
        """Freeze every open connection; returns how many were frozen."""
        live = [c for c in self._conns if not c.stalled]
        for conn in live:
            conn.stalled = True
        return len(live)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn()
        self._conns.append(conn)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        conn.writers = [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, conn),
            self._pump(up_reader, writer, conn),
            return_exceptions=True,
        )
        for w in conn.writers:
            with contextlib.suppress(Exception):
                w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        while True:
            data = await src.read(65536)
            while conn.stalled:
                await asyncio.sleep(3600)  # hold the bytes forever, keep the socket open
            if not data:
                dst.close()
                return
            dst.write(data)
            await dst.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            for w in conn.writers:
                with contextlib.suppress(Exception):
                    w.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
