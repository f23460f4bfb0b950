"""Preflight: is it safe to launch a backup of this OpenBao cluster now?

Guarantees:

* :func:`assess` is pure: given what the probe saw, it says READY or BLOCKED with a reason
  (CamelCase, for conditions and events) and a short human message. A backup is launched
  only on READY: reachable, initialised, unsealed, with an active node;
* :func:`probe_openbao` only reads unauthenticated endpoints (``sys/health``,
  ``sys/leader``): the controller holds no OpenBao credentials. It never raises for a network
  or HTTP problem; it reports it (``reachable=False`` with the error class), so a flaky
  cluster blocks the backup instead of crashing the reconcile;
* TLS is verified against the given CA bundle or the system store; it is never disabled;
* the operation lock (another restore/upgrade in progress) is checked separately, by
  :mod:`controller.backup.oplock`, because it needs the Lease and the Job caches.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp


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


def _ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    return ctx


async def probe_openbao(*, address: str, ca_pem: str | None, timeout: float = 5.0) -> HealthProbe:
    """Read ``sys/health`` and ``sys/leader`` of the OpenBao at ``address``."""
    base = address.rstrip("/")
    connector = aiohttp.TCPConnector(ssl=_ssl_context(ca_pem))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=client_timeout, trust_env=False
        ) as http:
            # Every state answers 200 so the body is always JSON we can read.
            async with http.get(
                f"{base}/v1/sys/health",
                params={
                    "standbyok": "true",
                    "perfstandbyok": "true",
                    "sealedcode": "200",
                    "uninitcode": "200",
                    "drsecondarycode": "200",
                },
            ) as resp:
                status = resp.status
                health: dict[str, Any] = await resp.json(content_type=None)
            leader: dict[str, Any] = {}
            if health.get("initialized") and not health.get("sealed"):
                async with http.get(f"{base}/v1/sys/leader") as resp:
                    if resp.status == 200:
                        leader = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return HealthProbe(reachable=False, error=_describe(exc))
    return HealthProbe(
        reachable=True,
        http_status=status,
        initialized=bool(health.get("initialized")),
        sealed=bool(health.get("sealed", True)),
        standby=bool(health.get("standby")),
        version=str(health.get("version") or ""),
        leader_address=str(leader.get("leader_address") or ""),
        ha_enabled=bool(leader.get("ha_enabled")),
        is_self=bool(leader.get("is_self")),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate verification failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.__class__.__name__})"
    if isinstance(exc, ValueError):
        return "answer is not JSON"
    return exc.__class__.__name__
