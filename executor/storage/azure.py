"""Azure Blob Storage with azure-storage-blob (aio): staged blocks, one commit.

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot is uploaded as blocks of ``OBB_PART_SIZE`` bytes with ``stage_block`` (at most
  ``OBB_CONCURRENCY`` in flight, each sent without a copy from a reused part buffer,
  :mod:`executor.storage.parts`) and
  becomes visible only through ONE ``commit_block_list`` after the verifier accepted the
  stream; the commit carries the sha256/size and context as blob metadata (atomically) and
  ``If-None-Match: *`` (an existing blob is never overwritten);
* every block is integrity-checked by the service at the cheapest cost available
  (:func:`block_md5`): over HTTPS by TLS alone (azure-storage-blob's own guidance: a
  transactional hash adds nothing over HTTPS; MD5 runs at ~0.3-0.7 GiB/s here, the largest
  cost only we paid, and CRC64 needs the native azure-storage-extensions package, which
  Azurite does not check either); over plain HTTP (Azurite, tests) each block carries a
  transactional MD5 (``Content-MD5``), computed in a worker thread, that the service checks;
* on failure nothing is committed: staged blocks stay invisible and the service discards them
  (after a week); there is no blob at the key;
* staged blocks left by a KILLED run live on a blob with no committed content (it appears only
  in listings with ``include=uncommittedblobs``); the next backup of the same cluster deletes
  such blobs under the cluster's prefix whose last modification is before the run started
  (:meth:`AzureSink.clean_abandoned`). A blob is a candidate only if it is absent from the
  committed listing taken AFTER the uncommitted one and Get Blob Properties still answers 404
  right before the delete, so a committed blob is never deleted;
* block ids are the zero-padded block number (equal length; base64 on the wire); at most
  50,000 blocks (``OBB_PART_SIZE`` x 50,000 is the largest snapshot);
* credentials, first match wins: ``AZURE_STORAGE_CONNECTION_STRING`` (must carry an account key
  or SAS: an anonymous connection string is refused), ``AZURE_STORAGE_KEY`` with
  ``OBB_AZURE_ACCOUNT``, else ``DefaultAzureCredential`` (workload identity, managed identity).
  A client without credentials is never created. TLS uses ``OBB_STORAGE_CACERT`` or the
  system store and is never disabled;
* azure-core / azure-identity errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import aiohttp
from azure.core import MatchConditions
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
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, ExponentialRetry

from executor.contract import AzureCredentials, StorageSettings
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

log = get_logger("executor.storage.azure")

MAX_BLOCKS = 50_000
_GET_CHUNK = 4 << 20
_FOREIGN = (AzureError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _meta_name(name: str) -> str:
    """Azure metadata names must be C# identifiers."""
    return name.replace("-", "_")


def _translate(exc: BaseException, *, doing: str, container: str) -> ExecutorError:
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
def _translated(doing: str, *, container: str) -> Iterator[None]:
    try:
        yield
    except ExecutorError:
        raise
    except _FOREIGN as exc:
        raise _translate(exc, doing=doing, container=container) from None


