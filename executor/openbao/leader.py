"""The active node: finding it before a snapshot or restore, confirming it after a snapshot.

Guarantees:

* the snapshot is taken from and restored to the ACTIVE node: :meth:`LeaderQueries.find_leader`
  asks ``sys/leader`` first (a standby answers snapshot paths with 307 and a restore body
  cannot be replayed) and records the active node's ``active_time`` from that node itself
  (a 307 on the snapshot GET is followed once, :mod:`executor.openbao.snapshot_stream`; a 307
  on the restore POST is a :class:`~executor.errors.LeaderError`,
  :mod:`executor.openbao.restore_upload`);
* a snapshot counts only if the node that served it was the active node for the whole
  stream: :meth:`LeaderQueries.confirm_source` asks that node's ``sys/leader`` after the last
  byte and raises :class:`~executor.errors.LeaderError` unless it is still the active node
  (``is_self``), with the SAME ``active_time`` and advertised address as before the request
  (a node that lost leadership mid-stream can still answer 200 with a complete archive);
  a failing ``sys/leader`` at that point is a LeaderError too (not confirmed = not taken);
* connection/TLS/timeouts while locating the active node -> LeaderError; a sealed active
  node, or one that turned standby, is a LeaderError too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from executor.errors import LeaderError
from executor.log import get_logger
from executor.openbao.transport import Transport, errors_text

log = get_logger("executor.openbao")


@dataclass(frozen=True)
class Leader:
    """The active node: the API base URL we reach it at, the OpenBao version it runs, and
    what it said of itself in ``sys/leader`` (``active_time``: when it last became active;
    ``advertised``: its ``leader_address``, i.e. its api_addr, which may differ from
    ``address`` behind a proxy or Service). ``ha_enabled=False``: no leadership to lose."""

    address: str
    version: str | None
    active_time: str | None = None
    advertised: str | None = None
    ha_enabled: bool = True


class LeaderQueries(Transport):
    """``sys/leader`` and ``sys/health`` questions about who is active (see module)."""

    async def find_leader(self) -> Leader:
        """The active node's address and version; LeaderError if there is none usable."""
        addr = self.settings.addr
        status, data, payload = await self._json(
            "GET",
            self._url(addr, "sys/leader"),
            doing="asking OpenBao for its leader",
            token=False,
        )
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"sys/leader at {addr} answered HTTP {status}: {errors_text(payload)}"
                + (" (sealed?)" if status == 503 else "")
            )
        ha_enabled = data.get("ha_enabled", True) is not False
        if data.get("is_self") or not ha_enabled:
            leader = addr
            state: dict[str, Any] = data
        else:
            found = data.get("leader_address")
            if not isinstance(found, str) or not found:
                raise LeaderError(f"OpenBao at {addr} knows no active node (no leader elected)")
            leader = found.rstrip("/")
            # active_time is only meaningful from the active node itself: ask it.
            state = await self._self_state(
                leader, doing=f"asking {leader} (named active by {addr}) for its own leader state"
            )
        active_time = state.get("active_time")
        advertised = state.get("leader_address")
        health = await self._health(leader)
        if health.get("sealed"):
            raise LeaderError(f"the active node {leader} is sealed")
        if health.get("standby"):
            raise LeaderError(f"{leader} is a standby now: leadership is changing, retry")
        version = health.get("version")
        result = Leader(
            address=leader,
            version=version if isinstance(version, str) else None,
            active_time=active_time if isinstance(active_time, str) else None,
            advertised=advertised.rstrip("/")
            if isinstance(advertised, str) and advertised
            else None,
            ha_enabled=ha_enabled,
        )
        log.info(
            "active node found",
            leader=result.address,
            advertised=result.advertised,
            active_time=result.active_time,
            version=result.version,
        )
        return result

    async def _self_state(self, base: str, *, doing: str) -> dict[str, Any]:
        """``sys/leader`` of ``base``, which must say it is the active node itself."""
        status, data, payload = await self._json(
            "GET",
            self._url(base, "sys/leader"),
            doing=doing,
            token=False,
        )
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"sys/leader at {base} answered HTTP {status}: {errors_text(payload)}"
                + (" (sealed?)" if status == 503 else "")
            )
        if data.get("ha_enabled", True) is not False and not data.get("is_self"):
            raise LeaderError(
                f"{base} is not the active node (it names "
                f"{data.get('leader_address') or 'no leader'}): leadership is "
                "changing, retry"
            )
        return data

    async def confirm_source(self, source: Leader) -> None:
        """Raise LeaderError unless ``source`` is STILL the active node it was when the
        snapshot was requested: ``is_self``, same ``active_time``, same advertised address.

        Called after the last byte and before anything is committed: a node that lost
        leadership while streaming can answer 200 with a complete archive of its own state.
        """
        if not source.ha_enabled:
            return
        was = source.advertised or source.address
        since = source.active_time or "unknown"
        prefix = (
            f"cannot confirm that {was} (active since {since}) was still the active node "
            "when the snapshot ended, so the snapshot is not used"
        )
        try:
            status, data, payload = await self._json(
                "GET",
                self._url(source.address, "sys/leader"),
                doing="asking the node that served the snapshot for its leader state",
                token=False,
            )
        except LeaderError as exc:
            raise LeaderError(f"{prefix}: {exc.message}") from None
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"{prefix}: sys/leader at {source.address} answered HTTP {status}: "
                f"{errors_text(payload)}" + (" (sealed?)" if status == 503 else "")
            )
        now_addr = data.get("leader_address")
        now_addr = now_addr.rstrip("/") if isinstance(now_addr, str) and now_addr else None
        now_time = data.get("active_time") if data.get("is_self") else None
        moved = (
            not data.get("is_self")
            or source.active_time is None
            or now_time != source.active_time
            or (source.advertised is not None and now_addr != source.advertised)
        )
        if not moved:
            log.info("snapshot source confirmed active", node=was, active_time=since)
            return
        if not data.get("is_self") and now_addr is None:
            now_addr = await self._next_leader(source.address)
        if data.get("is_self"):
            now = f"{now_addr or source.address} (active since {now_time or 'unknown'})"
        else:
            now = now_addr or "not known yet (election in progress)"
        raise LeaderError(
            f"leadership moved during the snapshot: the snapshot came from {was} "
            f"(active since {since} when it was requested), and the active node is now "
            f"{now}; the snapshot is not used"
        )

    async def _next_leader(self, base: str, *, wait: float = 3.0) -> str | None:
        """The leader ``base`` names within ``wait`` seconds (for the error message only)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            await asyncio.sleep(0.2)
            try:
                status, data, _ = await self._json(
                    "GET",
                    self._url(base, "sys/leader"),
                    doing="asking who leads now",
                    token=False,
                )
            except LeaderError:
                return None
            found = data.get("leader_address") if isinstance(data, dict) else None
            if status == 200 and isinstance(found, str) and found:
                return found.rstrip("/")
        return None

    async def _health(self, base: str) -> dict[str, Any]:
        status, data, payload = await self._json(
            "GET",
            self._url(
                base, "sys/health?standbyok=true&perfstandbyok=true&sealedcode=299&uninitcode=298"
            ),
            doing=f"checking the health of {base}",
            token=False,
        )
        if not isinstance(data, dict):
            raise LeaderError(
                f"sys/health at {base} answered HTTP {status}: {errors_text(payload)}"
            )
        return data
