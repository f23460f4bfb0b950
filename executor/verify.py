"""``python -m executor verify``: check a stored snapshot against its manifest (storage only).

Guarantees:

* touches only the storage, and only to READ: the manifest, the object's size, the object's
  bytes (no OpenBao, no auth, no write, no delete: :func:`verify_stored` is typed against
  :class:`StoredObjects`, the read half of a sink);
* a snapshot without a readable manifest, whose manifest names another key, or whose object
  size differs from the manifest's is refused (``verification``); a missing object is a
  ``storage`` error (``ObjectNotFound``);
* the object is streamed ONCE through :class:`~executor.archive.SnapshotVerifier`: it must be a
  complete archive (gzip, tar, ``meta.json``, ``state.bin``, ``SHA256SUMS`` matching the
  members, non-empty ``SHA256SUMS.sealed``) whose SHA-256 and size equal the manifest's. A
  manifest rewritten to match a tampered object still fails: the archive's own SHA256SUMS no
  longer matches its members;
* the report carries the key, the manifest key and the manifest's sha256, size, Raft index and
  term and OpenBao version (set as soon as the manifest was read, so a failed run still says
  what the manifest claimed); ``outcome`` says whether the object matched it;
* :func:`verify_stored` is pass 1 of :mod:`executor.restore` too: a restore sends OpenBao
  nothing unless this very check succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from executor.archive import SnapshotVerifier
from executor.contract import Config
from executor.errors import ArchiveError, ObjectNotFound, VerificationError
from executor.layout import Manifest, manifest_key
from executor.log import get_logger
from executor.progress import Progress
from executor.storage import open_sink
from executor.storage.base import ObjectInfo

log = get_logger("executor.verify")

MANIFEST_LIMIT = 64 << 10
"""Largest manifest read (a manifest is well under 2 KiB)."""


class StoredObjects(Protocol):
    """The read-only part of :class:`~executor.storage.base.SnapshotSink` that pass 1 needs."""

    async def head(self, *, key: str) -> ObjectInfo: ...

    def get(
        self, *, key: str, version: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def read_small(self, *, key: str, limit: int) -> bytes: ...


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot that matched its manifest, and the object version that was read."""

    manifest: Manifest
    version: str | None


async def run_verify(*, config: Config, progress: Progress) -> None:
    assert config.verify is not None
    key = config.verify.key
    progress.key = key
    progress.enter("opening the storage")
    async with open_sink(settings=config.storage) as sink:
        await verify_stored(objects=sink, key=key, progress=progress)


async def verify_stored(*, objects: StoredObjects, key: str, progress: Progress) -> StoredSnapshot:
    """Pass 1: read the manifest, check the size, stream the object once through the verifier.

    Records the manifest's facts in ``progress``; raises ``VerificationError`` (mismatch, no
    manifest) or ``StorageError`` (``ObjectNotFound`` for a missing object)."""
    progress.enter("reading the manifest")
    manifest, version = await _manifest_and_version(objects=objects, key=key)
    progress.manifest_key = manifest_key(key)
    progress.size = manifest.size
    progress.sha256 = manifest.sha256
    progress.openbao_version = manifest.openbaoVersion
    progress.raft_index = manifest.raftIndex
    progress.raft_term = manifest.raftTerm
    progress.enter("verifying the stored snapshot")
    await _verify_pass(objects=objects, key=key, version=version, manifest=manifest)
    return StoredSnapshot(manifest=manifest, version=version)


async def _manifest_and_version(*, objects: StoredObjects, key: str) -> tuple[Manifest, str | None]:
    mkey = manifest_key(key)
    try:
        raw = await objects.read_small(key=mkey, limit=MANIFEST_LIMIT)
    except ObjectNotFound:
        try:
            await objects.head(key=key)
        except ObjectNotFound:
            raise ObjectNotFound(f"the snapshot {key} does not exist") from None
        raise VerificationError(
            f"{key} has no manifest ({mkey}): a snapshot that cannot be verified is not a "
            "backup and is never restored"
        ) from None
    try:
        manifest = Manifest.from_json(raw)
    except ValueError as exc:
        raise VerificationError(f"the manifest {mkey} is invalid: {exc}") from None
    if manifest.key != key:
        raise VerificationError(f"the manifest {mkey} describes {manifest.key!r}, not {key!r}")
    try:
        info = await objects.head(key=key)
    except ObjectNotFound:
        raise ObjectNotFound(f"the snapshot {key} does not exist") from None
    if info.size != manifest.size:
        raise VerificationError(
            f"{key} has {info.size} bytes but its manifest says {manifest.size}"
        )
    return manifest, info.version


async def _verify_pass(
    *, objects: StoredObjects, key: str, version: str | None, manifest: Manifest
) -> None:
    verifier = SnapshotVerifier()
    try:
        async with objects.get(key=key, version=version) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(verifier.feed, chunk)
                if verifier.size > manifest.size:
                    raise VerificationError(f"{key} is longer than its manifest's {manifest.size}")
        verified = verifier.finish()
    except ArchiveError as exc:
        raise ArchiveError(f"{key} is not a valid snapshot: {exc.message}") from None
    if (verified.sha256, verified.size) != (manifest.sha256, manifest.size):
        raise VerificationError(
            f"{key} does not match its manifest: sha256 {verified.sha256} / {verified.size} "
            f"bytes, manifest {manifest.sha256} / {manifest.size} bytes"
        )
    log.info(
        "stored snapshot verified",
        key=key,
        sha256=verified.sha256,
        size=verified.size,
        raft_index=manifest.raftIndex,
        raft_term=manifest.raftTerm,
    )
