"""Google Cloud Storage over its JSON API on aiohttp, with a hand-written resumable upload.

Why not gcloud-aio-storage: its ``upload`` accepts only bytes or a *seekable* file and sends
the whole object in one request, so it cannot stream a snapshot of unknown length from an
async source in constant memory; and it treats any custom ``api_root`` (or
``STORAGE_EMULATOR_HOST``) as an emulator and silently drops authentication. We use only
gcloud-aio-auth for access tokens. ``STORAGE_EMULATOR_HOST`` is ignored.

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot is a resumable upload session created with ``ifGenerationMatch=0`` (the key
  must not exist) and sent by :class:`~executor.storage.gcs_resumable.GcsUpload` (chunks in
  order, resumed from the persisted offset, the total only on the final chunk: nothing is
  visible at the key before the verifier accepted the stream; on failure the session is
  cancelled and anything visible at the key deleted); a cancellation (SIGTERM, deadline)
  that arrives while the session is being created lets the creation request finish and
  cancels the session it created;
* resumable sessions cannot be listed through the API, so a session of a KILLED run (no
  DELETE sent) cannot be found by the next run (:meth:`GcsSink.clean_abandoned` reports
  "unsupported"); GCS discards it with its uploaded bytes a week after it was created, and
  none of it is ever visible as an object (see docs/storage-lifecycle.md);
* context metadata is set at session creation (sha256/size after the final chunk, see
  :mod:`executor.storage.gcs_resumable`);
* authentication: a service-account / external-account JSON (GOOGLE_APPLICATION_CREDENTIALS)
  or Application Default Credentials through gcloud-aio-auth; with ``OBB_EMULATOR=true``
  (explicit only) no token is fetched or sent. TLS uses ``OBB_STORAGE_CACERT`` or the system
  store and is never disabled;
* requests, retries and the translation of aiohttp and gcloud-aio-auth errors live in
  :mod:`executor.storage.gcs_http`, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from executor.contract import GcsCredentials, StorageSettings
from executor.errors import StorageError
from executor.log import get_logger
from executor.storage.base import CleanupResult, ObjectInfo
from executor.storage.gcs_http import DEFAULT_ROOT, FOREIGN, Answer, GcsClient, describe
from executor.storage.gcs_resumable import GcsUpload, cancel_session
from executor.tls import ssl_context

log = get_logger("executor.storage.gcs")

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_READ_CHUNK = 1 << 20


class GcsSink(GcsClient):
    """One GCS bucket."""

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
            params=self.params(uploadType="resumable", name=key, ifGenerationMatch="0"),
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
        answer = await self.request("GET", self.object_url(key), params=self.params(), doing=doing)
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
        params = self.params(alt="media")
        if version:
            params["ifGenerationMatch"] = version
        headers = await self.auth_headers()
        try:
            resp = await self.session.get(self.object_url(key), params=params, headers=headers)
        except FOREIGN as exc:
            raise StorageError(f"{doing}: {describe(exc)}") from None
        try:
            if resp.status != 200:
                body = await resp.content.read(64 << 10)
                answer = Answer(resp.status, resp.headers, body)
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
        except FOREIGN as exc:
            raise StorageError(f"{doing}: {describe(exc)}") from None

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
            params=self.params(uploadType="media", name=key),
            data=data,
            headers={"Content-Type": content_type},
            doing=doing,
        )
        if answer.status not in (200, 201):
            raise self.fail(doing, answer)

    async def list(self, *, prefix: str) -> AsyncIterator[ObjectInfo]:
        url = f"{self._root}/storage/v1/b/{quote(self._bucket, safe='')}/o"
        token: str | None = None
        while True:
            params = self.params(prefix=prefix)
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
