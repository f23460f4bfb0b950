"""Reading OpenBao's health for the preflight: the I/O half of :mod:`..decide.preflight`.

Guarantees:

* :func:`probe_openbao` only reads unauthenticated endpoints (``sys/health``,
  ``sys/leader``): the controller holds no OpenBao credentials. It never raises for a network
  or HTTP problem; it reports it (``reachable=False`` with the error class), so a flaky
  cluster blocks the backup instead of crashing the reconcile;
* redirects are never followed: the probe reads only the address the spec names (which
  :mod:`controller.backup.decide.addresses` keeps off link-local and metadata addresses), so
  an answer redirecting elsewhere (e.g. to 169.254.169.254) is reported, not fetched;
* TLS is verified against the given CA bundle or the system store; it is never disabled.
  Contexts are built once per CA bundle and cached (building one costs ~20-30 ms of CPU;
  ``tests/backup/test_probe_tls.py``), and plain ``http://`` addresses build none; a CA bundle
  that is not PEM blocks the backup as unreachable with a message naming the ConfigMap
  reference, never an exception.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any

import aiohttp

from controller.backup.decide.preflight import HealthProbe

PROBE_TIMEOUT_SECONDS = 5.0
"""Total time for both reads: long enough for a loaded OpenBao, short enough that a dead one
blocks a reconcile worker only briefly."""


BAD_CA = "the CA bundle (spec.tls.caConfigMapRef) holds no valid PEM certificate"


@functools.lru_cache(maxsize=64)
def _ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    return ctx


async def probe_openbao(
    *, address: str, ca_pem: str | None, timeout: float = PROBE_TIMEOUT_SECONDS
) -> HealthProbe:
    """Read ``sys/health`` and ``sys/leader`` of the OpenBao at ``address``."""
    base = address.rstrip("/")
    try:
        tls: ssl.SSLContext | bool = _ssl_context(ca_pem) if base.startswith("https") else False
    except (ssl.SSLError, ValueError):
        return HealthProbe(reachable=False, error=BAD_CA)
    connector = aiohttp.TCPConnector(ssl=tls)
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
                allow_redirects=False,
            ) as resp:
                status = resp.status
                health: dict[str, Any] = await resp.json(content_type=None)
            leader: dict[str, Any] = {}
            if health.get("initialized") and not health.get("sealed"):
                async with http.get(f"{base}/v1/sys/leader", allow_redirects=False) as resp:
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
        raft_applied_index=_int(leader.get("raft_applied_index")),
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
