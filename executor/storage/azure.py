"""Azure Blob Storage with azure-storage-blob (aio): the sink (staged blocks, one commit).

Guarantees (beyond :mod:`executor.storage.base`):

* a snapshot becomes visible only through ONE ``commit_block_list`` after the verifier
  accepted the stream, never over an existing blob; blocks, their integrity checks and what a
  failure leaves behind are :mod:`executor.storage.azure_blocks`'s guarantees;
* staged blocks left by a KILLED run live on a blob with no committed content (it appears only
  in listings with ``include=uncommittedblobs``); the next backup of the same cluster deletes
  such blobs under the cluster's prefix whose last modification is before the run started
  (:meth:`AzureSink.clean_abandoned`). A blob is a candidate only if it is absent from the
  committed listing taken AFTER the uncommitted one and Get Blob Properties still answers 404
  right before the delete, so a committed blob is never deleted;
* credentials, first match wins: ``AZURE_STORAGE_CONNECTION_STRING`` (must carry an account key
  or SAS: an anonymous connection string is refused), ``AZURE_STORAGE_KEY`` with
  ``OBB_AZURE_ACCOUNT``, else ``DefaultAzureCredential`` (workload identity, managed identity).
  A client without credentials is never created. TLS uses ``OBB_STORAGE_CACERT`` or the
  system store and is never disabled;
* one TLS context per run, so connections are pooled and reused (at most about
  ``OBB_CONCURRENCY`` open): with a CA bundle the client gets our own aiohttp session whose
  connector holds the one context (:func:`_transport`). azure-core, given the bundle as a
  path, builds a NEW ``SSLContext`` for every request, so aiohttp could reuse no connection:
  one TLS handshake per block, and every idle connection kept, so memory grew with the
  blob's size (measured: 152 MiB at 256 MiB, 196 MiB at 1 GiB, against a flat 140);
* azure-core / azure-identity errors are translated once, by
  :mod:`executor.storage.azure_errors`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from azure.core import MatchConditions
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, ExponentialRetry

from executor.contract import AzureCredentials, StorageSettings
from executor.errors import ConfigurationError, ObjectNotFound, StorageError
from executor.log import get_logger
from executor.storage.azure_blocks import AzureUpload, meta_name
from executor.storage.azure_errors import translated
from executor.storage.base import CleanupResult, ObjectInfo, check_cleanup_prefix, is_abandoned
from executor.tls import ssl_context

log = get_logger("executor.storage.azure")

_GET_CHUNK = 4 << 20


class AzureSink:
    """One blob container."""

    def __init__(self, *, container: ContainerClient, settings: StorageSettings) -> None:
        self._container = container
        self._settings = settings
        self._name = settings.bucket

    def _t(self, doing: str) -> Any:
        return translated(doing, container=self._name)

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
            metadata={meta_name(k): v for k, v in metadata.items()},
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


def _transport(*, settings: StorageSettings, stack: AsyncExitStack) -> AioHttpTransport | None:
    """With a CA bundle: azure-core's aiohttp transport on our session, whose connector holds
    ONE context (see module; the session is closed by ``stack``). Without: None, and azure-core
    uses aiohttp's default context, which it already shares between requests."""
    if settings.cacert is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context(str(settings.cacert))),
        cookie_jar=aiohttp.DummyCookieJar(),  # what azure-core's own session uses
        auto_decompress=False,
        trust_env=True,
    )
    stack.push_async_callback(session.close)
    return AioHttpTransport(
        session=session,
        session_owner=False,
        connection_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )


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
    }
    async with AsyncExitStack() as stack:
        transport = _transport(settings=settings, stack=stack)
        if transport is not None:
            common["transport"] = transport
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
