"""S3 and S3-compatible storage with aiobotocore: the bucket, its client and the cleanup.

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot is a multipart upload (:class:`~executor.storage.s3_upload.S3Upload`: parts from
  reused buffers, each with the cheapest integrity check S3 verifies, aborted on any failure
  or cancellation before completion);
* uploads left behind by a KILLED run (no abort ran) are aborted by the next backup of the
  same cluster (:meth:`S3Sink.clean_abandoned`: ListMultipartUploads with
  ``Prefix=<cluster prefix>``, AbortMultipartUpload for each one whose ``Initiated`` is before
  the run started; needs ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload``);
* S3 cannot set metadata after an upload completes, so the object's user metadata holds the
  context known at start (cluster, trigger, executor version); the sha256/size are added as
  object TAGS after completion;
* ``request_checksum_calculation``/``response_checksum_validation`` are ``when_required``
  (no default CRC trailers); path-style addressing is used for custom endpoints unless
  ``OBB_USE_PATH_STYLE=false``; TLS verification uses ``OBB_STORAGE_CACERT`` or the system
  store and is never disabled;
* credentials: static keys, IRSA web identity, or the default botocore chain (EKS Pod
  Identity, instance profile); if none resolve the run fails with a ConfigurationError -
  requests are never sent unsigned;
* botocore/aiohttp errors are translated in :mod:`executor.storage.s3_errors`, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from executor.contract import S3Credentials, StorageSettings
from executor.errors import ConfigurationError, StorageError
from executor.log import get_logger
from executor.storage.base import CleanupResult, ObjectInfo, check_cleanup_prefix, is_abandoned
from executor.storage.s3_errors import FOREIGN, translate, translated
from executor.storage.s3_upload import S3Upload, part_checksum

log = get_logger("executor.storage.s3")

_READ_CHUNK = 1 << 20


class S3Sink:
    """One S3 bucket."""

    def __init__(self, *, client: Any, settings: StorageSettings) -> None:
        self._client = client
        self._settings = settings
        self._bucket = settings.bucket

    def _t(self, doing: str) -> Any:
        return translated(doing, bucket=self._bucket)

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
                raise translate(
                    exc, doing=f"aborting the unfinished upload of {key}", bucket=self._bucket
                ) from None
            except FOREIGN as exc:
                raise translate(
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
        with translated("resolving S3 credentials", bucket=settings.bucket):
            resolved = await session.get_credentials()
        if resolved is None:
            raise ConfigurationError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, IRSA "
                "(AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) or a pod identity"
            )
    with translated("creating the S3 client", bucket=settings.bucket):
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
