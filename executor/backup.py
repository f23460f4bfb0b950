"""``python -m executor backup``: stream a snapshot from the active node into the bucket.

Guarantees:

* the snapshot is taken from the ACTIVE node and streamed straight into a storage upload
  while :class:`~executor.archive.SnapshotVerifier` hashes and parses it: memory stays bounded
  by the upload's parts in flight, whatever the snapshot size;
* the upload is committed only after the verifier proved the archive complete and consistent
  AND the node that served it confirmed, after the last byte, that it is still the active node
  with the ``active_time`` it had before the request (:meth:`OpenBao.confirm_source`; else a
  ``leader`` error: leadership moved during the snapshot, or could not be confirmed);
  on ANY failure before that (OpenBao error or disconnect, truncated/corrupt archive, leader
  change, storage error, deadline, SIGTERM) the upload is aborted: nothing appears at the key;
* the manifest (:class:`~executor.layout.Manifest`) is written after the snapshot object; if
  it cannot be written, the snapshot object is deleted again (a snapshot without manifest is
  not a backup) and the run fails with a storage error that says whether that delete worked;
* before it begins uploading, a backup removes what killed runs of the SAME cluster left
  behind (no ``abort`` runs on SIGKILL, node loss or OOM): unfinished uploads under the
  cluster's prefix (:func:`executor.layout.cluster_prefix`) that started before this run
  (:meth:`~executor.storage.base.SnapshotSink.clean_abandoned`; S3 multipart uploads, Azure
  uncommitted-only blobs; GCS sessions cannot be listed). The backup holds the cluster's
  operation lock, so no other upload of this cluster is running; nothing outside the prefix
  is ever considered. The cleanup is bounded (:data:`CLEANUP_BUDGET` seconds) and NEVER fails
  the backup: an error is logged and reported in the report's ``cleaned.error``; what was
  removed is reported in ``cleaned`` (:class:`~executor.report.Cleaned`);
* the login token is revoked at the end, success or not (static tokens are left alone);
* with ``OBB_MARKER_PATH`` the freshness marker (:mod:`executor.marker`) is written with our
  token before the upload begins and the snapshot is requested, and recorded in the manifest
  and the report; if it cannot be written the run fails (``auth`` for 403, else
  ``snapshot``) before anything was uploaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import traceback
import uuid

from executor import __version__
from executor.archive import SnapshotVerifier, VerifiedSnapshot
from executor.contract import Config
from executor.errors import ExecutorError, StorageError
from executor.layout import (
    Manifest,
    Marker,
    cluster_prefix,
    manifest_key,
    rfc3339,
    snapshot_key,
)
from executor.log import get_logger
from executor.marker import new_marker, write_marker
from executor.openbao import Leader, OpenBao
from executor.progress import Progress
from executor.report import PROGRESS_EVENT, PROGRESS_INTERVAL, STREAMED_EVENT, Cleaned
from executor.secrets import scrub
from executor.storage import open_sink
from executor.storage.base import CleanupResult, SnapshotSink, Upload

log = get_logger("executor.backup")

#: Seconds the removal of abandoned uploads may take before the backup goes on without it.
CLEANUP_BUDGET = 60.0
#: Snapshot bytes handed to the verifier's worker thread at once: per 1 MiB chunk the thread
#: round trips cost more CPU than they saved (profile: the GIL hand-over in the queue put);
#: larger batches delay the detection of a corrupt stream and keep more chunks referenced.
VERIFY_BATCH = 2 << 20


async def run_backup(*, config: Config, progress: Progress) -> None:
    assert config.openbao is not None
    assert config.backup is not None
    started = dt.datetime.now(dt.UTC)
    async with OpenBao.open(settings=config.openbao) as bao:
        progress.enter("locating the active OpenBao node")
        leader = await bao.find_leader()
        progress.openbao_version = leader.version
        progress.enter("logging in to OpenBao")
        await bao.login()
        progress.enter("opening the storage")
        async with open_sink(settings=config.storage) as sink:
            await _backup(
                config=config, progress=progress, bao=bao, leader=leader, sink=sink, started=started
            )


async def _backup(
    *,
    config: Config,
    progress: Progress,
    bao: OpenBao,
    leader: Leader,
    sink: SnapshotSink,
    started: dt.datetime,
) -> None:
    assert config.backup is not None
    await clean_abandoned(
        sink=sink,
        progress=progress,
        before=started,
        prefix=cluster_prefix(
            path_prefix=config.storage.path_prefix,
            namespace=config.cluster.namespace,
            cluster=config.cluster.name,
        ),
    )
    taken_at = dt.datetime.now(dt.UTC)
    key = snapshot_key(
        path_prefix=config.storage.path_prefix,
        namespace=config.cluster.namespace,
        cluster=config.cluster.name,
        taken_at=taken_at,
        suffix=uuid.uuid4().hex[:8],
    )
    progress.key = key
    marker = await _write_marker(
        config=config,
        progress=progress,
        bao=bao,
        leader=leader,
        record=config.backup.backup_name or key,
    )
    metadata = {
        "obb-namespace": config.cluster.namespace,
        "obb-cluster": config.cluster.name,
        "obb-cluster-uid": config.cluster.uid or "",
        "obb-trigger": config.backup.trigger,
        "obb-taken-at": rfc3339(taken_at),
        "obb-executor-version": __version__,
    }
    progress.enter("streaming the snapshot")
    upload = await sink.begin(key=key, metadata=metadata)
    try:
        verified, source = await _transfer(bao=bao, leader=leader, upload=upload)
        progress.enter("locating the active OpenBao node")  # a leader-class step
        await bao.confirm_source(source)
        progress.enter("committing the snapshot")
        await upload.commit(sha256=verified.sha256, size=verified.size)
    except BaseException:
        await upload.abort()
        raise
    progress.size = verified.size
    progress.sha256 = verified.sha256
    progress.raft_index = verified.meta.index
    progress.raft_term = verified.meta.term
    log.info(
        "snapshot committed",
        key=key,
        size=verified.size,
        sha256=verified.sha256,
        raft_index=verified.meta.index,
        raft_term=verified.meta.term,
    )

    progress.enter("writing the manifest")
    manifest = Manifest(
        key=key,
        sha256=verified.sha256,
        size=verified.size,
        createdAt=rfc3339(dt.datetime.now(dt.UTC)),
        takenAt=rfc3339(taken_at),
        namespace=config.cluster.namespace,
        cluster=config.cluster.name,
        clusterUID=config.cluster.uid,
        trigger=config.backup.trigger,
        backupName=config.backup.backup_name,
        openbaoVersion=leader.version,
        raftIndex=verified.meta.index,
        raftTerm=verified.meta.term,
        raftConfigurationIndex=verified.meta.configuration_index,
        snapshotMetaVersion=verified.meta.version,
        executorVersion=__version__,
        marker=marker,
    )
    mkey = manifest_key(key)
    try:
        await sink.put_small(
            key=mkey, data=manifest.to_json().encode(), content_type="application/json"
        )
    except BaseException as exc:
        removed = await _remove_orphan(sink=sink, key=key)
        if isinstance(exc, StorageError):
            note = (
                "the snapshot was deleted again"
                if removed
                else f"the snapshot {key} could NOT be deleted and has no manifest"
            )
            raise StorageError(f"{exc.message}; {note}") from None
        raise
    progress.manifest_key = mkey
    log.info("manifest written", key=mkey)


async def _transfer(
    *, bao: OpenBao, leader: Leader, upload: Upload
) -> tuple[VerifiedSnapshot, Leader]:
    """Stream into the upload; verification runs in a worker thread beside it (hashlib and
    zlib release the GIL), fed :data:`VERIFY_BATCH` bytes at a time and in order, so it does
    not slow the event loop that drives the upload. Returns the verified snapshot and the
    node that served it (to confirm before commit)."""
    verifier = SnapshotVerifier()
    started = time.monotonic()
    next_line = started + PROGRESS_INTERVAL
    streamed = 0
    batch: list[bytes] = []
    batched = 0
    feed: asyncio.Future[None] | None = None
    async with bao.snapshot(leader=leader) as stream:
        source = stream.source
        try:
            async for chunk in stream.chunks:
                batch.append(chunk)
                batched += len(chunk)
                await upload.write(chunk)
                if batched >= VERIFY_BATCH:
                    if feed is not None:
                        await feed  # in order; at most two batches referenced
                    feed = asyncio.ensure_future(asyncio.to_thread(_feed, verifier, batch))
                    batch, batched = [], 0
                streamed += len(chunk)
                now = time.monotonic()
                if now >= next_line:
                    next_line = now + PROGRESS_INTERVAL
                    rate = int(streamed / max(now - started, 1e-6))
                    log.info(PROGRESS_EVENT, bytes=streamed, bytes_per_second=rate)
            if feed is not None:
                await feed
            _feed(verifier, batch)
        except BaseException:
            if feed is not None:
                await asyncio.wait([feed])  # never abort while a feed is still running
            raise
    seconds = max(time.monotonic() - started, 1e-6)
    rate = int(streamed / seconds)
    log.info(STREAMED_EVENT, bytes=streamed, bytes_per_second=rate, seconds=round(seconds, 3))
    return verifier.finish(), source


def _feed(verifier: SnapshotVerifier, chunks: list[bytes]) -> None:
    for chunk in chunks:
        verifier.feed(chunk)


async def clean_abandoned(
    *,
    sink: SnapshotSink,
    progress: Progress,
    prefix: str,
    before: dt.datetime,
    budget: float = CLEANUP_BUDGET,
) -> Cleaned | None:
    """Remove the unfinished uploads of killed runs under ``prefix`` started before
    ``before``; never raises an error of its own (cancellation passes). Sets and returns
    ``progress.cleaned`` (None when the provider cannot list unfinished uploads)."""
    progress.enter("removing abandoned uploads")
    result = CleanupResult()
    error: str | None = None
    try:
        async with asyncio.timeout(budget):
            await sink.clean_abandoned(prefix=prefix, before=before, result=result)
    except TimeoutError:
        error = (
            f"stopped after {budget:g} s with {len(result.removed)} removed; the next "
            "backup goes on"
        )
    except ExecutorError as exc:
        error = exc.message
    except Exception as exc:  # a bug must not cost the backup either
        log.error(
            "unexpected error while removing abandoned uploads", traceback=traceback.format_exc()
        )
        error = f"unexpected {exc.__class__.__name__}: {exc}"
    if not result.supported:
        log.info(
            "this provider cannot list unfinished uploads; a lifecycle rule removes them",
            prefix=prefix,
        )
        return None
    if error is not None:
        error = scrub(error)
        log.warning(
            "could not remove all abandoned uploads (the backup goes on)",
            prefix=prefix,
            removed=len(result.removed),
            error=error,
        )
    elif result.removed:
        log.info(
            "removed abandoned uploads of earlier runs", prefix=prefix, removed=len(result.removed)
        )
    progress.cleaned = Cleaned.of(result.removed, error)
    return progress.cleaned


async def _remove_orphan(*, sink: SnapshotSink, key: str) -> bool:
    try:
        await sink.delete(key=key)
        return True
    except StorageError as exc:
        log.error("could not delete a snapshot whose manifest failed", key=key, error=exc.message)
        return False


async def _write_marker(
    *, config: Config, progress: Progress, bao: OpenBao, leader: Leader, record: str
) -> Marker | None:
    """Write the freshness marker (when configured) and record it in the report."""
    assert config.backup is not None
    if config.backup.marker is None:
        return None
    progress.enter("writing the freshness marker")
    marker = new_marker(config.backup.marker, record=record)
    await write_marker(bao=bao, leader=leader, marker=marker)
    progress.marker = marker
    return marker
