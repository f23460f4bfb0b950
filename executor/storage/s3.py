"""S3 and S3-compatible storage with aiobotocore: parallel multipart upload with SHA-256 parts.

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot is a multipart upload; every part is ``OBB_PART_SIZE`` bytes (the last may be
  smaller), at most ``OBB_CONCURRENCY`` in flight, each sent without a copy from a reused part
  buffer (:mod:`executor.storage.parts`); retries re-read the same bytes;
* every part carries an integrity check that S3 verifies before it stores the part, the
  cheapest one available (:func:`part_checksum`): over HTTPS a CRC32
  (``ChecksumAlgorithm=CRC32`` on the upload, ``x-amz-checksum-crc32`` on each part, listed
  again in CompleteMultipartUpload) with ``UNSIGNED-PAYLOAD`` signing (TLS protects the
  bytes; a SHA-256 payload signature would hash every part a second time); over plain HTTP
  (emulators, a MinIO without TLS) botocore always signs the payload, so S3 already checks
  the part's SHA-256 and no second checksum is computed. Never an aws-chunked trailer, which
  S3-compatible stores such as MinIO, R2 and B2 reject;
* any failure or cancellation before completion aborts the multipart upload
  (AbortMultipartUpload); if even the abort fails the error is logged with the upload id and
  a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the last line of defence;
* uploads left behind by a KILLED run (no abort ran) are aborted by the next backup of the
  same cluster (:meth:`S3Sink.clean_abandoned`: ListMultipartUploads with
  ``Prefix=<cluster prefix>``, AbortMultipartUpload for each one whose ``Initiated`` is before
  the run started; needs ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload``);
* S3 cannot set metadata after an upload completes, so the object's user metadata holds the
  context known at start (cluster, trigger, executor version) and the sha256/size are added
  as object TAGS after completion (best effort: some S3-compatible stores have no tagging;
  the manifest is authoritative);
* ``request_checksum_calculation``/``response_checksum_validation`` are ``when_required``
  (no default CRC trailers); path-style addressing is used for custom endpoints unless
  ``OBB_USE_PATH_STYLE=false``; TLS verification uses ``OBB_STORAGE_CACERT`` or the system
  store and is never disabled;
* credentials: static keys, IRSA web identity, or the default botocore chain (EKS Pod
  Identity, instance profile); if none resolve the run fails with a ConfigurationError -
  requests are never sent unsigned;
* botocore/aiohttp errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from executor.contract import S3Credentials, StorageSettings
from executor.errors import (
    ConfigurationError,
    ExecutorError,
    ObjectNotFound,
    StorageError,
)
from executor.log import get_logger
from executor.storage.base import (
    META_SHA256,
    META_SIZE,
    CleanupResult,
    NumberedUpload,
    ObjectInfo,
    check_cleanup_prefix,
    is_abandoned,
)
from executor.storage.parts import Part

log = get_logger("executor.storage.s3")

MAX_PARTS = 10_000
_READ_CHUNK = 1 << 20
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _translate(exc: BaseException, *, doing: str, bucket: str) -> ExecutorError:
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigurationError(
            f"{doing}: no usable S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "IRSA, or a pod identity): " + str(exc)
        )
    if isinstance(exc, NoRegionError):
        return ConfigurationError(f"{doing}: no S3 region: set OBB_REGION")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = str(err.get("Message", "")) or code
        if code == "NoSuchBucket":
            return ObjectNotFound(
                f"{doing}: bucket {bucket!r} does not exist (the executor never creates buckets)"
            )
        if code in _NOT_FOUND:
            return ObjectNotFound(f"{doing}: not found")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"{doing}: access denied by S3 ({code}: {message})")
        return StorageError(f"{doing}: S3 answered {code} (HTTP {status}): {message}")
    if isinstance(exc, SSLError):
        return StorageError(f"{doing}: TLS verification failed: {exc}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return StorageError(f"{doing}: cannot reach the S3 endpoint: {exc}")
    if isinstance(exc, ReadTimeoutError | asyncio.TimeoutError):
        return StorageError(f"{doing}: timed out")
    return StorageError(f"{doing}: {exc.__class__.__name__}: {exc}")


_FOREIGN = (BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


@contextmanager
def _translated(doing: str, *, bucket: str) -> Iterator[None]:
    try:
        yield
    except ExecutorError:
        raise
    except _FOREIGN as exc:
        raise _translate(exc, doing=doing, bucket=bucket) from None


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
        with _translated(f"uploading part {number} of {self.key}", bucket=self._bucket):
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
        with _translated(f"completing the upload of {self.key}", bucket=self._bucket):
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
        except _FOREIGN as exc:
            log.warning(
                "could not tag the snapshot with its sha256/size (the manifest has them)",
                key=self.key,
                error=str(_translate(exc, doing="tagging", bucket=self._bucket)),
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
        except _FOREIGN as exc:
            log.error(
                "could not abort the multipart upload: a lifecycle rule "
                "(AbortIncompleteMultipartUpload) must clean it up",
                key=self.key,
                upload_id=self.upload_id,
                error=str(_translate(exc, doing="aborting", bucket=self._bucket)),
            )


class S3Sink:
    """One S3 bucket."""

    def __init__(self, *, client: Any, settings: StorageSettings) -> None:
        self._client = client
        self._settings = settings
        self._bucket = settings.bucket

    def _t(self, doing: str) -> Any:
        return _translated(doing, bucket=self._bucket)

    async def begin(self, *, key: str, metadata: Mapping[str, str]) -> S3Upload:
        checksum = part_checksum(endpoint=self._settings.endpoint)
        extra = {"ChecksumAlgorithm": "CRC32"} if checksum else {}
        with self._t(f"starting the upload of {key}"):
            resp = await self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                ContentType="application/gzip",
                Metadata=dict(metadata),
                **extra,
            )
        return S3Upload(
            client=self._client,
            bucket=self._bucket,
            key=key,
            upload_id=resp["UploadId"],
            part_size=self._settings.part_size,
            concurrency=self._settings.concurrency,
            checksum=checksum,
        )

    async def head(self, *, key: str) -> ObjectInfo:
        with self._t(f"looking up {key}"):
            resp = await self._client.head_object(Bucket=self._bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            version=resp.get("ETag"),
            metadata=dict(resp.get("Metadata", {})),
        )

    @asynccontextmanager
    async def get(
        self, *, key: str, version: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        kwargs = {"IfMatch": version} if version else {}
        with self._t(f"reading {key}"):
            resp = await self._client.get_object(Bucket=self._bucket, Key=key, **kwargs)
        body = resp["Body"]
        try:
            yield self._chunks(body, key)
        finally:
            body.close()

    async def _chunks(self, body: Any, key: str) -> AsyncIterator[bytes]:
        with self._t(f"reading {key}"):
            async for chunk in body.iter_chunks(_READ_CHUNK):
                yield chunk

    async def read_small(self, *, key: str, limit: int) -> bytes:
        async with self.get(key=key) as chunks:
            data = bytearray()
            async for chunk in chunks:
                data += chunk
                if len(data) > limit:
                    raise StorageError(f"{key} is larger than {limit} bytes")
            return bytes(data)

    async def put_small(self, *, key: str, data: bytes, content_type: str) -> None:
        with self._t(f"writing {key}"):
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )

    async def delete(self, *, key: str) -> bool:
        with self._t(f"deleting {key}"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        return True

    async def list(self, *, prefix: str) -> AsyncIterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._t(f"listing {prefix}"):
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"], size=int(item["Size"]), version=item.get("ETag")
                    )

    async def clean_abandoned(
        self, *, prefix: str, before: dt.datetime, result: CleanupResult
    ) -> None:
        """Abort the multipart uploads under ``prefix`` initiated before ``before``."""
        check_cleanup_prefix(prefix)
        stale: list[tuple[str, str]] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._t(f"listing the unfinished uploads under {prefix}"):
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                for item in page.get("Uploads", []):
                    if is_abandoned(
                        key=item["Key"], started=item.get("Initiated"), prefix=prefix, before=before
                    ):
                        stale.append((item["Key"], item["UploadId"]))
        for key, upload_id in stale:
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    continue  # completed or aborted meanwhile
                raise _translate(
                    exc, doing=f"aborting the unfinished upload of {key}", bucket=self._bucket
                ) from None
            except _FOREIGN as exc:
                raise _translate(
                    exc, doing=f"aborting the unfinished upload of {key}", bucket=self._bucket
                ) from None
            result.removed.append(key)
            log.info(
                "aborted an unfinished multipart upload left by an earlier run",
                key=key,
                upload_id=upload_id,
            )


@asynccontextmanager
async def open_s3(*, settings: StorageSettings) -> AsyncIterator[S3Sink]:
    creds = settings.credentials
    assert isinstance(creds, S3Credentials)
    session = get_session()
    config = AioConfig(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": settings.retries + 1, "mode": "standard"},
        max_pool_connections=max(10, settings.concurrency + 4),
        s3={
            "addressing_style": "path" if settings.use_path_style else "virtual",
            # Over TLS parts carry a CRC32: never hash them again for the signature. Over
            # plain HTTP it stays unset and botocore signs the payload (S3 checks that SHA-256).
            **(
                {"payload_signing_enabled": False}
                if part_checksum(endpoint=settings.endpoint)
                else {}
            ),
        },
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {}
    if creds.kind == "static":
        kwargs.update(
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
        )
    else:
        with _translated("resolving S3 credentials", bucket=settings.bucket):
            resolved = await session.get_credentials()
        if resolved is None:
            raise ConfigurationError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, IRSA "
                "(AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) or a pod identity"
            )
    with _translated("creating the S3 client", bucket=settings.bucket):
        cm = session.create_client(
            "s3",
            region_name=settings.region,
            endpoint_url=settings.endpoint,
            verify=str(settings.cacert) if settings.cacert else None,
            config=config,
            **kwargs,
        )
        client = await cm.__aenter__()
    try:
        log.info(
            "S3 client ready",
            bucket=settings.bucket,
            endpoint=settings.endpoint,
            credentials=creds.kind,
            path_style=settings.use_path_style,
        )
        yield S3Sink(client=client, settings=settings)
    finally:
        await cm.__aexit__(None, None, None)
