"""Google Cloud Storage over its JSON API on aiohttp, with a hand-written resumable upload.

Why not gcloud-aio-storage: its ``upload`` accepts only bytes or a *seekable* file and sends
the whole object in one request, so it cannot stream a snapshot of unknown length from an
async source in constant memory; and it treats any custom ``api_root`` (or
``STORAGE_EMULATOR_HOST``) as an emulator and silently drops authentication. We use only
gcloud-aio-auth for access tokens. ``STORAGE_EMULATOR_HOST`` is ignored.

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot is a resumable upload session created with ``ifGenerationMatch=0`` (the key
  must not exist); chunks are ``OBB_PART_SIZE`` bytes, a multiple of 256 KiB, sent in order
  with ``Content-Range: bytes a-b/*`` without a copy from one of two reused chunk buffers
  (:mod:`executor.storage.parts`); the next chunk is buffered while one is in flight; the
  final chunk carries the total (``bytes a-b/TOTAL``), so the object exists only after the
  verifier accepted the stream;
* a 308 answer's ``Range`` header is the persisted offset: whatever the server did not keep
  is resent from there; 408/429/5xx and connection errors are retried (``OBB_STORAGE_RETRIES``)
  after asking the session for its persisted offset (``Content-Range: bytes */*``);
* on failure the session is cancelled with DELETE (retried like any request), and anything
  visible at the key is deleted (the key did not exist before, so it can only be our partial
  object: fake-gcs-server, unlike GCS, exposes partially uploaded objects); this includes a
  cancellation (SIGTERM, deadline) that arrives while the session is being created: the
  creation request is let finish and the session it created is cancelled;
* resumable sessions cannot be listed through the API, so a session of a KILLED run (no
  DELETE sent) cannot be found by the next run (:meth:`GcsSink.clean_abandoned` reports
  "unsupported"); GCS discards it with its uploaded bytes a week after it was created, and
  none of it is ever visible as an object (see docs/storage-lifecycle.md);
* sha256/size are set as object metadata with a metadata-only PATCH (``ifGenerationMatch`` the
  new generation) right after the final chunk; other context metadata is set at session
  creation;
* authentication: a service-account / external-account JSON (GOOGLE_APPLICATION_CREDENTIALS)
  or Application Default Credentials through gcloud-aio-auth; with ``OBB_EMULATOR=true``
  (explicit only) no token is fetched or sent. TLS uses ``OBB_STORAGE_CACERT`` or the system
  store and is never disabled;
* aiohttp and gcloud-aio-auth errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from executor import secrets
from executor.contract import GcsCredentials, StorageSettings
from executor.errors import ExecutorError, InternalError, ObjectNotFound, StorageError
from executor.log import get_logger
from executor.openbao import ssl_context
from executor.storage.base import (
    META_SHA256,
    META_SIZE,
    CleanupResult,
    ObjectInfo,
    sleep_backoff,
)
from executor.storage.parts import Part, PartBody, PartBuffer

log = get_logger("executor.storage.gcs")

DEFAULT_ROOT = "https://storage.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_RETRYABLE = {408, 429, 500, 502, 503, 504}
_READ_CHUNK = 1 << 20
_FOREIGN = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{exc.__class__.__name__}: {exc}"


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        msg = data.get("error", {}).get("message") if isinstance(data, dict) else None
        if isinstance(msg, str) and msg:
            return msg[:300]
    except (ValueError, AttributeError):
        pass
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


def _persisted(headers: Mapping[str, str]) -> int:
    """Bytes persisted according to a 308's ``Range: bytes=0-N`` (0 without the header)."""
    value = headers.get("Range")
    if not value:
        return 0
    m = re.fullmatch(r"bytes=0-(\d+)", value.strip())
    if not m:
        raise StorageError(f"GCS answered an unparseable Range header {value!r}")
    return int(m.group(1)) + 1


class _Answer:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            raise StorageError(f"GCS answered HTTP {self.status} with a non-JSON body") from None
        if not isinstance(data, dict):
            raise StorageError("GCS answered JSON that is not an object")
        return data


