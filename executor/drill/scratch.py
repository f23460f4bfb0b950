"""The drill's scratch OpenBao: waiting for it, initialising it, unsealing the restored copy.

Guarantees:

* the only OpenBao address used is ``OBB_DRILL_ADDR`` (the contract accepts it only on a
  loopback host), and the scratch server must be UNinitialised (an initialised one is refused:
  ``configuration``, :func:`init_scratch`);
* (b) the scratch server must answer ``sys/health`` within ``OBB_DRILL_START_TIMEOUT``
  (:func:`wait_health`, the same deadline for every later wait);
  (c) it is initialised according to its ``sys/seal-status`` type: Shamir with 1 share,
  threshold 1, then unsealed; an auto-unseal seal (the live cluster's seal stanza, given to
  the server script as ``DRILL_SEAL_CONFIG``) with 1 recovery share, threshold 1, and it
  unseals itself (key and root token kept in memory only, registered as secrets); either way
  it must become active. ``OBB_DRILL_AUTO_UNSEAL=true`` with a Shamir scratch server is a
  ``configuration`` error before anything is written (the seal stanza is missing); an
  auto-unseal scratch server without it is followed, with a warning;
* (e) auto-unseal (:func:`wait_auto_unsealed`): the restored copy must unseal itself with the
  same seal and become active again within ``OBB_DRILL_START_TIMEOUT`` (the restore is seen as
  applied once the node was sealed since the upload, or reports another cluster_id than the
  scratch cluster's), else a ``verification`` error (the seal cannot decrypt the snapshot's
  keyring). Shamir (:func:`unseal_restored`): the restored copy is unsealed with the LIVE
  cluster's keys from ``OBB_UNSEAL_KEYS_FILE`` and must become active; a refused key, or still
  sealed after all keys, is a ``verification`` error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from executor import secrets
from executor.contract import DrillSettings
from executor.errors import ConfigurationError, LeaderError, SnapshotError, VerificationError
from executor.log import get_logger
from executor.openbao import Leader, OpenBao

log = get_logger("executor.drill")

Ready = Callable[[int, Any], bool]


async def wait_health(bao: OpenBao, drill: DrillSettings, what: str, ready: Ready) -> Any:
    """Poll the scratch server's sys/health until ``ready(status, body)``; its body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drill.start_timeout
    last = "no answer yet"
    while True:
        try:
            status, data, text = await bao.call(
                "GET",
                "sys/health",
                doing="asking the scratch OpenBao for its health",
                token=False,
            )
        except LeaderError as exc:
            last = exc.message
        else:
            if ready(status, data):
                return data
            last = f"HTTP {status}" + (f": {text}" if status >= 400 and text else "")
        if loop.time() > deadline:
            raise LeaderError(
                f"the scratch OpenBao at {drill.addr} did not {what} within "
                f"{drill.start_timeout:g}s (OBB_DRILL_START_TIMEOUT; last: {last})"
            )
        await asyncio.sleep(0.25)


@dataclass(frozen=True)
class Scratch:
    """The initialised, active scratch server, before the restore."""

    leader: Leader
    auto_unseal: bool  # the scratch server's seal is not Shamir: it unseals itself
    cluster_id: str | None  # the scratch cluster's own id, before the restore


async def _seal_type(bao: OpenBao, drill: DrillSettings) -> str:
    status, data, text = await bao.call(
        "GET", "sys/seal-status", doing="asking the scratch OpenBao for its seal", token=False
    )
    kind = data.get("type") if isinstance(data, dict) else None
    if status != 200 or not isinstance(kind, str) or not kind:
        raise LeaderError(f"sys/seal-status at {drill.addr} answered HTTP {status}: {text}")
    return kind


async def wait_auto_unsealed(bao: OpenBao, drill: DrillSettings, scratch: Scratch) -> None:
    """After a snapshot-force restore into an auto-unseal scratch server: wait until the
    restore was applied (the node was seen sealed, or reports another cluster_id than the
    scratch cluster's) and the node is active again, unsealed by its seal."""
    saw_sealed = False

    def ready(status: int, body: Any) -> bool:
        nonlocal saw_sealed
        if status in (503, 501) or (isinstance(body, dict) and body.get("sealed") is True):
            saw_sealed = True
            return False
        if status != 200:
            return False
        cluster_id = body.get("cluster_id") if isinstance(body, dict) else None
        return saw_sealed or (
            scratch.cluster_id is not None
            and isinstance(cluster_id, str)
            and cluster_id != scratch.cluster_id
        )

    try:
        health = await wait_health(
            bao, drill, "unseal itself and become active after the restore", ready
        )
    except LeaderError as exc:
        raise VerificationError(
            exc.message
            + (
                " (sealed since the restore: can the seal decrypt the live cluster's keyring, "
                "is it the live cluster's seal configuration?)"
                if saw_sealed
                else ""
            )
        ) from None
    cluster_id = health.get("cluster_id") if isinstance(health, dict) else None
    log.info(
        "the restore was applied and the node unsealed itself",
        seen_sealed=saw_sealed,
        cluster_id_changed=cluster_id != scratch.cluster_id,
    )


