"""One S3 multipart upload: parallel parts from reused buffers, each integrity-checked by S3.

Guarantees:

* every part is ``OBB_PART_SIZE`` bytes (the last may be smaller), at most
  ``OBB_CONCURRENCY`` in flight, each sent without a copy from a reused part buffer
  (:mod:`executor.storage.parts`); retries re-read the same bytes;
* every part carries an integrity check that S3 verifies before it stores the part, the
  cheapest one available (:func:`part_checksum`): over HTTPS a CRC32
  (``ChecksumAlgorithm=CRC32`` on the upload, ``x-amz-checksum-crc32`` on each part, listed
  again in CompleteMultipartUpload) with ``UNSIGNED-PAYLOAD`` signing (TLS protects the
  bytes; a SHA-256 payload signature would hash every part a second time); over plain HTTP
  (emulators, a MinIO without TLS) botocore always signs the payload, so S3 already checks
  the part's SHA-256 and no second checksum is computed. Never an aws-chunked trailer, which
  S3-compatible stores such as MinIO, R2 and B2 reject;
* :meth:`S3Upload.commit` completes the upload (the object appears at once) and then tags it
  with its sha256/size (best effort: some S3-compatible stores have no tagging; the manifest
  is authoritative);
* :meth:`S3Upload.abort` (any failure or cancellation before completion) cancels the parts
  in flight and aborts the multipart upload; if even the abort fails the error is logged
  with the upload id and a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the
  last line of defence.
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from typing import Any

from executor.log import get_logger
from executor.storage.base import META_SHA256, META_SIZE, NumberedUpload
from executor.storage.parts import Part
from executor.storage.s3_errors import FOREIGN, translate, translated

log = get_logger("executor.storage.s3")

MAX_PARTS = 10_000


def part_checksum(*, endpoint: str | None) -> bool:
    """Whether parts carry a CRC32 of their own: over HTTPS (and AWS's default endpoint).
    Over plain HTTP botocore signs the payload with its SHA-256, which S3 verifies."""
    return endpoint is None or endpoint.lower().startswith("https://")


def crc32_b64(data: memoryview | bytes) -> str:
    """The ``x-amz-checksum-crc32`` value: base64 of the big-endian CRC-32."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


class S3Upload(NumberedUpload[dict[str, Any]]):
    """One multipart upload (see module guarantees)."""

    def __init__(
        self,
        *,
        client: Any,
        bucket: str,
        key: str,
        upload_id: str,
        part_size: int,
        concurrency: int,
        checksum: bool,
    ) -> None:
        super().__init__(key=key, part_size=part_size, concurrency=concurrency, max_parts=MAX_PARTS)
        self.upload_id = upload_id
        self._client = client
        self._bucket = bucket
        self._checksum = checksum

    async def _upload_part(self, number: int, part: Part) -> dict[str, Any]:
        extra: dict[str, str] = {}
        if self._checksum:  # zlib releases the GIL: the loop goes on reading meanwhile
            extra["ChecksumCRC32"] = await asyncio.to_thread(crc32_b64, part.view)
        with translated(f"uploading part {number} of {self.key}", bucket=self._bucket):
            resp = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=part.body(),
                ContentLength=len(part),
                **extra,
            )
        return {"PartNumber": number, "ETag": resp["ETag"], **extra}

    async def commit(self, *, sha256: str, size: int) -> None:
        parts = await self._all_parts(size=size)
        with translated(f"completing the upload of {self.key}", bucket=self._bucket):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
        self._finished = True
        log.info("multipart upload completed", key=self.key, parts=len(parts), size=size)
        try:
            await self._client.put_object_tagging(
                Bucket=self._bucket,
                Key=self.key,
                Tagging={
                    "TagSet": [
                        {"Key": META_SHA256, "Value": sha256},
                        {"Key": META_SIZE, "Value": str(size)},
                    ]
                },
            )
        except FOREIGN as exc:
            log.warning(
                "could not tag the snapshot with its sha256/size (the manifest has them)",
                key=self.key,
                error=str(translate(exc, doing="tagging", bucket=self._bucket)),
            )

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._uploader.cancel()
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self.upload_id
            )
            log.info("multipart upload aborted", key=self.key)
        except FOREIGN as exc:
            log.error(
                "could not abort the multipart upload: a lifecycle rule "
                "(AbortIncompleteMultipartUpload) must clean it up",
                key=self.key,
                upload_id=self.upload_id,
                error=str(translate(exc, doing="aborting", bucket=self._bucket)),
            )
