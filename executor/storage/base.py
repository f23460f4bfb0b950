"""The storage protocol every provider implements, and the part pipeline they share.

Guarantees of every :class:`SnapshotSink` implementation:

* :meth:`SnapshotSink.begin` starts an upload that is invisible at ``key`` until
  :meth:`Upload.commit`; :meth:`Upload.commit` is called only after the archive verifier
  accepted the whole stream, and it makes the object appear atomically with its sha256 and
  size recorded as object metadata where the provider allows (see each module);
* :meth:`Upload.abort` is called on ANY failure or cancellation before commit; it is
  idempotent, never raises, and leaves nothing at ``key`` and no pending upload behind (S3:
  AbortMultipartUpload; GCS: DELETE of the resumable session; Azure: nothing is committed and
  uncommitted blocks expire). A KILLED run cannot abort: :meth:`SnapshotSink.clean_abandoned`
  lets the next run of the same cluster remove what it left;
* memory is bounded: at most ``concurrency`` parts in flight plus one part being filled, in
  buffers allocated once and reused (:class:`~executor.storage.parts.PartBuffer` +
  :class:`PartUploader` apply back-pressure to the producer);
* :meth:`SnapshotSink.get` streams an object in bounded chunks, optionally only if its content
  is still the version seen by :meth:`SnapshotSink.head` (ETag/generation precondition);
* :meth:`SnapshotSink.delete` is idempotent (an absent object is not an error);
* :meth:`SnapshotSink.clean_abandoned` removes unfinished uploads that earlier runs left
  behind when they were killed (SIGKILL, node loss, OOM: no ``abort`` ran): only uploads whose
  key starts with ``prefix`` (a cluster's ``<pathPrefix>/<namespace>/<cluster>/``, checked to
  end with ``/``) AND that started strictly before ``before`` (:func:`is_abandoned`); it never
  touches a committed object. Each removed key is appended to ``result.removed`` as soon as it
  is gone (so a caller's time budget keeps what was done); errors are raised (translated),
  the caller decides that they never fail a backup. A provider that cannot list unfinished
  uploads sets ``result.supported = False`` (GCS: resumable sessions are not listable);
* nothing here creates buckets; foreign errors are translated by the provider module into
  :class:`~executor.errors.StorageError` / :class:`~executor.errors.ObjectNotFound`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from executor.errors import InternalError, StorageError
from executor.storage.parts import Part, PartBuffer

T = TypeVar("T")

#: Logical metadata names; providers adapt the spelling (Azure needs identifiers).
META_SHA256 = "obb-sha256"
META_SIZE = "obb-size"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str | None = None  # ETag (S3, Azure) or generation (GCS): a content identity
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class CleanupResult:
    """What :meth:`SnapshotSink.clean_abandoned` did (filled in as it goes)."""

    supported: bool = True
    removed: list[str] = field(default_factory=list)


def check_cleanup_prefix(prefix: str) -> None:
    """A cleanup is confined to one cluster's directory: never the bucket root."""
    if not prefix.endswith("/") or not prefix.strip("/"):
        raise InternalError(f"refusing to clean up under {prefix!r}: not a cluster prefix")


def is_abandoned(
    *, key: str, started: dt.datetime | None, prefix: str, before: dt.datetime
) -> bool:
    """An unfinished upload is ours to remove only if it is under ``prefix`` and started
    strictly before ``before`` (unknown start time: never). Naive times are UTC."""
    if started is None or not key.startswith(prefix):
        return False
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.UTC)
    return started < before


class Upload(Protocol):
    """One snapshot upload: ``write``* then exactly one of ``commit`` or ``abort``."""

    key: str

    async def write(self, data: bytes) -> None: ...

    async def commit(self, *, sha256: str, size: int) -> None: ...

    async def abort(self) -> None: ...


