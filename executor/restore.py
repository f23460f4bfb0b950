"""``python -m executor restore``: verify a stored snapshot, then stream it into OpenBao.

Guarantees:

* a snapshot without a readable manifest, or whose object size differs from it, is refused
  (verification error) before OpenBao is touched;
* PASS 1 streams the object once through :class:`~executor.archive.SnapshotVerifier`: it must
  be a complete archive whose SHA-256 and size equal the manifest's. Nothing is sent to OpenBao
  before this pass succeeded;
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

import asyncio
import hashlib
from collections.abc import AsyncIterator

from executor.archive import SnapshotVerifier
from executor.contract import Config
from executor.errors import ExecutorError, ObjectNotFound, StorageError, VerificationError
from executor.layout import Manifest, manifest_key
from executor.log import get_logger
from executor.openbao import OpenBao
from executor.progress import Progress
from executor.storage import open_sink
from executor.storage.base import SnapshotSink

log = get_logger("executor.restore")

MANIFEST_LIMIT = 64 << 10


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
            progress.enter("reading the manifest")
            manifest, version = await _manifest_and_version(sink=sink, key=key)
            progress.size = manifest.size
            progress.sha256 = manifest.sha256
            progress.openbao_version = manifest.openbaoVersion
            progress.raft_index = manifest.raftIndex
            progress.raft_term = manifest.raftTerm
            progress.manifest_key = manifest_key(key)

            progress.enter("verifying the stored snapshot")
            await _verify_pass(sink=sink, key=key, version=version, manifest=manifest)

            progress.enter("locating the active OpenBao node")
            leader = await bao.find_leader()
            progress.enter("logging in to OpenBao")
            await bao.login()
            progress.enter("uploading the snapshot to OpenBao")
            body = _GuardedBody(sink=sink, key=key, version=version, manifest=manifest)
            await bao.restore(
                leader=leader, body=body.chunks, size=manifest.size,
                force=config.restore.force, body_error=lambda: body.error,
            )
            bao.forget_token()
            log.info("OpenBao accepted the restore", key=key, force=config.restore.force)
            progress.enter("waiting for OpenBao after the restore")
            state = await bao.wait_applied(leader=leader, timeout=config.restore.apply_timeout)
            if state == "sealed":
                log.info("OpenBao applied the restore and sealed itself: unseal it with the "
                         "keys of the cluster the snapshot came from")
            elif state == "active":
                log.info("OpenBao applied the restore and is active")
            else:
                log.warning("could not observe OpenBao applying the restore within "
                            "OBB_RESTORE_APPLY_TIMEOUT; it accepted the snapshot (204)",
                            timeout=config.restore.apply_timeout)


async def _manifest_and_version(*, sink: SnapshotSink, key: str) -> tuple[Manifest, str | None]:
    mkey = manifest_key(key)
    try:
        raw = await sink.read_small(key=mkey, limit=MANIFEST_LIMIT)
    except ObjectNotFound:
        try:
            await sink.head(key=key)
        except ObjectNotFound:
            raise ObjectNotFound(f"the snapshot {key} does not exist") from None
        raise VerificationError(
            f"{key} has no manifest ({mkey}): refusing to restore a snapshot that cannot be "
            "verified"
        ) from None
    try:
        manifest = Manifest.from_json(raw)
    except ValueError as exc:
        raise VerificationError(f"the manifest {mkey} is invalid: {exc}") from None
    if manifest.key != key:
        raise VerificationError(f"the manifest {mkey} describes {manifest.key!r}, not {key!r}")
    try:
        info = await sink.head(key=key)
    except ObjectNotFound:
        raise ObjectNotFound(f"the snapshot {key} does not exist") from None
    if info.size != manifest.size:
        raise VerificationError(
            f"{key} has {info.size} bytes but its manifest says {manifest.size}"
        )
    return manifest, info.version


async def _verify_pass(
    *, sink: SnapshotSink, key: str, version: str | None, manifest: Manifest
) -> None:
    verifier = SnapshotVerifier()
    async with sink.get(key=key, version=version) as chunks:
        async for chunk in chunks:
            await asyncio.to_thread(verifier.feed, chunk)
            if verifier.size > manifest.size:
                raise VerificationError(f"{key} is longer than its manifest's {manifest.size}")
    verified = verifier.finish()
    if (verified.sha256, verified.size) != (manifest.sha256, manifest.size):
        raise VerificationError(
            f"{key} does not match its manifest: sha256 {verified.sha256} / {verified.size} "
            f"bytes, manifest {manifest.sha256} / {manifest.size} bytes"
        )
    log.info("stored snapshot verified", key=key, sha256=verified.sha256, size=verified.size)


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
