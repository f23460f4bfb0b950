"""``python -m executor restore``: verify a stored snapshot, then stream it into OpenBao.

Guarantees:

* PASS 1 is :func:`executor.verify.verify_stored`, the whole of ``python -m executor verify``:
  a snapshot without a readable manifest, or whose object size differs from it, is refused
  (verification error), then the object is streamed once through
  :class:`~executor.archive.SnapshotVerifier`: it must be a complete archive whose SHA-256 and
  size equal the manifest's. Nothing is sent to OpenBao before this pass succeeded;
* PASS 2 streams the same object again, pinned to the version seen in pass 1 (ETag /
  generation precondition), into ``POST sys/storage/raft/snapshot`` (or ``snapshot-force`` with
  ``OBB_RESTORE_FORCE``) on the active node, hashing as it goes and HOLDING BACK the last chunk
  until the hash of everything is known: on any mismatch the upload stops short of its
  Content-Length, so OpenBao receives an incomplete body and applies nothing;
* memory stays bounded (one chunk held, no temp file): the price is reading the object twice;
* the run succeeds once OpenBao accepted the verified snapshot (204). OpenBao applies it
  asynchronously, so the executor then watches sys/leader for up to
  ``OBB_RESTORE_APPLY_TIMEOUT`` until the node is active again with a new ``active_time``
  (same cluster) or sealed (a forced restore of another cluster's snapshot: unseal with that
  cluster's keys), and logs which; not observing either is logged, not a failure. Our token
  is not revoked after a successful restore: the restored token store no longer knows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from executor.contract import Config
from executor.errors import ExecutorError, StorageError, VerificationError
from executor.layout import Manifest
from executor.log import get_logger
from executor.openbao import Leader, OpenBao
from executor.progress import Progress
from executor.storage import open_sink
from executor.storage.base import SnapshotSink
from executor.verify import StoredSnapshot, verify_stored

log = get_logger("executor.restore")


async def run_restore(*, config: Config, progress: Progress) -> None:
    assert config.openbao is not None
    assert config.restore is not None
    key = config.restore.key
    progress.key = key
    async with OpenBao.open(settings=config.openbao) as bao:
        progress.enter("locating the active OpenBao node")
        await bao.find_leader()  # fail fast before a long verification pass
        progress.enter("opening the storage")
        async with open_sink(settings=config.storage) as sink:
            stored = await verify_stored(objects=sink, key=key, progress=progress)

            progress.enter("locating the active OpenBao node")
            leader = await bao.find_leader()
            progress.enter("logging in to OpenBao")
            await bao.login()
            progress.enter("uploading the snapshot to OpenBao")
            await upload_verified(
                bao=bao,
                leader=leader,
                sink=sink,
                key=key,
                stored=stored,
                force=config.restore.force,
            )
            bao.forget_token()
            log.info("OpenBao accepted the restore", key=key, force=config.restore.force)
            progress.enter("waiting for OpenBao after the restore")
            state = await bao.wait_applied(leader=leader, timeout=config.restore.apply_timeout)
            if state == "sealed":
                log.info(
                    "OpenBao applied the restore and sealed itself: unseal it with the "
                    "keys of the cluster the snapshot came from"
                )
            elif state == "active":
                log.info("OpenBao applied the restore and is active")
            else:
                log.warning(
                    "could not observe OpenBao applying the restore within "
                    "OBB_RESTORE_APPLY_TIMEOUT; it accepted the snapshot (204)",
                    timeout=config.restore.apply_timeout,
                )


async def upload_verified(
    *,
    bao: OpenBao,
    leader: Leader,
    sink: SnapshotSink,
    key: str,
    stored: StoredSnapshot,
    force: bool,
) -> None:
    """Pass 2: stream the object verified by pass 1 (pinned to that version) into OpenBao's
    restore endpoint, the last chunk held back until size and SHA-256 match the manifest (used
    by restore and by the drill)."""
    body = _GuardedBody(sink=sink, key=key, version=stored.version, manifest=stored.manifest)
    await bao.restore(
        leader=leader,
        body=body.chunks,
        size=stored.manifest.size,
        force=force,
        body_error=lambda: body.error,
    )


class _GuardedBody:
    """Pass 2: the object's bytes, the last chunk released only if everything matches."""

    def __init__(
        self, *, sink: SnapshotSink, key: str, version: str | None, manifest: Manifest
    ) -> None:
        self._sink = sink
        self._key = key
        self._version = version
        self._manifest = manifest
        self.error: ExecutorError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            digest = hashlib.sha256()
            seen = 0
            held: bytes | None = None
            async with self._sink.get(key=self._key, version=self._version) as chunks:
                async for chunk in chunks:
                    if held is not None:
                        yield held
                    digest.update(chunk)
                    seen += len(chunk)
                    if seen > self._manifest.size:
                        raise VerificationError(
                            f"{self._key} grew beyond {self._manifest.size} bytes during the "
                            "restore upload"
                        )
                    held = chunk
            if seen != self._manifest.size or digest.hexdigest() != self._manifest.sha256:
                raise VerificationError(
                    f"{self._key} changed between verification and upload "
                    f"({seen} bytes, sha256 {digest.hexdigest()}): restore withheld"
                )
            if held is not None:
                yield held
        except ExecutorError as exc:
            self.error = exc
            raise
        except Exception as exc:  # surfaced through aiohttp as a connection error otherwise
            self.error = StorageError(f"reading {self._key}: {exc.__class__.__name__}: {exc}")
            raise