def _md5(data: memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def block_md5(*, scheme: str) -> bool:
    """Whether blocks carry a transactional MD5: only without TLS (see the module)."""
    return scheme.lower() != "https"


def _block_id(number: int) -> str:
    """Equal-length block ids (the SDK base64-encodes them on the wire)."""
    return f"{number:08d}"


class AzureUpload(NumberedUpload[str]):
    """One block-blob upload (see module guarantees)."""

    unit = "blocks"

    def __init__(
        self,
        *,
        blob: Any,
        container: str,
        key: str,
        part_size: int,
        concurrency: int,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(
            key=key, part_size=part_size, concurrency=concurrency, max_parts=MAX_BLOCKS
        )
        self._blob = blob
        self._container = container
        self._metadata = dict(metadata)
        self._md5 = block_md5(scheme=str(getattr(blob, "scheme", "https")))

    async def _upload_part(self, number: int, part: Part) -> str:
        block_id = _block_id(number)
        extra: dict[str, bytes] = {}
        if self._md5:  # off the event loop (the SDK would hash inline)
            extra["transactional_content_md5"] = await asyncio.to_thread(_md5, part.view)
        with _translated(f"staging block {number} of {self.key}", container=self._container):
            await self._blob.stage_block(block_id, part.body(), length=len(part), **extra)
        return block_id

    async def commit(self, *, sha256: str, size: int) -> None:
        ids = await self._all_parts(size=size)
        metadata = {
            **self._metadata,
            _meta_name(META_SHA256): sha256,
            _meta_name(META_SIZE): str(size),
        }
        with _translated(f"committing {self.key}", container=self._container):
            await self._blob.commit_block_list(
                [BlobBlock(block_id=block_id) for block_id in ids],
                content_settings=ContentSettings(content_type="application/gzip"),
                metadata=metadata,
                match_condition=MatchConditions.IfMissing,
            )
        self._finished = True
        log.info("block blob committed", key=self.key, blocks=len(ids), size=size)

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._uploader.cancel()
        log.info("upload abandoned: nothing committed, staged blocks expire", key=self.key)


class AzureSink:
    """One blob container."""

    def __init__(self, *, container: ContainerClient, settings: StorageSettings) -> None:
        self._container = container
        self._settings = settings
        self._name = settings.bucket

    def _t(self, doing: str) -> Any:
        return _translated(doing, container=self._name)

    async def begin(self, *, key: str, metadata: Mapping[str, str]) -> AzureUpload:
        blob = self._container.get_blob_client(key)
        with self._t(f"checking {key}"):
            if await blob.exists():
                raise StorageError(f"a blob already exists at {key}")
        return AzureUpload(
            blob=blob,
            container=self._name,
            key=key,
            part_size=self._settings.part_size,
            concurrency=self._settings.concurrency,
            metadata={_meta_name(k): v for k, v in metadata.items()},
        )

    async def head(self, *, key: str) -> ObjectInfo:
        with self._t(f"looking up {key}"):
            props = await self._container.get_blob_client(key).get_blob_properties()
        return ObjectInfo(
            key=key, size=int(props.size), version=props.etag, metadata=dict(props.metadata or {})
        )

    @asynccontextmanager
    async def get(
        self, *, key: str, version: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        kwargs: dict[str, Any] = {"max_concurrency": 1}
        if version:
            kwargs.update(etag=version, match_condition=MatchConditions.IfNotModified)
        with self._t(f"reading {key}"):
            downloader = await self._container.get_blob_client(key).download_blob(**kwargs)
        yield self._chunks(downloader, key)

    async def _chunks(self, downloader: Any, key: str) -> AsyncIterator[bytes]:
        with self._t(f"reading {key}"):
            async for chunk in downloader.chunks():
                yield chunk

    async def read_small(self, *, key: str, limit: int) -> bytes:
        with self._t(f"reading {key}"):
            downloader = await self._container.get_blob_client(key).download_blob()
            if downloader.size > limit:
                raise StorageError(f"{key} is larger than {limit} bytes")
            data: bytes = await downloader.readall()
        return data

    async def put_small(self, *, key: str, data: bytes, content_type: str) -> None:
        with self._t(f"writing {key}"):
            await self._container.get_blob_client(key).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )

    async def delete(self, *, key: str) -> bool:
        try:
            with self._t(f"deleting {key}"):
                await self._container.get_blob_client(key).delete_blob(delete_snapshots="include")
        except ObjectNotFound:
            return False
        return True

    async def list(self, *, prefix: str) -> AsyncIterator[ObjectInfo]:
        with self._t(f"listing {prefix}"):
            async for item in self._container.list_blobs(name_starts_with=prefix):
                yield ObjectInfo(key=item.name, size=int(item.size), version=item.etag)

    async def clean_abandoned(
        self, *, prefix: str, before: dt.datetime, result: CleanupResult
    ) -> None:
        """Delete the blobs under ``prefix`` that hold only uncommitted blocks, last modified
        before ``before``."""
        check_cleanup_prefix(prefix)
        listed: dict[str, dt.datetime | None] = {}
        with self._t(f"listing the uncommitted blobs under {prefix}"):
            async for item in self._container.list_blobs(
                name_starts_with=prefix, include=["uncommittedblobs"]
            ):
                listed[item.name] = item.last_modified or item.creation_time
            # Listed second: a blob committed in between shows up here and is left alone.
            async for item in self._container.list_blobs(name_starts_with=prefix):
                listed.pop(item.name, None)
        for name, modified in listed.items():
            if not is_abandoned(key=name, started=modified, prefix=prefix, before=before):
                continue
            blob = self._container.get_blob_client(name)
            try:
                with self._t(f"checking the uncommitted blob {name}"):
                    await blob.get_blob_properties()
                continue  # it has committed content now: not ours to delete
            except ObjectNotFound:
                pass
            try:
                with self._t(f"deleting the uncommitted blob {name}"):
                    await blob.delete_blob()
            except ObjectNotFound:
                continue  # expired or removed meanwhile
            result.removed.append(name)
            log.info("deleted the uncommitted blocks an earlier run left behind", key=name)


@asynccontextmanager
async def open_azure(*, settings: StorageSettings) -> AsyncIterator[AzureSink]:
    creds = settings.credentials
    assert isinstance(creds, AzureCredentials)
    common: dict[str, Any] = {
        "connection_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=settings.retries
        ),
        "max_single_get_size": _GET_CHUNK,
        "max_chunk_get_size": _GET_CHUNK,
        "connection_verify": str(settings.cacert) if settings.cacert else True,
    }
    async with AsyncExitStack() as stack:
        if creds.kind == "connection-string":
            assert creds.connection_string is not None
            if settings.endpoint:
                log.warning("OBB_ENDPOINT is ignored: the connection string names the endpoint")
            try:
                service = BlobServiceClient.from_connection_string(
                    creds.connection_string, **common
                )
            except ValueError as exc:
                raise ConfigurationError(
                    f"AZURE_STORAGE_CONNECTION_STRING is invalid: {exc}"
                ) from None
        else:
            account_url = settings.endpoint or (
                f"https://{settings.azure_account}.blob.core.windows.net"
            )
            credential: Any
            if creds.kind == "account-key":
                credential = {
                    "account_name": settings.azure_account,
                    "account_key": creds.account_key,
                }
            else:
                from azure.identity.aio import DefaultAzureCredential

                credential = DefaultAzureCredential()
                stack.push_async_callback(credential.close)
            service = BlobServiceClient(account_url, credential=credential, **common)
        await stack.enter_async_context(service)
        container = service.get_container_client(settings.bucket)
        log.info(
            "Azure client ready",
            container=settings.bucket,
            account=service.account_name,
            credentials=creds.kind,
        )
        yield AzureSink(container=container, settings=settings)
