"""A restore never sends OpenBao anything that does not match the manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from devenv.openbao import OpenBao
from devenv.storage import StorageServer

from executor.errors import VerificationError
from executor.layout import Manifest
from executor.restore import _GuardedBody
from executor.storage.base import ObjectInfo
from tests.executor import snapshots
from tests.executor.harness import (
    cluster_env,
    read_object,
    run_executor,
    storage_env,
    token_env,
    write_object,
)
from tests.executor.proxies import Fault, HttpProxy
from tests.executor.test_roundtrip import PROVIDERS, storage_for


class TwoFacedSink:
    """Serves ``first`` on the first read and ``second`` on the next ones."""

    def __init__(self, first: bytes, second: bytes) -> None:
        self.reads = [first, second]

    @asynccontextmanager
    async def get(
        self, *, key: str, version: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        data = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        yield chunks()

    async def head(self, *, key: str) -> ObjectInfo:  # pragma: no cover - unused
        raise NotImplementedError


def manifest_for(data: bytes) -> Manifest:
    return Manifest(
        key="n/c/20261121T000000Z-00000000.snap",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        createdAt="2026-11-21T00:00:00.000Z",
        takenAt="2026-11-21T00:00:00.000Z",
        namespace="n",
        cluster="c",
        clusterUID=None,
        trigger="manual",
        backupName=None,
        openbaoVersion=None,
        raftIndex=1,
        raftTerm=1,
        raftConfigurationIndex=None,
        snapshotMetaVersion=1,
        executorVersion="t",
    )


async def test_guarded_body_withholds_the_last_chunk_of_a_changed_object() -> None:
    good = snapshots.build(state=b"a" * 5000)
    changed = bytearray(good)
    changed[-1] ^= 0xFF  # same size, different last byte
    sink = TwoFacedSink(bytes(changed), bytes(changed))
    body = _GuardedBody(sink=sink, key="k", version=None, manifest=manifest_for(good))  # type: ignore[arg-type]
    sent = bytearray()

    async def consume() -> None:
        async for chunk in body.chunks():
            sent.extend(chunk)

    with pytest.raises(VerificationError, match="changed between verification and upload"):
        await consume()
    assert len(sent) < len(good), "the last chunk must never be released"
    assert isinstance(body.error, VerificationError)


async def test_guarded_body_releases_everything_when_it_matches() -> None:
    good = snapshots.build(state=b"b" * 5000)
    body = _GuardedBody(
        sink=TwoFacedSink(good, good),  # type: ignore[arg-type]
        key="k",
        version=None,
        manifest=manifest_for(good),
    )
    sent = b"".join([c async for c in body.chunks()])
    assert sent == good
    assert body.error is None


async def test_guarded_body_stops_when_the_object_grows() -> None:
    good = snapshots.build()
    body = _GuardedBody(
        sink=TwoFacedSink(good + b"x" * 5000, good),  # type: ignore[arg-type]
        key="k",
        version=None,
        manifest=manifest_for(good),
    )
    with pytest.raises(VerificationError, match="grew"):
        async for _ in body.chunks():
            pass


# -- end to end: refusals never reach OpenBao ---------------------------------------------------


def guard_proxy(openbao: OpenBao) -> HttpProxy:
    def rule(req: web.Request, _n: int) -> Fault | None:
        if req.method in ("POST", "PUT") and "storage/raft/snapshot" in req.path:
            return Fault(status=599)  # recorded, never forwarded
        return None

    return HttpProxy(openbao.addr, rule=rule)


async def backup_once(
    provider: str, openbao: OpenBao, server: StorageServer, bucket: str, tmp: Path
) -> str:
    env = {
        **cluster_env(),
        **token_env(openbao.addr, openbao.root_token, tmp),
        **storage_env(provider, endpoint=server.endpoint, bucket=bucket),
    }
    run = await run_executor("backup", env, tmp=tmp)
    assert run.code == 0, run.stderr
    assert run.report.key is not None
    return run.report.key


async def restore(
    provider: str,
    proxy: HttpProxy,
    openbao: OpenBao,
    server: StorageServer,
    bucket: str,
    key: str,
    tmp: Path,
) -> tuple[int, str]:
    env = {
        **cluster_env(),
        **token_env(proxy.url, openbao.root_token, tmp),
        **storage_env(provider, endpoint=server.endpoint, bucket=bucket),
        "OBB_RESTORE_KEY": key,
    }
    run = await run_executor("restore", env, tmp=tmp)
    assert not [s for s in proxy.seen if "storage/raft/snapshot" in s.path_qs], (
        "nothing may be sent to OpenBao"
    )
    assert run.report.error is not None
    return run.code, run.report.error.message


@pytest.mark.integration
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tampered_snapshot_is_refused(
    provider: str, openbao: OpenBao, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server, bucket = storage_for(provider, request)
    key = await backup_once(provider, openbao, server, bucket, tmp_path)
    data = bytearray(read_object(provider, endpoint=server.endpoint, bucket=bucket, key=key))
    data[len(data) // 2] ^= 0x40
    write_object(provider, endpoint=server.endpoint, bucket=bucket, key=key, data=bytes(data))
    proxy = await guard_proxy(openbao).start()
    try:
        code, message = await restore(provider, proxy, openbao, server, bucket, key, tmp_path)
    finally:
        await proxy.stop()
    assert code == 15, message


@pytest.mark.integration
async def test_valid_archive_with_another_hash_is_refused(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    key = await backup_once("s3", openbao, s3_server, s3_bucket, tmp_path)
    mkey = key + ".manifest.json"
    manifest = json.loads(
        read_object("s3", endpoint=s3_server.endpoint, bucket=s3_bucket, key=mkey)
    )
    manifest["sha256"] = "0" * 64
    write_object(
        "s3",
        endpoint=s3_server.endpoint,
        bucket=s3_bucket,
        key=mkey,
        data=json.dumps(manifest).encode(),
    )
    proxy = await guard_proxy(openbao).start()
    try:
        code, message = await restore("s3", proxy, openbao, s3_server, s3_bucket, key, tmp_path)
    finally:
        await proxy.stop()
    assert code == 15
    assert "does not match its manifest" in message


@pytest.mark.integration
async def test_snapshot_without_manifest_is_refused(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    key = await backup_once("s3", openbao, s3_server, s3_bucket, tmp_path)
    from tests.executor.harness import s3_client

    s3_client(s3_server.endpoint).delete_object(Bucket=s3_bucket, Key=key + ".manifest.json")
    proxy = await guard_proxy(openbao).start()
    try:
        code, message = await restore("s3", proxy, openbao, s3_server, s3_bucket, key, tmp_path)
        missing = "team-a/bao/20200101T000000Z-00000000.snap"
        code2, message2 = await restore(
            "s3", proxy, openbao, s3_server, s3_bucket, missing, tmp_path
        )
    finally:
        await proxy.stop()
    assert code == 15
    assert "has no manifest" in message
    assert code2 == 14
    assert "does not exist" in message2
