"""Preflight: is it safe to launch a backup of this OpenBao cluster now?

Guarantees:

* :func:`assess` is pure: given what the probe saw, it says READY or BLOCKED with a reason
  (CamelCase, for conditions and events) and a short human message. A backup is launched
  only on READY: reachable, initialised, unsealed, with an active node;
* what the probe saw arrives as a :class:`HealthProbe` (filled by
  :mod:`controller.backup.act.probe`, the I/O half);
* the operation lock (another restore/upgrade in progress) is checked separately, by
  :mod:`controller.backup.decide.oplock`, because it needs the Lease and the Job caches.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    READY = "Ready"
    BLOCKED = "Blocked"


@dataclass(frozen=True)
class HealthProbe:
    reachable: bool
    error: str = ""
    http_status: int = 0
    initialized: bool = False
    sealed: bool = True
    standby: bool = False
    leader_address: str = ""
    ha_enabled: bool = False
    is_self: bool = False
    version: str = ""
    raft_applied_index: int | None = None


@dataclass(frozen=True)
class Preflight:
    verdict: Verdict
    reason: str
    message: str


def assess(probe: HealthProbe) -> Preflight:
    if not probe.reachable:
        return Preflight(
            Verdict.BLOCKED,
            "OpenBaoUnreachable",
            f"OpenBao is not reachable: {probe.error or 'no answer'}",
        )
    if not probe.initialized:
        return Preflight(Verdict.BLOCKED, "OpenBaoNotInitialized", "OpenBao is not initialised")
    if probe.sealed:
        return Preflight(Verdict.BLOCKED, "OpenBaoSealed", "OpenBao is sealed")
    has_active = (not probe.standby) or bool(probe.leader_address) or probe.is_self
    if not has_active:
        return Preflight(Verdict.BLOCKED, "NoActiveNode", "OpenBao has no active node")
    return Preflight(Verdict.READY, "Ready", f"OpenBao {probe.version or ''} healthy".strip())
