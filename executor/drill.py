"""``python -m executor drill``: prove a stored backup comes back, in a scratch OpenBao.

The drill Job's pod runs two containers sharing an emptyDir: an OpenBao server started by
:data:`SERVER_SCRIPT` on 127.0.0.1 (``OBB_DRILL_ADDR``), and this executor.

Guarantees:

* nothing here talks to the live cluster: the only OpenBao address used is
  ``OBB_DRILL_ADDR``, which the contract accepts only on a loopback host, and the scratch
  server must be UNinitialised (an initialised one is refused: ``configuration``);
* (a) the object is verified against its manifest first (:func:`executor.verify.verify_stored`,
  the whole of ``verify`` mode); a tampered object fails here and the scratch server is never
  initialised or written to;
* (b) the scratch server must answer ``sys/health`` within ``OBB_DRILL_START_TIMEOUT``;
  (c) it is initialised (1 share, threshold 1; key and root token kept in memory only,
  registered as secrets) and unsealed, and must become active;
* (d) the verified object is streamed into ``sys/storage/raft/snapshot-force`` with the init
  root token by restore's pass 2 (:func:`executor.restore.upload_verified`: pinned to the
  verified object version, the last chunk held back until the hash matches); the node must
  then seal itself (it now carries the snapshot's keyring);
* (e) with ``OBB_UNSEAL_KEYS_FILE`` the restored copy is unsealed with the LIVE cluster's keys
  and must become active; a refused key, or still sealed after all keys, is a
  ``verification`` error. Without keys the run stops here and SUCCEEDS with
  ``drill.partial = true``: archive, size, sha256 and Raft index were checked, the snapshot
  was accepted by OpenBao, but the data was not unsealed;
* (f) if the manifest has a freshness marker, the executor logs in to the restored copy with
  the configured auth (its auth state is the live cluster's) and reads the marker path: it
  must equal the manifest's record, time and nonce, else a ``verification`` error whose
  message starts with ``marker mismatch:``;
* the report (mode ``drill``) carries the key, the manifest's facts, the manifest's ``marker``
  and ``drill`` = {unsealed, markerChecked, markerMatched, partial}, also when the run failed;
* ``OBB_DRILL_DONE_FILE`` is created by :mod:`executor.__main__` when the run ends, whatever
  happened, so the server container stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from executor.contract import DRILL_SERVER_SCRIPT, Config, DrillSettings
from executor.errors import ConfigurationError, LeaderError, SnapshotError, VerificationError
from executor.log import get_logger
from executor.marker import check_marker, read_marker
from executor.openbao import Leader, OpenBao
from executor.progress import Progress
from executor.report import DrillResult
from executor.restore import upload_verified
from executor.storage import open_sink
from executor.verify import verify_stored

__all__ = ["SERVER_SCRIPT", "run_drill"]

log = get_logger("executor.drill")

#: The scratch server container's ``sh -c`` script (env DRILL_DIR, DRILL_PORT, DRILL_DONE_FILE);
#: defined in :mod:`executor.contract` so the controller can import it from there.
SERVER_SCRIPT = DRILL_SERVER_SCRIPT

Ready = Callable[[int, Any], bool]


async def run_drill(*, config: Config, progress: Progress) -> None:
    assert config.openbao is not None
    assert config.drill is not None
    drill = config.drill
    progress.key = drill.key
    progress.drill = DrillResult()
    async with OpenBao.open(settings=config.openbao) as bao:
        progress.enter("opening the storage")
        async with open_sink(settings=config.storage) as sink:
            stored = await verify_stored(objects=sink, key=drill.key, progress=progress)
            marker = stored.manifest.marker
            progress.marker = marker

            progress.enter("starting the scratch OpenBao")
            await _wait_health(
                bao, drill, "answer sys/health", lambda status, _: status in (200, 429, 501, 503)
            )
            progress.enter("initialising the scratch OpenBao")
            scratch = await _init_scratch(bao, drill)

            progress.enter("uploading the snapshot to OpenBao")
            await upload_verified(
                bao=bao, leader=scratch, sink=sink, key=drill.key, stored=stored, force=True
            )
        log.info("the scratch OpenBao accepted the snapshot", key=drill.key)

        progress.enter("waiting for OpenBao after the restore")
        await _wait_health(
            bao, drill, "seal itself after the restore", lambda status, _: status == 503
        )
        if not drill.unseal_keys:
            progress.drill = replace(progress.drill, partial=True)
            log.warning(
                "PARTIAL drill: no OBB_UNSEAL_KEYS_FILE, so the restored copy stays "
                "sealed; archive, size, sha256 and Raft index were checked and "
                "OpenBao accepted the snapshot, the data was not read back",
                key=drill.key,
            )
            return

        progress.enter("unsealing the restored copy")
        await _unseal_restored(bao, drill)
        progress.drill = replace(progress.drill, unsealed=True)
        log.info("the restored copy unsealed with the live cluster's keys and is active")
        if marker is None:
            log.info("the manifest has no freshness marker: nothing to read back")
            return

        progress.enter("logging in to OpenBao")
        await bao.login()
        progress.enter("checking the freshness marker")
        found = await read_marker(bao=bao, marker=marker, timeout=drill.start_timeout)
        progress.drill = replace(progress.drill, marker_checked=True, marker_matched=False)
        check_marker(marker, found)
        progress.drill = replace(progress.drill, marker_matched=True)
        log.info(
            "the freshness marker in the restored copy matches the manifest",
            path=marker.path,
            record=marker.record,
            time=marker.time,
        )


async def _wait_health(bao: OpenBao, drill: DrillSettings, what: str, ready: Ready) -> Any:
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


async def _init_scratch(bao: OpenBao, drill: DrillSettings) -> Leader:
    """Initialise (1/1) and unseal the empty scratch server; it must become active."""
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
    status, data, text = await bao.call(
        "PUT",
        "sys/init",
        body={"secret_shares": 1, "secret_threshold": 1},
        doing="initialising the scratch OpenBao",
        token=False,
    )
    keys = data.get("keys_base64") or data.get("keys") if isinstance(data, dict) else None
    root = data.get("root_token") if isinstance(data, dict) else None
    if status != 200 or not isinstance(keys, list) or not keys or not isinstance(root, str):
        raise LeaderError(f"initialising the scratch OpenBao answered HTTP {status}: {text}")
    bao.use_token(root)  # registers it as a secret
    await _unseal(bao, drill, [str(keys[0])], who="the scratch OpenBao", error=LeaderError)
    health = await _wait_health(
        bao, drill, "become active after init", lambda status, _: status == 200
    )
    version = health.get("version") if isinstance(health, dict) else None
    log.info("scratch OpenBao initialised and active", addr=drill.addr, version=version)
    return Leader(
        address=drill.addr, version=version if isinstance(version, str) else None, ha_enabled=False
    )


async def _unseal_restored(bao: OpenBao, drill: DrillSettings) -> None:
    await _unseal(
        bao, drill, list(drill.unseal_keys), who="the restored copy", error=VerificationError
    )
    await _wait_health(
        bao, drill, "become active after the unseal", lambda status, _: status == 200
    )


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
