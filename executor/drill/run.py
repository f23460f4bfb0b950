"""The drill, step by step: verify the object, restore it into the scratch OpenBao, read back.

Guarantees:

* nothing here talks to the live cluster: the only OpenBao address used is
  ``OBB_DRILL_ADDR``, which the contract accepts only on a loopback host, and the scratch
  server must be UNinitialised (an initialised one is refused: ``configuration``);
* (a) the object is verified against its manifest first (:func:`executor.verify.verify_stored`,
  the whole of ``verify`` mode); a tampered object fails here and the scratch server is never
  initialised or written to;
* (b), (c) the scratch server is waited for and initialised for its seal type
  (:mod:`executor.drill.scratch`);
* (d) the verified object is streamed into ``sys/storage/raft/snapshot-force`` with the init
  root token by restore's pass 2 (:func:`executor.restore.upload_verified`: pinned to the
  verified object version, the last chunk held back until the hash matches); the node must
  then seal itself (it now carries the snapshot's keyring);
* (e) an auto-unseal copy must unseal itself, a Shamir copy is unsealed with the live
  cluster's keys (:mod:`executor.drill.scratch`). Shamir without keys the run stops here and
  SUCCEEDS with ``drill.partial = true``: archive, size, sha256 and Raft index were checked,
  the snapshot was accepted by OpenBao, but the data was not unsealed;
* (f) if the manifest has a freshness marker, the executor logs in to the restored copy with
  the configured auth (its auth state is the live cluster's) and reads the marker path: it
  must equal the manifest's record, time and nonce, else a ``verification`` error whose
  message starts with ``marker mismatch:``;
* the report (mode ``drill``) carries the key, the manifest's facts, the manifest's ``marker``
  and ``drill`` = {unsealed, markerChecked, markerMatched, partial}, also when the run failed.
"""

from __future__ import annotations

from dataclasses import replace

from executor.contract import Config
from executor.drill.scratch import (
    init_scratch,
    unseal_restored,
    wait_auto_unsealed,
    wait_health,
)
from executor.log import get_logger
from executor.marker import check_marker, read_marker
from executor.openbao import OpenBao
from executor.progress import Progress
from executor.report import DrillResult
from executor.restore import upload_verified
from executor.storage import open_sink
from executor.verify import verify_stored

log = get_logger("executor.drill")


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
            await wait_health(
                bao, drill, "answer sys/health", lambda status, _: status in (200, 429, 501, 503)
            )
            progress.enter("initialising the scratch OpenBao")
            scratch = await init_scratch(bao, drill)

            progress.enter("uploading the snapshot to OpenBao")
            await upload_verified(
                bao=bao,
                leader=scratch.leader,
                sink=sink,
                key=drill.key,
                stored=stored,
                force=True,
            )
        log.info("the scratch OpenBao accepted the snapshot", key=drill.key)

        progress.enter("waiting for OpenBao after the restore")
        if scratch.auto_unseal:
            await wait_auto_unsealed(bao, drill, scratch)
            progress.drill = replace(progress.drill, unsealed=True)
            log.info("the restored copy unsealed itself with the live cluster's seal and is active")
        else:
            await wait_health(
                bao, drill, "seal itself after the restore", lambda status, _: status == 503
            )
        if not scratch.auto_unseal and not drill.unseal_keys:
            progress.drill = replace(progress.drill, partial=True)
            log.warning(
                "PARTIAL drill: no OBB_UNSEAL_KEYS_FILE, so the restored copy stays "
                "sealed; archive, size, sha256 and Raft index were checked and "
                "OpenBao accepted the snapshot, the data was not read back",
                key=drill.key,
            )
            return

        if not scratch.auto_unseal:
            progress.enter("unsealing the restored copy")
            await unseal_restored(bao, drill)
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
