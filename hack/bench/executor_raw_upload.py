"""The raw-client side of ``executor_throughput.py``: upload one served snapshot, no checks.

Run as a subprocess (so its CPU seconds and peak RSS are its own)::

    python hack/bench/executor_raw_upload.py URL TARGET ENDPOINT BUCKET KEY \
        PART_SIZE CONCURRENCY [HASH]

It GETs the snapshot stream from ``URL`` (aiohttp, like the executor) and uploads the same
bytes the way each provider's own client does it, with no verification of the archive and no
checksums the client does not send by itself:

* ``s3``: aiobotocore ``create_multipart_upload`` / ``upload_part`` (bytes bodies,
  ``CONCURRENCY`` in flight, ``PART_SIZE`` each) / ``complete_multipart_upload``; over
  plain HTTP botocore signs every payload (SHA-256, as for the executor); over HTTPS
  (``s3tls``, CA from ``AWS_CA_BUNDLE``) the payload is not signed and no checksum is sent:
  TLS alone, the cheapest upload the client can make;
* ``gcs``: gcloud-aio-storage ``Storage.upload(force_resumable_upload=True)``: it accepts only
  bytes or a seekable file, so the stream is collected in a BytesIO first and sent in one
  resumable session (its memory is the object's size; that is the library's shape);
* ``gcschunks``: the GCS JSON API's resumable session driven with aiohttp (gcloud-aio-storage
  cannot send chunks), ``PART_SIZE`` per chunk, one in flight while the next is read: the
  executor's shape, so the ratio shows what the chunking costs on the emulator;
* ``azure``: azure-storage-blob (aio) ``stage_block`` (``CONCURRENCY`` in flight) then
  ``commit_block_list`` (``azuretls``: the same over HTTPS, the CA from ``BENCH_CA_BUNDLE`` in
  one TLS context, as with the public CAs of real Azure).

``HASH=sha256`` makes it the *floor* of ``executor_throughput.py --floor``: the same upload
plus one SHA-256 pass over every byte received, fed to a worker thread :data:`HASH_BATCH`
bytes at a time and in order (as the executor feeds its verifier). That is the least any
inline verification of an OpenBao snapshot costs: ``SHA256SUMS`` lists the SHA-256 of
``state.bin``, which is nearly every byte of the archive, so no check against it can hash
less; the floor omits everything else the executor checks (the stream's own SHA-256 for the
manifest, the gzip CRC-32, the tar structure).

Prints ``{"seconds": ...}``: first snapshot byte to upload complete; writes "first byte" to
stderr when it arrives (the bench reads the peak RSS held before it then).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

#: Bytes per hand-off to the hashing thread (the executor's VERIFY_BATCH).
HASH_BATCH = 2 << 20


class Hasher:
    """SHA-256 of every byte fed, in a worker thread, in order; a no-op when disabled."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._sha = hashlib.sha256()
        self._batch: list[bytes] = []
        self._size = 0
        self._feed: asyncio.Future[None] | None = None

    def _update(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._sha.update(chunk)

    async def feed(self, chunk: bytes) -> None:
        if not self.enabled:
            return
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= HASH_BATCH:
            if self._feed is not None:
                await self._feed
            self._feed = asyncio.ensure_future(asyncio.to_thread(self._update, self._batch))
            self._batch, self._size = [], 0

    async def finish(self) -> None:
        if self._feed is not None:
            await self._feed
        self._update(self._batch)


class Snapshot:
    """The snapshot GET from ``url``: :meth:`chunks` yields it as it arrives, each chunk fed to
    ``hasher`` first, and waits for the hasher at the end; the first chunk's arrival is noted
    (:attr:`first_byte`, the measurement's start, ``time.monotonic()``) and announced as
    "first byte" on stderr."""

    def __init__(self, *, http: aiohttp.ClientSession, url: str, hasher: Hasher) -> None:
        self._http, self._url, self._hasher = http, url, hasher
        self._t0: float | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        async with self._http.get(self._url) as resp:
            async for chunk in resp.content.iter_chunked(1 << 20):
                if self._t0 is None:
                    self._t0 = time.monotonic()
                    print("first byte", file=sys.stderr, flush=True)
                await self._hasher.feed(chunk)
                yield chunk
        await self._hasher.finish()

    @property
    def first_byte(self) -> float:
        assert self._t0 is not None, "the snapshot stream has not started"
        return self._t0


async def _parts(
    *,
    snapshot: Snapshot,
    part_size: int,
    concurrency: int,
    put: Callable[[int, bytes], Awaitable[Any]],
) -> tuple[float, list[Any]]:
    """Cut the stream into parts and ``put`` them, ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task[Any]] = []

    async def run(n: int, data: bytes) -> Any:
        try:
            return await put(n, data)
        finally:
            sem.release()

    async def submit(data: bytes) -> None:
        await sem.acquire()
        tasks.append(asyncio.create_task(run(len(tasks) + 1, data)))

    buf = bytearray()
    async for chunk in snapshot.chunks():
        buf += chunk
        while len(buf) >= part_size:
            part = bytes(buf[:part_size])
            del buf[:part_size]
            await submit(part)
    if buf or not tasks:
        await submit(bytes(buf))
    return snapshot.first_byte, list(await asyncio.gather(*tasks))


async def s3(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    cfg = AioConfig(
        s3={
            "addressing_style": "path",
            **({"payload_signing_enabled": False} if a["endpoint"].startswith("https") else {}),
        },
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=a["concurrency"] + 4,
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=a["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=cfg,
    ) as client:
        bucket, key = a["bucket"], a["key"]
        upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]

        async def put(n: int, data: bytes) -> dict[str, Any]:
            r = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data
            )
            return {"PartNumber": n, "ETag": r["ETag"]}

        t0, parts = await _parts(
            snapshot=a["snapshot"],
            part_size=a["part_size"],
            concurrency=a["concurrency"],
            put=put,
        )
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    return t0


async def azure(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.storage.blob.aio import BlobServiceClient

    kw: dict[str, Any] = {}
    session: aiohttp.ClientSession | None = None
    if ca := os.environ.get("BENCH_CA_BUNDLE"):  # azuretls: the test CA, in ONE context
        # Given a CA path, azure-core makes a new TLS context per request and so pools no
        # connection (see executor/storage/azure.py); with the public CAs real Azure uses it
        # shares aiohttp's default context. One context on our session is that path.
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca))
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        kw["transport"] = AioHttpTransport(session=session, session_owner=False)
    try:
        return await _azure_blocks(BlobServiceClient.from_connection_string(a["endpoint"], **kw), a)
    finally:
        if session is not None:
            await session.close()


async def _azure_blocks(service: Any, a: dict[str, Any]) -> float:
    async with service as svc:
        blob = svc.get_blob_client(a["bucket"], a["key"])

        async def put(n: int, data: bytes) -> str:
            block_id = f"{n:08d}"
            await blob.stage_block(block_id, data, length=len(data))
            return block_id

        t0, ids = await _parts(
            snapshot=a["snapshot"],
            part_size=a["part_size"],
            concurrency=a["concurrency"],
            put=put,
        )
        await blob.commit_block_list(ids)
    return t0


async def gcs(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    from gcloud.aio.storage import Storage

    snapshot: Snapshot = a["snapshot"]
    stream = io.BytesIO()
    async for chunk in snapshot.chunks():
        stream.write(chunk)
    stream.seek(0)
    async with Storage(api_root=a["endpoint"]) as storage:
        await storage.upload(
            a["bucket"],
            a["key"],
            stream,
            content_type="application/gzip",
            force_resumable_upload=True,
            timeout=3600,
        )
    return snapshot.first_byte


async def gcs_chunks(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    base, bucket, key, size = a["endpoint"], a["bucket"], a["key"], a["part_size"]
    async with http.post(
        f"{base}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "name": key},
        json={"name": key, "contentType": "application/gzip"},
    ) as r:
        r.raise_for_status()
        location = r.headers["Location"]
    sent = 0

    async def put(data: bytes, start: int, total: int | None) -> None:
        end = f"{start}-{start + len(data) - 1}" if data else "*"
        headers = {"Content-Range": f"bytes {end}/{'*' if total is None else total}"}
        async with http.put(location, data=data, headers=headers) as r:
            if r.status not in (200, 201, 308):
                raise SystemExit(f"chunk at {start}: HTTP {r.status} {await r.text()}")

    snapshot: Snapshot = a["snapshot"]
    buf = bytearray()
    pending: asyncio.Task[None] | None = None
    async for chunk in snapshot.chunks():
        buf += chunk
        while len(buf) > size:  # the final chunk carries the total: keep it back
            if pending is not None:
                await pending
            part = bytes(buf[:size])
            del buf[:size]
            pending = asyncio.create_task(put(part, sent, None))
            sent += len(part)
    if pending is not None:
        await pending
    await put(bytes(buf), sent, sent + len(buf))
    return snapshot.first_byte


async def main(argv: list[str]) -> None:
    url, target, endpoint, bucket, key, part_size, concurrency, *rest = argv
    if rest not in ([], ["none"], ["sha256"]):
        raise SystemExit(f"HASH must be none or sha256, not {rest}")
    args: dict[str, Any] = {
        "url": url,
        "endpoint": endpoint,
        "bucket": bucket,
        "key": key,
        "part_size": int(part_size),
        "concurrency": int(concurrency),
    }
    upload = {
        "s3": s3,
        "s3tls": s3,
        "gcs": gcs,
        "gcschunks": gcs_chunks,
        "azure": azure,
        "azuretls": azure,
    }[target]
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        hasher = Hasher(enabled=rest == ["sha256"])
        args["snapshot"] = Snapshot(http=http, url=url, hasher=hasher)
        t0 = await upload(http, args)
    print(json.dumps({"seconds": time.monotonic() - t0}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