class SnapshotSink(Protocol):
    """An object store holding snapshots and manifests (one bucket/container)."""

    async def begin(self, *, key: str, metadata: Mapping[str, str]) -> Upload: ...

    async def head(self, *, key: str) -> ObjectInfo: ...

    def get(
        self, *, key: str, version: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def read_small(self, *, key: str, limit: int) -> bytes: ...

    async def put_small(self, *, key: str, data: bytes, content_type: str) -> None: ...

    async def delete(self, *, key: str) -> bool: ...

    def list(self, *, prefix: str) -> AsyncIterator[ObjectInfo]: ...

    async def clean_abandoned(
        self, *, prefix: str, before: dt.datetime, result: CleanupResult
    ) -> None: ...


class PartUploader(Generic[T]):
    """Runs ``upload(number, part)`` for parts, at most ``concurrency`` at a time.

    A slot is taken with :meth:`reserve` (waits for a free one: back-pressure; raises the
    first failure of any part) before the part's buffer is filled, and given back when its
    upload ended, whatever the outcome, after the part was released (its buffer reused): so
    at most ``concurrency`` part buffers exist, filling or uploading. :meth:`start` uploads a
    part in its reserved slot; :meth:`submit` is both; :meth:`drain` waits for all parts and
    returns their results by part number.
    """

    def __init__(self, *, concurrency: int, upload: Callable[[int, Part], Awaitable[T]]) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._upload = upload
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: dict[int, T] = {}
        self._error: BaseException | None = None

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def reserve(self) -> None:
        self._check()
        await self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            self._check()

    def unreserve(self) -> None:
        self._slots.release()

    def start(self, number: int, part: Part) -> None:
        task = asyncio.create_task(self._run(number, part), name=f"part-{number}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def submit(self, number: int, part: Part) -> None:
        try:
            await self.reserve()
        except BaseException:
            part.release()
            raise
        self.start(number, part)

    async def _run(self, number: int, part: Part) -> None:
        try:
            self._results[number] = await self._upload(number, part)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._error is None:
                self._error = (
                    exc
                    if isinstance(exc, StorageError)
                    else StorageError(f"part {number} failed: {exc.__class__.__name__}: {exc}")
                )
        finally:
            part.release()
            self._slots.release()

    async def drain(self) -> dict[int, T]:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._check()
        return dict(self._results)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class NumberedUpload(Generic[T]):
    """A stream cut into numbered parts uploaded ``concurrency`` at a time (S3 multipart
    parts, Azure blocks); subclasses say how one part is uploaded (``_upload_part``) and how
    the finished parts are committed. Memory: at most ``concurrency`` part buffers, each
    being filled or uploading (the slot is taken before a buffer is filled)."""

    unit = "parts"

    def __init__(self, *, key: str, part_size: int, concurrency: int, max_parts: int) -> None:
        self.key = key
        self._buffer = PartBuffer(part_size=part_size)
        self._uploader: PartUploader[T] = PartUploader(
            concurrency=concurrency, upload=self._upload_part
        )
        self._max_parts = max_parts
        self._next = 1
        self._written = 0
        self._finished = False

    async def _upload_part(self, number: int, part: Part) -> T:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        self._written += len(data)
        view = memoryview(data)
        while view:
            if not self._buffer.filling:
                await self._reserve()
            part, view = self._buffer.fill(view)
            if part is not None:
                self._start(part)

    async def _reserve(self) -> None:
        """A slot for the next part, before its buffer is filled."""
        if self._next > self._max_parts:
            raise StorageError(
                f"the snapshot needs more than {self._max_parts} {self.unit}: raise OBB_PART_SIZE"
            )
        await self._uploader.reserve()

    def _start(self, part: Part) -> None:
        number = self._next
        self._next += 1
        self._uploader.start(number, part)

    async def _all_parts(self, *, size: int) -> list[T]:
        """Upload the rest and wait for every part; their results in part order."""
        if self._finished:
            raise InternalError("commit after the upload finished")
        if size != self._written:
            raise InternalError(f"commit of {size} bytes but {self._written} were written")
        if self._buffer.filling:
            self._start(self._buffer.take_rest())
        elif self._next == 1:  # an empty stream is one empty part
            await self._reserve()
            self._start(self._buffer.take_rest())
        results = await self._uploader.drain()
        return [results[n] for n in sorted(results)]


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): 0.2, 0.4, 0.8 ... capped at 5."""
    return float(min(5.0, 0.2 * (2 ** (attempt - 1))))


async def sleep_backoff(attempt: int) -> None:
    await asyncio.sleep(backoff(attempt))
