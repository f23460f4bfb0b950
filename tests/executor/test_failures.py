"""Failure injection, per provider: every failure ends with the right exit code and report,
nothing at the key, and no pending multipart upload / resumable session / committed blob.

Faults are injected with loopback proxies (tests/executor/proxies.py) in front of a real
OpenBao or a real storage emulator; OpenBao is really killed (SIGKILL) mid-stream.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from devenv.openbao import OpenBao, start_openbao
from devenv.storage import StorageServer

from tests.executor.harness import (
    Run,
    cluster_env,
    list_keys,
    pending_multipart_uploads,
    run_executor,
    storage_env,
    token_env,
)
from tests.executor.proxies import Fault, HttpProxy, TcpProxy
from tests.executor.test_roundtrip import PROVIDERS, storage_for

pytestmark = pytest.mark.integration

SEED_ENTRIES = 60  # ~12 MB snapshot: more than two 5 MiB S3 parts
SEED_VALUE = 150_000


def seed(bao: OpenBao) -> None:
    for i in range(SEED_ENTRIES):
        bao.kv_put(f"big/{i}", {"blob": base64.b64encode(os.urandom(SEED_VALUE)).decode()})


@pytest.fixture(scope="module")
def big_openbao(session_dir: Path) -> Iterator[OpenBao]:
    """A module-wide OpenBao whose snapshot spans several upload parts (read-only use)."""
    bao = start_openbao(session_dir, name=f"big-{uuid.uuid4().hex[:6]}")
    try:
        seed(bao)
        yield bao
    finally:
        bao.stop()


@pytest.fixture
async def gcs_recorder(gcs_server: StorageServer) -> AsyncIterator[HttpProxy]:
    """A fault-free proxy in front of fake-gcs-server that records the session URIs."""
    proxy = await HttpProxy(gcs_server.endpoint).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def storage_endpoint(provider: str, server: StorageServer, gcs: HttpProxy | None) -> str:
    return gcs.url if provider == "gcs" and gcs is not None else server.endpoint


def assert_nothing_left(
    provider: str, run: Run, *, server: StorageServer, bucket: str, gcs: HttpProxy | None
) -> None:
    r = run.report
    assert r.outcome == "failed"
    assert r.manifest_key is None
    assert r.key is not None, "the attempted key is reported"
    assert list_keys(provider, endpoint=server.endpoint, bucket=bucket) == {}, (
        "no object may exist at the key after a failed backup"
    )
    if provider == "s3":
        assert pending_multipart_uploads(server.endpoint, bucket) == []
    if provider == "gcs":
        # fake-gcs-server answers 499 to the session DELETE but keeps serving the session
        # afterwards (real GCS forgets it), so what can be checked is that every session was
        # cancelled by the executor and the service acknowledged it.
        assert gcs is not None
        created = [
            s for s in gcs.seen if s.method == "POST" and "uploadType=resumable" in s.path_qs
        ]
        assert created, "the backup started a resumable upload"
        sessions = {s.path_qs for s in gcs.seen if "upload_id=" in s.path_qs}
        cancelled = {
            s.path_qs
            for s in gcs.seen
            if s.method == "DELETE" and "upload_id=" in s.path_qs and s.status in (499, 404, 410)
        }
        assert sessions == cancelled, "every resumable session must be cancelled"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_openbao_killed_mid_stream(
    provider: str, request: pytest.FixtureRequest, tmp_path: Path, gcs_recorder: HttpProxy
) -> None:
    server, bucket = storage_for(provider, request)
    bao = await asyncio.to_thread(start_openbao, tmp_path, name="doomed")
    try:
        await asyncio.to_thread(seed, bao)
        port = urlsplit(bao.addr).port
        assert port is not None
        proxy = await TcpProxy(port, pause_after=2 << 20, upstream_rcvbuf=64 << 10).start()
        env = {
            **cluster_env(),
            **token_env(proxy.url, bao.root_token, tmp_path),
            **storage_env(
                provider, endpoint=storage_endpoint(provider, server, gcs_recorder), bucket=bucket
            ),
        }
        run_task = asyncio.create_task(run_executor("backup", env, tmp=tmp_path))
        await asyncio.wait_for(proxy.paused.wait(), 60)
        await asyncio.to_thread(bao.server.kill)  # SIGKILL while it is blocked mid-write
        proxy.release.set()
        run = await run_task
        await proxy.stop()
    finally:
        await asyncio.to_thread(bao.stop)
    assert run.code == 13, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "snapshot"
    assert "broke" in run.report.error.message
    assert_nothing_left(provider, run, server=server, bucket=bucket, gcs=gcs_recorder)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_snapshot_connection_cut(
    provider: str,
    openbao: OpenBao,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    gcs_recorder: HttpProxy,
) -> None:
    server, bucket = storage_for(provider, request)
    port = urlsplit(openbao.addr).port
    assert port is not None
    proxy = await TcpProxy(port, cut_after=9000).start()
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, openbao.root_token, tmp_path),
            **storage_env(
                provider, endpoint=storage_endpoint(provider, server, gcs_recorder), bucket=bucket
            ),
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == 13, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "snapshot"
    assert_nothing_left(provider, run, server=server, bucket=bucket, gcs=gcs_recorder)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_snapshot_truncated_but_complete_at_http_level(
    provider: str,
    openbao: OpenBao,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    gcs_recorder: HttpProxy,
) -> None:
    """The classic silent failure: a 200 with a short body that ends cleanly."""
    server, bucket = storage_for(provider, request)

    def rule(req: web.Request, _n: int) -> Fault | None:
        if req.path.endswith("/sys/storage/raft/snapshot"):
            return Fault(truncate_body_after=10_000)
        return None

    proxy = await HttpProxy(openbao.addr, rule=rule).start()
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, openbao.root_token, tmp_path),
            **storage_env(
                provider, endpoint=storage_endpoint(provider, server, gcs_recorder), bucket=bucket
            ),
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == 15, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "verification"
    assert "truncated" in run.report.error.message
    assert_nothing_left(provider, run, server=server, bucket=bucket, gcs=gcs_recorder)


def _storage_fault(provider: str) -> object:
    def rule(req: web.Request, _n: int) -> Fault | None:
        query = parse_qs(req.query_string)
        if provider == "s3" and req.method == "PUT" and query.get("partNumber", ["1"]) != ["1"]:
            return Fault(status=500)
        if provider == "gcs" and req.method == "PUT" and "upload_id" in query:
            content_range = req.headers.get("Content-Range", "")
            if not content_range.startswith(("bytes 0-", "bytes */")):
                return Fault(status=503)
        if (
            provider == "azure"
            and req.method == "PUT"
            and query.get("comp") == ["block"]
            and query.get("blockid") != [base64.b64encode(b"00000001").decode()]
        ):
            return Fault(status=500)
        return None

    return rule


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_storage_answering_500(
    provider: str, big_openbao: OpenBao, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server, bucket = storage_for(provider, request)
    parts = urlsplit(server.endpoint)
    origin = f"{parts.scheme}://{parts.netloc}"
    proxy = await HttpProxy(origin, rule=_storage_fault(provider)).start()  # type: ignore[arg-type]
    try:
        env = {
            **cluster_env(),
            **token_env(big_openbao.addr, big_openbao.root_token, tmp_path),
            **storage_env(provider, endpoint=proxy.url + parts.path, bucket=bucket),
        }
        if provider == "s3":
            env["OBB_CONCURRENCY"] = "1"  # part 1 succeeds before part 2 fails
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == 14, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "storage"
    assert "HTTP 5" in run.report.error.message or "50" in run.report.error.message
    assert any(s.status >= 500 for s in proxy.seen), "the fault was injected"
    assert any(s.status < 300 and s.method == "PUT" for s in proxy.seen), (
        "some part/chunk/block was accepted before the failure"
    )
    # Over plain HTTP (as here) S3 checks the SHA-256 payload signature of every part and
    # Azure the transactional MD5 of every block (over HTTPS: a CRC32 / TLS, see the modules).
    integrity = {
        "s3": ("partNumber=", "x-amz-content-sha256", re.compile(r"[0-9a-f]{64}")),
        "azure": ("comp=block", "content-md5", re.compile(r"[A-Za-z0-9+/]{22}==")),
    }.get(provider)
    if integrity is not None:
        marker, header, value = integrity
        uploads = [s for s in proxy.seen if s.method == "PUT" and marker in s.path_qs]
        assert uploads
        for s in uploads:
            headers = {k.lower(): v for k, v in s.headers.items()}
            assert value.fullmatch(headers.get(header, "")), f"every part must carry {header}"
    assert_nothing_left(
        provider, run, server=server, bucket=bucket, gcs=proxy if provider == "gcs" else None
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_manifest_failure_removes_the_snapshot(
    provider: str, openbao: OpenBao, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server, bucket = storage_for(provider, request)

    def rule(req: web.Request, _n: int) -> Fault | None:
        if req.method in ("PUT", "POST") and "manifest.json" in req.path_qs:
            return Fault(status=500)
        return None

    parts = urlsplit(server.endpoint)
    proxy = await HttpProxy(f"{parts.scheme}://{parts.netloc}", rule=rule).start()
    try:
        env = {
            **cluster_env(),
            **token_env(openbao.addr, openbao.root_token, tmp_path),
            **storage_env(provider, endpoint=proxy.url + parts.path, bucket=bucket),
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == 14, run.stderr
    assert run.report.error is not None
    assert run.report.error.message.endswith("the snapshot was deleted again")
    assert run.report.manifest_key is None
    assert list_keys(provider, endpoint=server.endpoint, bucket=bucket) == {}


async def test_sigterm_mid_stream_aborts_and_reports(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    port = urlsplit(openbao.addr).port
    assert port is not None
    proxy = await TcpProxy(port, pause_after=9000).start()
    started: asyncio.Future[asyncio.subprocess.Process] = asyncio.get_running_loop().create_future()
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, openbao.root_token, tmp_path),
            **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
        }
        task = asyncio.create_task(run_executor("backup", env, tmp=tmp_path, started=started))
        proc = await started
        await asyncio.wait_for(proxy.paused.wait(), 60)
        deadline = asyncio.get_running_loop().time() + 30
        while not pending_multipart_uploads(s3_server.endpoint, s3_bucket):
            assert asyncio.get_running_loop().time() < deadline, "the upload never started"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        run = await task
    finally:
        proxy.release.set()
        await proxy.stop()
    assert run.code == 13, run.stderr
    assert run.report.error is not None
    assert run.report.error.message == "terminated by SIGTERM while streaming the snapshot"
    assert pending_multipart_uploads(s3_server.endpoint, s3_bucket) == []
    assert list_keys("s3", endpoint=s3_server.endpoint, bucket=s3_bucket) == {}


async def test_missing_bucket_is_never_created(
    openbao: OpenBao, s3_server: StorageServer, tmp_path: Path
) -> None:
    from tests.executor.harness import s3_client

    name = f"missing-{uuid.uuid4().hex[:8]}"
    env = {
        **cluster_env(),
        **token_env(openbao.addr, openbao.root_token, tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=name),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 14, run.stderr
    assert run.report.error is not None
    assert "never creates buckets" in run.report.error.message
    buckets = {b["Name"] for b in s3_client(s3_server.endpoint).list_buckets()["Buckets"]}
    assert name not in buckets


async def test_openbao_unreachable_is_a_leader_error(
    s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {
        **cluster_env(),
        **token_env(f"http://127.0.0.1:{dead}", "s.x", tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 12, run.stderr
    assert run.report.error is not None
    assert "cannot connect" in run.report.error.message


async def test_bad_token_is_an_auth_error(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    env = {
        **cluster_env(),
        **token_env(openbao.addr, "s.not-a-real-token-123", tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 11, run.stderr
    assert "s.not-a-real-token-123" not in run.stderr + run.raw_report


async def test_sealed_openbao_is_a_leader_error(
    s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    bao = await asyncio.to_thread(start_openbao, tmp_path, name="sealed", kv=False)
    try:
        await asyncio.to_thread(bao.seal)
        env = {
            **cluster_env(),
            **token_env(bao.addr, bao.root_token, tmp_path),
            **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await asyncio.to_thread(bao.stop)
    assert run.code == 12, run.stderr
    assert run.report.error is not None
    assert "sealed" in run.report.error.message


async def test_deadline_aborts_the_upload(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    port = urlsplit(openbao.addr).port
    assert port is not None
    proxy = await TcpProxy(port, pause_after=9000).start()  # the stream stalls forever
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, openbao.root_token, tmp_path),
            **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
            "OBB_TIMEOUT": "4",
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        proxy.release.set()
        await proxy.stop()
    assert run.code == 13, run.stderr
    assert run.report.error is not None
    assert "deadline OBB_TIMEOUT=4s exceeded while streaming the snapshot" in (
        run.report.error.message
    )
    assert pending_multipart_uploads(s3_server.endpoint, s3_bucket) == []
    assert list_keys("s3", endpoint=s3_server.endpoint, bucket=s3_bucket) == {}
