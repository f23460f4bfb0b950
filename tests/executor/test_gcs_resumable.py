"""The GCS resumable protocol against a strict local fake of the real service's semantics.

fake-gcs-server accepts every chunk whole and never answers 308 with a shorter Range, so the
resume path (persisted offset smaller than what was sent; 5xx then status query) is exercised
here against a small aiohttp server that behaves like GCS does.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from executor.contract import StorageSettings, load_config
from executor.errors import StorageError
from executor.storage.gcs import open_gcs

CHUNK = 256 * 1024


@dataclass
class FakeGcs:
    data: bytearray = field(default_factory=bytearray)
    finalized: bytes | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)
    short_once: set[int] = field(default_factory=set)  # chunk starts to half-persist once
    fail_once: set[int] = field(default_factory=set)  # chunk starts to answer 503 once
    always_500: bool = False
    cancelled: bool = False
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/upload/storage/v1/b/{bucket}/o", self.create)
        app.router.add_put("/session", self.put)
        app.router.add_delete("/session", self.cancel)
        app.router.add_patch("/storage/v1/b/{bucket}/o/{name}", self.patch)
        app.router.add_delete("/storage/v1/b/{bucket}/o/{name}", self.delete_object)
        return app

    async def create(self, request: web.Request) -> web.Response:
        assert request.query["uploadType"] == "resumable"
        assert request.query["ifGenerationMatch"] == "0"
        body = await request.json()
        self.metadata.update(body.get("metadata", {}))
        return web.json_response({}, headers={"Location": f"{self.url}/session"})

    def _range(self) -> dict[str, str]:
        return {"Range": f"bytes=0-{len(self.data) - 1}"} if self.data else {}

    async def put(self, request: web.Request) -> web.Response:
        if self.cancelled:
            return web.Response(status=404)
        content_range = request.headers["Content-Range"]
        self.puts.append(content_range)
        if self.always_500:
            if content_range.startswith("bytes */"):
                return web.Response(status=308, headers=self._range())
            return web.Response(status=500)
        body = await request.read()
        m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", content_range)
        assert m, content_range
        total = None if m.group(4) == "*" else int(m.group(4))
        if m.group(1) != "*":
            start, end = int(m.group(2)), int(m.group(3))
            assert end - start + 1 == len(body)
            assert start <= len(self.data), "a gap in the upload"
            if start in self.fail_once:
                self.fail_once.discard(start)
                return web.Response(status=503)
            if total is None:
                assert len(body) % CHUNK == 0, "non-final chunks must be 256 KiB multiples"
            keep = body[len(self.data) - start :]
            if start in self.short_once:
                self.short_once.discard(start)
                keep = keep[: len(keep) // 2 // CHUNK * CHUNK]
            self.data += keep
        if total is not None and len(self.data) == total:
            self.finalized = bytes(self.data)
            return web.json_response({"size": str(total), "generation": "7"})
        return web.Response(status=308, headers=self._range())

    async def cancel(self, request: web.Request) -> web.Response:
        self.cancelled = True
        return web.Response(status=499)

    async def patch(self, request: web.Request) -> web.Response:
        assert request.query["ifGenerationMatch"] == "7"
        self.metadata.update((await request.json())["metadata"])
        return web.json_response({})

    async def delete_object(self, request: web.Request) -> web.Response:
        return web.Response(status=404)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGcs]:
    gcs = FakeGcs()
    runner = web.AppRunner(gcs.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    gcs.url = f"http://127.0.0.1:{port}"
    try:
        yield gcs
    finally:
        await runner.cleanup()


def settings(fake: FakeGcs, tmp_path: Path) -> StorageSettings:
    token = tmp_path / "t"
    token.write_text("s.x-token")
    cfg = load_config(
        mode="backup",
        environ={
            "OBB_CLUSTER_NAMESPACE": "n",
            "OBB_CLUSTER_NAME": "c",
            "OBB_CLUSTER_UID": "u",
            "OBB_OPENBAO_ADDR": "http://127.0.0.1:1",
            "OBB_AUTH_METHOD": "token",
            "OBB_OPENBAO_TOKEN_FILE": str(token),
            "OBB_PROVIDER": "gcs",
            "OBB_BUCKET": "bkt",
            "OBB_ENDPOINT": fake.url,
            "OBB_EMULATOR": "true",
            "OBB_PART_SIZE": "512Ki",
            "OBB_STORAGE_RETRIES": "2",
        },
    )
    return cfg.storage


async def upload(fake: FakeGcs, tmp_path: Path, data: bytes, step: int = 100_000) -> None:
    async with open_gcs(settings=settings(fake, tmp_path)) as sink:
        up = await sink.begin(key="n/c/x.snap", metadata={"obb-cluster": "c"})
        try:
            for i in range(0, len(data), step):
                await up.write(data[i : i + step])
            await up.commit(sha256="f" * 64, size=len(data))
        except BaseException:
            await up.abort()
            raise


async def test_resumes_from_the_persisted_offset(fake: FakeGcs, tmp_path: Path) -> None:
    data = os.urandom(5 * CHUNK * 2 + 12345)
    fake.short_once = {0, 4 * CHUNK}
    fake.fail_once = {2 * CHUNK}
    await upload(fake, tmp_path, data)
    assert fake.finalized == data
    assert fake.metadata == {"obb-cluster": "c", "obb-sha256": "f" * 64, "obb-size": str(len(data))}
    assert "bytes */*" in fake.puts, "after a 503 the session status is asked"
    assert fake.puts[-1].endswith(f"/{len(data)}"), "the final chunk carries the total"
    assert all(p.endswith("/*") for p in fake.puts[:-1])


async def test_exact_multiple_of_the_chunk_size(fake: FakeGcs, tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK)
    await upload(fake, tmp_path, data, step=CHUNK)
    assert fake.finalized == data
    assert fake.puts[-1] == f"bytes {2 * CHUNK}-{4 * CHUNK - 1}/{4 * CHUNK}"


async def test_failure_cancels_the_session(fake: FakeGcs, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK)
    fake.always_500 = True
    with pytest.raises(StorageError, match="HTTP 500"):
        await upload(fake, tmp_path, data)
    assert fake.cancelled
    assert fake.finalized is None
    assert sum(1 for p in fake.puts if p.startswith("bytes 0-")) == 3, "1 try + 2 retries"
