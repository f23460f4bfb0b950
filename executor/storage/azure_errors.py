"""azure-core/azure-identity/aiohttp errors of Azure Blob calls, translated into the executor's
errors, once.

Guarantees: :func:`translate` maps every foreign error (:data:`FOREIGN`) to a
:class:`~executor.errors.ObjectNotFound` (missing blob, or missing container: the executor
never creates containers) or :class:`~executor.errors.StorageError` naming what was being
done (refused credentials, access denied, an existing blob at the key, a blob changed since it
was verified, an unreachable endpoint, a timeout), with the first line of the service's
message at most; :func:`translated` applies it to a block and lets the executor's own errors
through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from executor.errors import ExecutorError, ObjectNotFound, StorageError

FOREIGN = (AzureError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


def translate(exc: BaseException, *, doing: str, container: str) -> ExecutorError:
    if isinstance(exc, ClientAuthenticationError):
        return StorageError(f"{doing}: Azure refused the credentials: {_msg(exc)}")
    if isinstance(exc, ResourceNotFoundError):
        code = getattr(exc, "error_code", None)
        if code == "ContainerNotFound":
            return ObjectNotFound(
                f"{doing}: container {container!r} does not exist (the executor never creates "
                "containers)"
            )
        return ObjectNotFound(f"{doing}: not found")
    if isinstance(exc, ResourceModifiedError):
        return StorageError(f"{doing}: the blob changed since it was verified")
    if isinstance(exc, ResourceExistsError):
        code = getattr(exc, "error_code", None)
        if code in ("BlobAlreadyExists", "ConditionNotMet"):
            return StorageError(f"{doing}: a blob already exists at this key")
        return StorageError(f"{doing}: Azure answered 409 ({code}): {_msg(exc)}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = getattr(exc, "error_code", None)
        if status == 403:
            return StorageError(f"{doing}: access denied by Azure ({code}): {_msg(exc)}")
        return StorageError(f"{doing}: Azure answered HTTP {status} ({code}): {_msg(exc)}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StorageError(f"{doing}: cannot reach the blob endpoint: {_msg(exc)}")
    if isinstance(exc, asyncio.TimeoutError):
        return StorageError(f"{doing}: timed out")
    return StorageError(f"{doing}: {exc.__class__.__name__}: {_msg(exc)}")


def _msg(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


@contextmanager
def translated(doing: str, *, container: str) -> Iterator[None]:
    try:
        yield
    except ExecutorError:
        raise
    except FOREIGN as exc:
        raise translate(exc, doing=doing, container=container) from None
