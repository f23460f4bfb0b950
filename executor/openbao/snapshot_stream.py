"""Taking the snapshot: the ``sys/storage/raft/snapshot`` body, streamed from the active node.

Guarantees:

* the snapshot body is streamed as received (no decompression, no buffering): ``sock_read``
  bounds the silence between bytes, not the total time (``OBB_OPENBAO_READ_TIMEOUT``, first
  byte included);
* a 307 on the snapshot GET is followed once (after recording the target's ``active_time``
  from the target itself, :mod:`executor.openbao.leader`); a second 307 is a
  :class:`~executor.errors.LeaderError`. The stream names the node that served it, for
  :meth:`~executor.openbao.leader.LeaderQueries.confirm_source` after the last byte;
* any failure of the snapshot stream (request, non-200 answer, a body that breaks off) ->
  :class:`~executor.errors.SnapshotError`; 403 on the snapshot path ->
  :class:`~executor.errors.AuthError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from executor.errors import AuthError, LeaderError, SnapshotError
from executor.log import get_logger
from executor.openbao.leader import Leader, LeaderQueries
from executor.openbao.transport import FOREIGN, describe, errors_text, read_small

log = get_logger("executor.openbao")

SNAPSHOT_PATH = "sys/storage/raft/snapshot"
_CHUNK = 1 << 20


@dataclass
class SnapshotStream:
    """The snapshot body, and the node that is serving it (after a redirect: the target)."""

    chunks: AsyncIterator[bytes]
    source: Leader


class SnapshotSource(LeaderQueries):
    """The snapshot GET (see module)."""

    @asynccontextmanager
    async def snapshot(self, *, leader: Leader) -> AsyncIterator[SnapshotStream]:
        """The snapshot body as an async iterator of chunks, exactly as OpenBao sends it,
        with the node serving it (pass it to :meth:`confirm_source` after the last byte)."""
        url = self._url(leader.address, SNAPSHOT_PATH)
        source = leader
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        for _hop in range(2):
            try:
                resp = await self._session.get(
                    url, headers=self._headers(), allow_redirects=False, timeout=timeout
                )
            except FOREIGN as exc:
                raise SnapshotError(f"requesting the snapshot: {describe(exc)} ({url})") from None
            if resp.status == 307 and resp.headers.get("Location") and _hop == 0:
                target = urljoin(url, resp.headers["Location"])
                resp.release()
                log.warning("snapshot request redirected: leadership moved", to=target)
                base = target.split("/v1/", 1)[0]
                state = await self._self_state(
                    base,
                    doing=f"asking {base} (the snapshot redirect target) for its own leader state",
                )
                found = state.get("leader_address")
                at = state.get("active_time")
                source = Leader(
                    address=base,
                    version=leader.version,
                    active_time=at if isinstance(at, str) else None,
                    advertised=found.rstrip("/") if isinstance(found, str) and found else None,
                    ha_enabled=state.get("ha_enabled", True) is not False,
                )
                url = target
                continue
            break
        try:
            if resp.status != 200:
                payload = await read_small(resp)
                if resp.status == 403:
                    raise AuthError(
                        f"permission denied reading {SNAPSHOT_PATH}: the token's policy needs "
                        f"read on it ({errors_text(payload)})"
                    )
                if resp.status == 307:
                    raise LeaderError("snapshot request redirected twice: no stable leader")
                raise SnapshotError(
                    f"snapshot request answered HTTP {resp.status}: {errors_text(payload)}"
                )
            log.info(
                "snapshot stream started", url=url, content_type=resp.headers.get("Content-Type")
            )
            yield SnapshotStream(chunks=_stream_body(resp), source=source)
        finally:
            resp.close()


async def _stream_body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            received += len(chunk)
            yield chunk
    except FOREIGN as exc:
        raise SnapshotError(
            f"the snapshot stream broke after {received} bytes: {describe(exc)}"
        ) from None