async def init_scratch(bao: OpenBao, drill: DrillSettings) -> Scratch:
    """Initialise the empty scratch server for its seal type (Shamir: 1/1 and unseal;
    auto-unseal: 1/1 recovery shares, it unseals itself); it must become active."""
    status, data, text = await bao.call(
        "GET", "sys/init", doing="asking the scratch OpenBao whether it is initialised", token=False
    )
    if status != 200 or not isinstance(data, dict):
        raise LeaderError(f"sys/init at {drill.addr} answered HTTP {status}: {text}")
    if data.get("initialized"):
        raise ConfigurationError(
            f"the OpenBao at {drill.addr} is already initialised: a drill restores only into "
            "the empty scratch server of its own pod"
        )
    seal_type = await _seal_type(bao, drill)
    auto_unseal = seal_type != "shamir"
    if drill.auto_unseal and not auto_unseal:
        raise ConfigurationError(
            f"OBB_DRILL_AUTO_UNSEAL is true but the scratch OpenBao at {drill.addr} has a "
            "Shamir seal: give its server the live cluster's seal stanza (DRILL_SEAL_CONFIG)"
        )
    if auto_unseal and not drill.auto_unseal:
        log.warning(
            "the scratch OpenBao has an auto-unseal seal although OBB_DRILL_AUTO_UNSEAL is "
            "not true: drilling as for an auto-unseal cluster",
            seal_type=seal_type,
        )
    body = (
        {"recovery_shares": 1, "recovery_threshold": 1}
        if auto_unseal
        else {"secret_shares": 1, "secret_threshold": 1}
    )
    status, data, text = await bao.call(
        "PUT", "sys/init", body=body, doing="initialising the scratch OpenBao", token=False
    )
    if isinstance(data, dict):
        for name in ("keys_base64", "keys", "recovery_keys_base64", "recovery_keys"):
            for value in data.get(name) or ():
                if isinstance(value, str):
                    secrets.register(value)
    keys = data.get("keys_base64") or data.get("keys") if isinstance(data, dict) else None
    root = data.get("root_token") if isinstance(data, dict) else None
    if (
        status != 200
        or not isinstance(root, str)
        or (not auto_unseal and (not isinstance(keys, list) or not keys))
    ):
        raise LeaderError(f"initialising the scratch OpenBao answered HTTP {status}: {text}")
    bao.use_token(root)  # registers it as a secret
    if not auto_unseal:
        assert isinstance(keys, list)
        await _unseal(bao, drill, [str(keys[0])], who="the scratch OpenBao", error=LeaderError)
    health = await wait_health(
        bao, drill, "become active after init", lambda status, _: status == 200
    )
    version = health.get("version") if isinstance(health, dict) else None
    cluster_id = health.get("cluster_id") if isinstance(health, dict) else None
    log.info(
        "scratch OpenBao initialised and active",
        addr=drill.addr,
        version=version,
        seal_type=seal_type,
    )
    return Scratch(
        leader=Leader(
            address=drill.addr,
            version=version if isinstance(version, str) else None,
            ha_enabled=False,
        ),
        auto_unseal=auto_unseal,
        cluster_id=cluster_id if isinstance(cluster_id, str) else None,
    )


async def unseal_restored(bao: OpenBao, drill: DrillSettings) -> None:
    await _unseal(
        bao, drill, list(drill.unseal_keys), who="the restored copy", error=VerificationError
    )
    await wait_health(bao, drill, "become active after the unseal", lambda status, _: status == 200)


async def _unseal(
    bao: OpenBao,
    drill: DrillSettings,
    keys: list[str],
    *,
    who: str,
    error: type[LeaderError] | type[VerificationError] | type[SnapshotError],
) -> None:
    """Submit ``keys`` to sys/unseal until the node says it is unsealed."""
    answer: Any = None
    for i, key in enumerate(keys, 1):
        status, answer, text = await bao.call(
            "PUT",
            "sys/unseal",
            body={"key": key},
            doing=f"unsealing {who}",
            token=False,
        )
        if status != 200 or not isinstance(answer, dict):
            raise error(
                f"{who} refused unseal key {i} of {len(keys)}: HTTP {status}: {text}"
                + (
                    " (are these the live cluster's current unseal keys?)"
                    if error is VerificationError
                    else ""
                )
            )
        if answer.get("sealed") is False:
            return
    threshold = answer.get("t") if isinstance(answer, dict) else None
    raise error(
        f"{who} is still sealed after {len(keys)} unseal key(s) (threshold "
        f"{threshold}): OBB_UNSEAL_KEYS_FILE holds too few keys"
    )
