"""botocore/aiohttp errors of S3 calls, translated into the executor's errors, once.

Guarantees: :func:`translate` maps every foreign error to a
:class:`~executor.errors.ConfigurationError` (no credentials, no region),
:class:`~executor.errors.ObjectNotFound` (missing key or bucket: the executor never creates
buckets) or :class:`~executor.errors.StorageError` naming what was being done, without
credentials in the text; :func:`translated` applies it to a block and lets the executor's
own errors through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
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

from executor.errors import ConfigurationError, ExecutorError, ObjectNotFound, StorageError

NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def translate(exc: BaseException, *, doing: str, bucket: str) -> ExecutorError:
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
        if code in NOT_FOUND:
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


FOREIGN = (BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


@contextmanager
def translated(doing: str, *, bucket: str) -> Iterator[None]:
    try:
        yield
    except ExecutorError:
        raise
    except FOREIGN as exc:
        raise translate(exc, doing=doing, bucket=bucket) from None
