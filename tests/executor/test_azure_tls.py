"""The Azure path as it runs against Azure with a private CA: over TLS, ``OBB_STORAGE_CACERT``.

Azurite serves HTTPS here with a certificate from a fresh test CA, behind a loopback TCP
proxy that counts the connections the executor opens. azure-core, given the CA bundle as a
path, builds a new TLS context for every request, so aiohttp pooled nothing: one connection
and handshake per block, every idle one kept, memory growing with the blob's size. The
executor now hands azure-core a session that holds one context: the blocks of a snapshot
travel over at most ``OBB_CONCURRENCY`` (+ the calls before and after) reused connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from devenv.certs import make_pki
from devenv.storage import AZURITE_ACCOUNT, azurite_connection_string, start_azurite

from executor.contract import load_config
from executor.errors import ConfigurationError
from executor.storage.azure import open_azure
from tests.executor.harness import cluster_env, storage_env, token_env

BLOCK = 256 << 10
BLOCKS = 24
CONCURRENCY = 2


class CountingProxy:
    """A loopback TCP pass-through to ``port`` that counts the connections it accepted."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.connections = 0
        self._pipes: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            await server.wait_closed()


@pytest.fixture
def tls_azurite(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Azurite on https://127.0.0.1:PORT/ACCOUNT; (endpoint, CA bundle)."""
    pki = make_pki(tmp_path / "pki")
    srv = start_azurite(tmp_path, tls=pki)
    try:
        yield srv.endpoint, pki.ca_cert
    finally:
        srv.stop()


async def test_blocks_travel_over_pooled_tls_connections(
    tls_azurite: tuple[str, Path], tmp_path: Path
) -> None:
    from azure.storage.blob import BlobServiceClient

    endpoint, ca = tls_azurite
    service = BlobServiceClient.from_connection_string(
        azurite_connection_string(endpoint), connection_verify=str(ca)
    )
    service.create_container("tls")
    proxy = CountingProxy(urlsplit(endpoint).port or 443)
    data = os.urandom(BLOCKS * BLOCK - 1000)
    async with proxy.serve() as port:
        env = {
            **cluster_env(),
            **token_env("http://127.0.0.1:1", "t", tmp_path),
            **storage_env(
                "azure", endpoint=f"https://127.0.0.1:{port}/{AZURITE_ACCOUNT}", bucket="tls"
            ),
            "OBB_STORAGE_CACERT": str(ca),
            "OBB_PART_SIZE": str(BLOCK),
            "OBB_CONCURRENCY": str(CONCURRENCY),
        }
        settings = load_config(mode="backup", environ=env).storage
        async with open_azure(settings=settings) as sink:
            upload = await sink.begin(key="n/c/x.snap", metadata={"obb-cluster": "c"})
            for i in range(0, len(data), 100_000):
                await upload.write(data[i : i + 100_000])
            await upload.commit(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    stored = service.get_blob_client("tls", "n/c/x.snap").download_blob().readall()
    assert stored == data
    # Before: one connection per request (24 blocks + the calls around them).
    assert 1 <= proxy.connections <= CONCURRENCY + 2, (
        f"{proxy.connections} connections for {BLOCKS} blocks: TLS connections are not reused"
    )


async def test_an_unreadable_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    bundle = tmp_path / "not-a-ca.pem"
    bundle.write_text("not a certificate\n")
    env = {
        **cluster_env(),
        **token_env("http://127.0.0.1:1", "t", tmp_path),
        **storage_env("azure", endpoint=f"https://127.0.0.1:1/{AZURITE_ACCOUNT}", bucket="bkt"),
        "OBB_STORAGE_CACERT": str(bundle),
    }
    settings = load_config(mode="backup", environ=env).storage
    with pytest.raises(ConfigurationError, match=f"cannot load CA bundle {bundle}"):
        async with open_azure(settings=settings):
            pass
