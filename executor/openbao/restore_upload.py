"""Giving a snapshot back: the restore upload to the active node, and watching it apply.

Guarantees:

* the restore body is streamed from an async iterable with a Content-Length, to
  ``sys/storage/raft/snapshot`` (or ``snapshot-force``) of the node found active
  (:mod:`executor.openbao.leader`); a restore body cannot be replayed, so a 307 on the restore
  POST is a :class:`~executor.errors.LeaderError`, never followed;
* the upload succeeds only on 200/204; when the body stopped early, the body's own exception
  is raised in preference to the connection error it caused;
* any failure of the upload or a refused restore -> :class:`~executor.errors.SnapshotError`;
  403 on the restore path -> :class:`~executor.errors.AuthError`;
* :meth:`RestoreTarget.wait_applied` only reads ``sys/leader`` and never raises for a node that
  is busy or restarting: it answers ``"active"``, ``"sealed"`` or None (timed out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable

import aiohttp

from executor.errors import AuthError, LeaderError, SnapshotError
from executor.openbao.leader import Leader
from executor.openbao.snapshot_stream import SNAPSHOT_PATH
from executor.openbao.transport import FOREIGN, Transport, describe, errors_text, read_small

FORCE_PATH = "sys/storage/raft/snapshot-force"


class RestoreTarget(Transport):
    """The restore POST and its aftermath (see module)."""

    async def restore(
        self,
        *,
        leader: Leader,
        body: Callable[[], AsyncIterable[bytes]],
        size: int,
        force: bool,
        body_error: Callable[[], BaseException | None],
    ) -> None:
        """POST the snapshot to the active node; raise if OpenBao did not accept it.

        ``body_error`` returns the exception that stopped ``body`` early, if any: it is
        re-raised in preference to the connection error it caused.
        """
        path = FORCE_PATH if force else SNAPSHOT_PATH
        url = self._url(leader.address, path)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        headers = {
            **self._headers(),
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }
        try:
            async with self._session.post(
                url, data=body(), headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                payload = await read_small(resp)
                status = resp.status
        except FOREIGN as exc:
            cause = body_error()
            if cause is not None:
                raise cause from None
            raise SnapshotError(f"uploading the snapshot to {path}: {describe(exc)}") from None
        cause = body_error()
        if cause is not None:
            raise cause
        if status in (200, 204):
            return
        if status == 307:
            raise LeaderError(f"{leader.address} is no longer the active node (307 on {path})")
        if status == 403:
            raise AuthError(
                f"permission denied on {path}: the token's policy needs update on it "
                f"({errors_text(payload)})"
            )
        raise SnapshotError(f"OpenBao refused the restore: HTTP {status}: {errors_text(payload)}")

    async def wait_applied(self, *, leader: Leader, timeout: float) -> str | None:
        """Wait until the node shows the restore took effect; the state, or None on timeout.

        OpenBao applies a restore after answering 204: a node restored from its own cluster's
        snapshot becomes active again (``active_time`` in sys/leader changes), one restored
        from another cluster's snapshot (``snapshot-force``) seals itself. Returns ``"active"``
        or ``"sealed"``; never raises for a node that is busy or restarting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                status, data, _ = await self._json(
                    "GET",
                    self._url(leader.address, "sys/leader"),
                    doing="watching OpenBao apply the restore",
                    token=False,
                )
            except LeaderError:
                status, data = 0, None
            if status == 503:
                return "sealed"
            if (
                status == 200
                and isinstance(data, dict)
                and data.get("is_self")
                and data.get("active_time") != leader.active_time
            ):
                return "active"
            await asyncio.sleep(0.25)
        return None
