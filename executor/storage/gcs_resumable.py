"""The GCS resumable-upload protocol: one session, chunks in order, nothing visible before
the final chunk.

Guarantees:

* chunks are ``OBB_PART_SIZE`` bytes, a multiple of 256 KiB, sent in order with
  ``Content-Range: bytes a-b/*`` without a copy from one of two reused chunk buffers
  (:mod:`executor.storage.parts`); the next chunk is buffered while one is in flight; the
  final chunk carries the total (``bytes a-b/TOTAL``), so the object exists only after
  :meth:`GcsUpload.commit`, which the backup calls only after the verifier accepted the stream;
* a 308 answer's ``Range`` header is the persisted offset: whatever the server did not keep
  is resent from there (acknowledged bytes that are lost fail the upload); 408/429/5xx and
  connection errors are retried (``OBB_STORAGE_RETRIES``) after asking the session for its
  persisted offset (``Content-Range: bytes */*``);
* the stored size is checked against the verified size; a mismatch deletes the object;
* :meth:`GcsUpload.abort` cancels the session with DELETE (:func:`cancel_session`, retried,
  never raises) and deletes anything visible at the key (the session was created with
  ``ifGenerationMatch=0``, so it can only be our partial object: fake-gcs-server, unlike GCS,
  exposes partially uploaded objects);
* sha256/size are set as object metadata with a metadata-only PATCH (``ifGenerationMatch`` the
  new generation) right after the final chunk (best effort: the manifest has them).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from executor.errors import InternalError, StorageError
from executor.log import get_logger
from executor.storage.base import META_SHA256, META_SIZE, sleep_backoff
from executor.storage.gcs_http import (
    FOREIGN,
    RETRYABLE,
    Answer,
    GcsClient,
    describe,
    error_text,
)
from executor.storage.parts import Part, PartBody, PartBuffer

log = get_logger("executor.storage.gcs")


def persisted_offset(headers: Mapping[str, str]) -> int:
    """Bytes persisted according to a 308's ``Range: bytes=0-N`` (0 without the header)."""
    value = headers.get("Range")
    if not value:
        return 0
    m = re.fullmatch(r"bytes=0-(\d+)", value.strip())
    if not m:
        raise StorageError(f"GCS answered an unparseable Range header {value!r}")
    return int(m.group(1)) + 1