class GcsSink:
    """One GCS bucket."""

    def __init__(
        self, *, session: aiohttp.ClientSession, token: Any | None, settings: StorageSettings
    ) -> None:
        self._session = session
        self._token = token
        self._settings = settings
        self._root = (settings.endpoint or DEFAULT_ROOT).rstrip("/")
        self._bucket = settings.bucket
        self._retries = settings.retries

    # -- plumbing -----------------------------------------------------------------------------

    async def auth_headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            value = await self._token.get()
        except ExecutorError:
            raise
        except Exception as exc:  # gcloud-aio-auth raises anything from aiohttp to ValueError
            raise StorageError(
                f"cannot obtain a GCS access token: {exc.__class__.__name__}: {exc}"
            ) from None
        if not value:
            raise StorageError("cannot obtain a GCS access token (empty token)")
        secrets.register(value)
        return {"Authorization": f"Bearer {value}"}

    def _params(self, **params: str) -> dict[str, str]:
        if self._settings.gcs_project:
            params["userProject"] = self._settings.gcs_project
        return params

    def object_url(self, key: str) -> str:
        return f"{self._root}/storage/v1/b/{quote(self._bucket, safe='')}/o/{quote(key, safe='')}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        doing: str,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        retry: bool = True,
    ) -> _Answer:
        """One request with retries of 408/429/5xx and connection errors."""
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            if auth:
                hdrs.update(await self.auth_headers())
            try:
                async with self._session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json_body,
                    headers=hdrs,
                    allow_redirects=False,
                ) as resp:
                    answer = _Answer(resp.status, resp.headers, await resp.read())
                if answer.status not in _RETRYABLE:
                    return answer
                problem = f"HTTP {answer.status}: {_error_text(answer.body)}"
            except _FOREIGN as exc:
                problem = _describe(exc)
            attempt += 1
            if not retry or attempt > self._retries:
                raise StorageError(f"{doing}: {problem}")
            log.warning(
                "GCS request failed, retrying", doing=doing, problem=problem, attempt=attempt
            )
            await sleep_backoff(attempt)

    def fail(self, doing: str, answer: _Answer) -> StorageError:
        text = _error_text(answer.body)
        if answer.status == 404:
            return ObjectNotFound(f"{doing}: not found ({text})")
        if answer.status in (401, 403):
            return StorageError(f"{doing}: access denied by GCS (HTTP {answer.status}: {text})")
        return StorageError(f"{doing}: GCS answered HTTP {answer.status}: {text}")

    # -- SnapshotSink -------------------------------------------------------------------------

    async def begin(self, *, key: str, metadata: Mapping[str, str]) -> GcsUpload:
        creating = asyncio.ensure_future(self._create_session(key=key, metadata=metadata))
        try:
            session_uri = await asyncio.shield(creating)
        except asyncio.CancelledError:
            await self._cancel_orphan(creating, key=key)
            raise
        return GcsUpload(
            sink=self, key=key, session_uri=session_uri, chunk_size=self._settings.part_size
        )

    async def _cancel_orphan(self, creating: asyncio.Future[str], *, key: str) -> None:
        """Cancelled while a session was being created: let the request finish (it is bounded
        by the client's timeouts) and cancel the session it created, if any."""
        try:
            session_uri = await creating
        except Exception:
            return  # no session was created
        await cancel_session(self, session_uri, key=key)

    async def _create_session(self, *, key: str, metadata: Mapping[str, str]) -> str:
        doing = f"starting the upload of {key}"
        answer = await self.request(
            "POST",
            f"{self._root}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o",
            params=self._params(uploadType="resumable", name=key, ifGenerationMatch="0"),
            json_body={"name": key, "contentType": "application/gzip", "metadata": dict(metadata)},
            headers={"X-Upload-Content-Type": "application/gzip"},
            doing=doing,
        )
        if answer.status not in (200, 201) or not answer.headers.get("Location"):
            raise self.fail(doing, answer)
        return answer.headers["Location"]

    async def clean_abandoned(
        self, *, prefix: str, before: dt.datetime, result: CleanupResult
    ) -> None:
        """Resumable upload sessions cannot be listed: nothing to find (see the module)."""
        result.supported = False

    async def head(self, *, key: str) -> ObjectInfo:
        doing = f"looking up {key}"
        answer = await self.request("GET", self.object_url(key), params=self._params(), doing=doing)
        if answer.status != 200:
            raise self.fail(doing, answer)
        data = answer.json()
        meta = data.get("metadata") or {}
        return ObjectInfo(
            key=key,
            size=int(data.get("size", 0)),
            version=str(data.get("generation")),
            metadata=dict(meta),
        )

    @asynccontextmanager
    async def get(
        self, *, key: str, version: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        doing = f"reading {key}"
        params = self._params(alt="media")
        if version:
            params["ifGenerationMatch"] = version
        headers = await self.auth_headers()
        try:
            resp = await self._session.get(self.object_url(key), params=params, headers=headers)
        except _FOREIGN as exc:
            raise StorageError(f"{doing}: {_describe(exc)}") from None
        try:
            if resp.status != 200:
                body = await resp.content.read(64 << 10)
                answer = _Answer(resp.status, resp.headers, body)
                if resp.status == 412:
                    raise StorageError(f"{doing}: the object changed since it was verified")
                raise self.fail(doing, answer)
            yield self._chunks(resp, doing)
        finally:
            resp.close()

    @staticmethod
    async def _chunks(resp: aiohttp.ClientResponse, doing: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                yield chunk
        except _FOREIGN as exc:
            raise StorageError(f"{doing}: {_describe(exc)}") from None

    async def read_small(self, *, key: str, limit: int) -> bytes:
        async with self.get(key=key) as chunks:
            data = bytearray()
            async for chunk in chunks:
                data += chunk
                if len(data) > limit:
                    raise StorageError(f"{key} is larger than {limit} bytes")
            return bytes(data)

    async def put_small(self, *, key: str, data: bytes, content_type: str) -> None:
        doing = f"writing {key}"
        answer = await self.request(
            "POST",
            f"{self._root}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o",
            params=self._params(uploadType="media", name=key),
            data=data,
            headers={"Content-Type": content_type},
            doing=doing,
        )
        if answer.status not in (200, 201):
            raise self.fail(doing, answer)

    async def delete(self, *, key: str) -> bool:
        doing = f"deleting {key}"
        answer = await self.request(
            "DELETE", self.object_url(key), params=self._params(), doing=doing
        )
        if answer.status in (200, 204):
            return True
        if answer.status == 404:
            return False
        raise self.fail(doing, answer)

    async def set_metadata(self, *, key: str, generation: str, metadata: Mapping[str, str]) -> None:
        doing = f"recording the metadata of {key}"
        answer = await self.request(
            "PATCH",
            self.object_url(key),
            params=self._params(ifGenerationMatch=generation),
            json_body={"metadata": dict(metadata)},
            doing=doing,
        )
        if answer.status != 200:
            raise self.fail(doing, answer)

    async def list(self, *, prefix: str) -> AsyncIterator[ObjectInfo]:
        url = f"{self._root}/storage/v1/b/{quote(self._bucket, safe='')}/o"
        token: str | None = None
        while True:
            params = self._params(prefix=prefix)
            if token:
                params["pageToken"] = token
            answer = await self.request("GET", url, params=params, doing=f"listing {prefix}")
            if answer.status != 200:
                raise self.fail(f"listing {prefix}", answer)
            data = answer.json()
            for item in data.get("items", []):
                yield ObjectInfo(
                    key=item["name"],
                    size=int(item.get("size", 0)),
                    version=str(item.get("generation")),
                )
            token = data.get("nextPageToken")
            if not token:
                return


class GcsUpload:
    """One resumable upload session (see module guarantees)."""

    def __init__(self, *, sink: GcsSink, key: str, session_uri: str, chunk_size: int) -> None:
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
                async with self._sink._session.put(
                    self.session_uri,
                    data=payload,
                    headers={"Content-Range": content_range},
                    allow_redirects=False,
                ) as resp:
                    answer = _Answer(resp.status, resp.headers, await resp.read())
            except _FOREIGN as exc:
                answer = None
                problem = _describe(exc)
            if answer is not None:
                if total is not None and answer.status in (200, 201):
                    return answer.json()
                if total is None and answer.status == 308:
                    persisted = _persisted(answer.headers)
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
                if answer.status not in _RETRYABLE:
                    raise self._sink.fail(doing, answer)
                problem = f"HTTP {answer.status}: {_error_text(answer.body)}"
            attempt += 1
            if attempt > self._sink._retries:
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
            async with self._sink._session.put(
                self.session_uri,
                data=b"",
                headers={"Content-Range": f"bytes */{size}"},
                allow_redirects=False,
            ) as resp:
                answer = _Answer(resp.status, resp.headers, await resp.read())
        except _FOREIGN:
            return start  # resend the whole chunk; the next attempt reports the error
        if answer.status == 308:
            return max(start, min(end, _persisted(answer.headers)))
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


async def cancel_session(sink: GcsSink, session_uri: str, *, key: str) -> None:
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


@asynccontextmanager
async def open_gcs(*, settings: StorageSettings) -> AsyncIterator[GcsSink]:
    creds = settings.credentials
    assert isinstance(creds, GcsCredentials)
    token: Any | None = None
    if creds.kind == "emulator":
        log.warning(
            "GCS emulator mode (OBB_EMULATOR=true): requests carry no credentials",
            endpoint=settings.endpoint,
        )
    else:
        from gcloud.aio.auth import Token

        try:
            token = Token(service_file=str(creds.file) if creds.file else None, scopes=SCOPES)
        except Exception as exc:  # bad credential file contents
            raise StorageError(
                f"cannot use the GCS credentials: {exc.__class__.__name__}: {exc}"
            ) from None
    ctx = ssl_context(str(settings.cacert) if settings.cacert else None)
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout,
        sock_connect=settings.connect_timeout,
        sock_read=settings.read_timeout,
    )
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx),
            timeout=timeout,
            auto_decompress=False,
            trust_env=False,
        ) as session:
            sink = GcsSink(session=session, token=token, settings=settings)
            await sink.auth_headers()  # fail early on credentials
            log.info(
                "GCS client ready",
                bucket=settings.bucket,
                endpoint=settings.endpoint or DEFAULT_ROOT,
                credentials=creds.kind,
            )
            yield sink
    finally:
        if token is not None:
            await token.close()
