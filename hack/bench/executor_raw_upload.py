"""The raw-client side of ``executor_throughput.py``: upload one served snapshot, no checks.

Run as a subprocess (so its CPU seconds and peak RSS are its own)::

    python hack/bench/executor_raw_upload.py URL TARGET ENDPOINT BUCKET KEY PART_SIZE CONCURRENCY

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
* ``azure``: azure-storage-blob (aio) ``stage_block`` (``CONCURRENCY`` in flight) then
  ``commit_block_list``.

Prints ``{"seconds": ...}``: first snapshot byte to upload complete.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


async def _parts(
    *,
    http: aiohttp.ClientSession,
    url: str,
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

    t0: float | None = None
    buf = bytearray()
    async with http.get(url) as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            if t0 is None:
                t0 = time.monotonic()
            buf += chunk
            while len(buf) >= part_size:
                part = bytes(buf[:part_size])
                del buf[:part_size]
                await submit(part)
    if buf or not tasks:
        await submit(bytes(buf))
    assert t0 is not None
    return t0, list(await asyncio.gather(*tasks))


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
            http=http, url=a["url"], part_size=a["part_size"], concurrency=a["concurrency"], put=put
        )
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    return t0


async def azure(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(a["endpoint"]) as svc:
        blob = svc.get_blob_client(a["bucket"], a["key"])

        async def put(n: int, data: bytes) -> str:
            block_id = f"{n:08d}"
            await blob.stage_block(block_id, data, length=len(data))
            return block_id

        t0, ids = await _parts(
            http=http, url=a["url"], part_size=a["part_size"], concurrency=a["concurrency"], put=put
        )
        await blob.commit_block_list(ids)
    return t0


async def gcs(http: aiohttp.ClientSession, a: dict[str, Any]) -> float:
    from gcloud.aio.storage import Storage

    t0: float | None = None
    stream = io.BytesIO()
    async with http.get(a["url"]) as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            if t0 is None:
                t0 = time.monotonic()
            stream.write(chunk)
    stream.seek(0)
    assert t0 is not None
    async with Storage(api_root=a["endpoint"]) as storage:
        await storage.upload(
            a["bucket"],
            a["key"],
            stream,
            content_type="application/gzip",
            force_resumable_upload=True,
            timeout=3600,
        )
    return t0


async def main(argv: list[str]) -> None:
    url, target, endpoint, bucket, key, part_size, concurrency = argv
    args: dict[str, Any] = {
        "url": url,
        "endpoint": endpoint,
        "bucket": bucket,
        "key": key,
        "part_size": int(part_size),
        "concurrency": int(concurrency),
    }
    upload = {"s3": s3, "s3tls": s3, "gcs": gcs, "azure": azure}[target]
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        t0 = await upload(http, args)
    print(json.dumps({"seconds": time.monotonic() - t0}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