class GcsUpload:
    """One resumable upload session (see module guarantees)."""

    def __init__(self, *, sink: GcsClient, key: str, session_uri: str, chunk_size: int) -> None:
        self.key = key
        self.session_uri = session_uri
        self._sink = sink
        self._buffer = PartBuffer(part_size=chunk_size)
        self._held: Part | None = None  # a full chunk: the last one unless more bytes come
        self._sent = 0  # bytes handed to chunk requests so far
        self._written = 0
        self._inflight: asyncio.Task[dict[str, Any] | None] | None = None
        self._finished = False

    async def write(self, data: bytes) -> None:
        """Buffer ``data``; a full chunk is held until a further byte shows it is not the
        last (the final chunk must carry the total), then sent once the previous chunk is
        persisted: at most two chunk buffers exist (one sending, one filling or held)."""
        self._written += len(data)
        view = memoryview(data)
        while view:
            if self._held is not None:
                chunk, self._held = self._held, None
                await self._wait_inflight()
                start = self._sent
                self._sent += len(chunk)
                self._inflight = asyncio.create_task(self._send(chunk, start=start, total=None))
            self._held, view = self._buffer.fill(view)

    async def _wait_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _send(self, chunk: Part, *, start: int, total: int | None) -> dict[str, Any] | None:
        """Send ``chunk`` (see :meth:`_put`), then give its buffer back."""
        try:
            return await self._put(chunk.view, start=start, total=total)
        finally:
            chunk.release()

    async def _put(
        self, chunk: memoryview, *, start: int, total: int | None
    ) -> dict[str, Any] | None:
        """Send ``chunk`` (at ``start``) until the server has persisted all of it."""
        end = start + len(chunk)  # exclusive
        pos = start
        attempt = 0
        size = "*" if total is None else str(total)
        doing = f"uploading bytes {start}-{end - 1} of {self.key}"
        while True:
            if pos < end:
                content_range = f"bytes {pos}-{end - 1}/{size}"
                payload: PartBody | bytes = PartBody(chunk[pos - start :])
            else:
                content_range = f"bytes */{size}"
                payload = b""
            try:
                async with self._sink.session.put(
                    self.session_uri,
                    data=payload,
                    headers={"Content-Range": content_range},
                    allow_redirects=False,
                ) as resp:
                    answer = Answer(resp.status, resp.headers, await resp.read())
            except FOREIGN as exc:
                answer = None
                problem = describe(exc)
            if answer is not None:
                if total is not None and answer.status in (200, 201):
                    return answer.json()
                if total is None and answer.status == 308:
                    persisted = persisted_offset(answer.headers)
                    if persisted >= end:
                        return None
                    if persisted < start:
                        raise StorageError(
                            f"{doing}: GCS lost data it had acknowledged "
                            f"(persisted {persisted} < {start})"
                        )
                    log.info(
                        "GCS kept part of a chunk; resending the rest",
                        key=self.key,
                        persisted=persisted,
                    )
                    pos = persisted
                    attempt += 1
                    if attempt > 100:
                        raise StorageError(f"{doing}: no progress after 100 partial writes")
                    continue
                if answer.status not in RETRYABLE:
                    raise self._sink.fail(doing, answer)
                problem = f"HTTP {answer.status}: {error_text(answer.body)}"
            attempt += 1
            if attempt > self._sink.retries:
                raise StorageError(f"{doing}: {problem}")
            log.warning(
                "GCS chunk failed, asking the session what it kept",
                key=self.key,
                problem=problem,
                attempt=attempt,
            )
            await sleep_backoff(attempt)
            pos = await self._query(start=start, end=end, total=total, doing=doing)

    async def _query(self, *, start: int, end: int, total: int | None, doing: str) -> int:
        """The offset to resume from, per the session's status (``bytes */*``)."""
        size = "*" if total is None else str(total)
        try:
            async with self._sink.session.put(
                self.session_uri,
                data=b"",
                headers={"Content-Range": f"bytes */{size}"},
                allow_redirects=False,
            ) as resp:
                answer = Answer(resp.status, resp.headers, await resp.read())
        except FOREIGN:
            return start  # resend the whole chunk; the next attempt reports the error
        if answer.status == 308:
            return max(start, min(end, persisted_offset(answer.headers)))
        if answer.status in (404, 410):
            raise StorageError(f"{doing}: the upload session expired or was cancelled")
        if answer.status in (200, 201) and total is not None:
            return end  # the final chunk did arrive
        return start

    async def commit(self, *, sha256: str, size: int) -> None:
        if self._finished:
            raise InternalError("commit after the upload finished")
        if size != self._written:
            raise InternalError(f"commit of {size} bytes but {self._written} were written")
        await self._wait_inflight()
        rest, self._held = self._held or self._buffer.take_rest(), None
        resource = await self._send(rest, start=self._sent, total=size)
        if resource is None:
            raise StorageError(f"completing the upload of {self.key}: no object resource")
        self._finished = True
        stored = int(resource.get("size", -1))
        if stored != size:
            await self._remove_object()
            raise StorageError(f"GCS stored {stored} bytes for {self.key}, expected {size}")
        generation = str(resource.get("generation", ""))
        log.info("resumable upload completed", key=self.key, size=size, generation=generation)
        try:
            await self._sink.set_metadata(
                key=self.key,
                generation=generation,
                metadata={META_SHA256: sha256, META_SIZE: str(size)},
            )
        except StorageError as exc:
            log.warning(
                "could not record sha256/size as object metadata (the manifest has them)",
                key=self.key,
                error=exc.message,
            )

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
            self._inflight = None
        await cancel_session(self._sink, self.session_uri, key=self.key)
        await self._remove_object()

    async def _remove_object(self) -> None:
        try:
            if await self._sink.delete(key=self.key):
                log.warning("removed a partial object left at the key", key=self.key)
        except StorageError as exc:
            log.error("could not remove a possible partial object", key=self.key, error=exc.message)


async def cancel_session(sink: GcsClient, session_uri: str, *, key: str) -> None:
    """DELETE a resumable session (retried); never raises. GCS answers 499 to a cancelled
    session; 404/410 means it is already gone."""
    try:
        answer = await sink.request(
            "DELETE", session_uri, auth=False, doing=f"cancelling the upload session of {key}"
        )
        log.info("resumable session cancelled", key=key, status=answer.status)
    except StorageError as exc:
        log.error(
            "could not cancel the resumable session (GCS discards it after a week)",
            key=key,
            error=exc.message,
        )
