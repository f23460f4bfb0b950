"""Nothing left behind after a kill (issue 12): a backup first removes what killed runs of the
same cluster left unfinished, only under the cluster's prefix and only if older than the run.

Integration: the real executor (a subprocess) streams a ~12 MB snapshot from a real OpenBao
through a loopback proxy that PAUSES the snapshot mid-stream; once the emulator shows a part
(S3, moto) or block (Azure, Azurite) the executor is SIGKILLed by PID; the leftover is
asserted, then the next backup runs and must remove it, report it, and leave alone what lies
outside the cluster's prefix. GCS has no kill test: resumable sessions cannot be listed (see
docs/storage-lifecycle.md); what the executor controls (cancelling its own session, also when
cancelled while creating it) is tested against a fake GCS here.

Units: the age and prefix filter, the cleanup never failing a backup, the report field.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from botocore.exceptions import ClientError
from devenv.openbao import OpenBao, start_openbao
from devenv.storage import StorageServer, azurite_connection_string

from executor.contract import StorageSettings, load_config
from executor.errors import InternalError, StorageError
from executor.layout import cluster_prefix
from executor.progress import Progress
from executor.report import CLEANED_KEYS_MAX, MAX_BYTES, Cleaned, Report
from executor.storage.azure import open_azure
from executor.storage.base import CleanupResult, is_abandoned
from executor.storage.gcs import open_gcs
from executor.storage.s3 import S3Sink
from tests.executor.harness import (
    ROOT,
    cluster_env,
    run_executor,
    s3_client,
    storage_env,
    token_env,
)
from tests.executor.proxies import Fault, HttpProxy, TcpProxy
from tests.executor.test_failures import seed

NAMESPACE, CLUSTER, PATH_PREFIX = "team-a", "bao", "clusters/prod"
PREFIX = cluster_prefix(path_prefix=PATH_PREFIX, namespace=NAMESPACE, cluster=CLUSTER)
# Outside the prefix: a sibling cluster whose name starts with ours, another namespace.
OUTSIDE = [
    f"{PATH_PREFIX}/{NAMESPACE}/{CLUSTER}2/20260101T000000Z-0badc0de.snap",
    f"{PATH_PREFIX}/team-b/{CLUSTER}/20260101T000000Z-0badc0de.snap",
]
INSIDE_COMMITTED = f"{PREFIX}notes.txt"
PAUSE_AFTER = {"s3": 7 << 20, "azure": 2 << 20}  # past the first part (5 MiB / 256 KiB)


def _env(
    provider: str, *, addr: str, token: str, endpoint: str, bucket: str, tmp: Path
) -> dict[str, str]:
    return {
        **cluster_env(namespace=NAMESPACE, name=CLUSTER, prefix=PATH_PREFIX),
        **token_env(addr, token, tmp),
        **storage_env(provider, endpoint=endpoint, bucket=bucket),
    }


@pytest.fixture(scope="module")
def big_openbao(session_dir: Path) -> Iterator[OpenBao]:
    """An OpenBao whose snapshot (~12 MB) spans several upload parts (read-only use)."""
    bao = start_openbao(session_dir, name=f"kill-{uuid.uuid4().hex[:6]}")
    try:
        seed(bao)
        yield bao
    finally:
        bao.stop()


# -- what the emulators hold --------------------------------------------------------------------


def _s3_pending(endpoint: str, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    out = s3_client(endpoint).list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    uploads: list[dict[str, Any]] = out.get("Uploads", [])
    return uploads


def _s3_parts(endpoint: str, bucket: str) -> int:
    client = s3_client(endpoint)
    total = 0
    for up in _s3_pending(endpoint, bucket, PREFIX):
        parts = client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        total += len(parts.get("Parts", []))
    return total


def _container(endpoint: str, bucket: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azurite_connection_string(endpoint))
    return svc.get_container_client(bucket)


def _azure_uncommitted(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Blobs that hold only uncommitted blocks."""
    c = _container(endpoint, bucket)
    every = {b.name for b in c.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])}
    committed = {b.name for b in c.list_blobs(name_starts_with=prefix)}
    return sorted(every - committed)


def _azure_blocks(endpoint: str, bucket: str) -> int:
    c = _container(endpoint, bucket)
    total = 0
    for name in _azure_uncommitted(endpoint, bucket, PREFIX):
        _committed, uncommitted = c.get_blob_client(name).get_block_list("uncommitted")
        total += len(uncommitted)
    return total


def _plant(provider: str, endpoint: str, bucket: str) -> None:
    """Unfinished uploads OUTSIDE the prefix and a committed object inside it."""
    if provider == "s3":
        client = s3_client(endpoint)
        for key in OUTSIDE:
            up = client.create_multipart_upload(Bucket=bucket, Key=key)
            client.upload_part(
                Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024
            )
        client.put_object(Bucket=bucket, Key=INSIDE_COMMITTED, Body=b"keep me")
        return
    c = _container(endpoint, bucket)
    for key in OUTSIDE:
        c.get_blob_client(key).stage_block("00000001", b"x" * 1024)
    c.get_blob_client(INSIDE_COMMITTED).upload_blob(b"keep me")


def _leftovers(provider: str, endpoint: str, bucket: str, prefix: str) -> list[str]:
    if provider == "s3":
        return sorted(u["Key"] for u in _s3_pending(endpoint, bucket, prefix))
    return _azure_uncommitted(endpoint, bucket, prefix)


def _committed(provider: str, endpoint: str, bucket: str) -> set[str]:
    if provider == "s3":
        out = s3_client(endpoint).list_objects_v2(Bucket=bucket)
        return {o["Key"] for o in out.get("Contents", [])}
    return {b.name for b in _container(endpoint, bucket).list_blobs()}


async def _wait(
    probe: Any, what: str, *, proc: asyncio.subprocess.Process, timeout: float = 60
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(probe):
        assert proc.returncode is None, f"the executor exited ({proc.returncode}) before {what}"
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- the kill -----------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("provider", ["s3", "azure"])
async def test_next_backup_removes_what_a_killed_run_left(
    provider: str, big_openbao: OpenBao, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: StorageServer = request.getfixturevalue(
        {"s3": "s3_server", "azure": "azurite_server"}[provider]
    )
    bucket: str = request.getfixturevalue({"s3": "s3_bucket", "azure": "azure_container"}[provider])
    endpoint = server.endpoint
    await asyncio.to_thread(_plant, provider, endpoint, bucket)

    port = urlsplit(big_openbao.addr).port
    assert port is not None
    proxy = await TcpProxy(
        port, pause_after=PAUSE_AFTER[provider], upstream_rcvbuf=64 << 10
    ).start()
    env = _env(
        provider,
        addr=proxy.url,
        token=big_openbao.root_token,
        endpoint=endpoint,
        bucket=bucket,
        tmp=tmp_path,
    )
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "OBB_TERMINATION_MESSAGE_PATH": str(tmp_path / "killed-termination"),
        "OBB_STORAGE_RETRIES": "1",
        **env,
    }
    with open(tmp_path / "killed.stderr", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "executor",
            "backup",
            env=full,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await asyncio.wait_for(proxy.paused.wait(), 60)
        probe = (
            (lambda: _s3_parts(endpoint, bucket) >= 1)
            if provider == "s3"
            else (lambda: _azure_blocks(endpoint, bucket) >= 1)
        )
        await _wait(probe, "a part/block uploaded", proc=proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        proxy.release.set()
        await proxy.stop()
    assert not (tmp_path / "killed-termination").exists(), "a SIGKILLed run reports nothing"

    left = await asyncio.to_thread(_leftovers, provider, endpoint, bucket, PREFIX)
    assert len(left) == 1, f"the killed run left one unfinished upload: {left}"
    killed_key = left[0]
    assert killed_key.startswith(PREFIX) and killed_key.endswith(".snap")
    assert killed_key not in _committed(provider, endpoint, bucket)

    env = _env(
        provider,
        addr=big_openbao.addr,
        token=big_openbao.root_token,
        endpoint=endpoint,
        bucket=bucket,
        tmp=tmp_path,
    )
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr[-4000:]
    r = run.report
    assert r.cleaned == Cleaned(uploads=1, keys=(killed_key,), error=None), run.raw_report
    assert '"cleaned":{"uploads":1,"keys":["' + killed_key + '"],"error":null}' in run.raw_report

    assert await asyncio.to_thread(_leftovers, provider, endpoint, bucket, PREFIX) == []
    assert await asyncio.to_thread(_leftovers, provider, endpoint, bucket, "") == sorted(OUTSIDE), (
        "unfinished uploads outside the prefix are never touched"
    )
    committed = await asyncio.to_thread(_committed, provider, endpoint, bucket)
    assert INSIDE_COMMITTED in committed, "a committed object in the prefix is never touched"
    assert r.key in committed and r.manifest_key in committed
    assert killed_key not in committed

    # A third backup finds nothing left to clean (and still reports that it looked).
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr[-4000:]
    assert run.report.cleaned == Cleaned(uploads=0, keys=(), error=None)
    assert await asyncio.to_thread(_leftovers, provider, endpoint, bucket, "") == sorted(OUTSIDE)


@pytest.mark.integration
async def test_cleanup_failure_never_fails_the_backup(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    """ListMultipartUploads refused (a policy without s3:ListBucketMultipartUploads): the
    backup succeeds and the report says why nothing was cleaned."""
    await asyncio.to_thread(
        lambda: s3_client(s3_server.endpoint).create_multipart_upload(
            Bucket=s3_bucket, Key=f"{PREFIX}20260101T000000Z-0badc0de.snap"
        )
    )

    def rule(req: web.Request, _n: int) -> Fault | None:
        if req.method == "GET" and "uploads" in req.query:
            return Fault(status=403)
        return None

    proxy = await HttpProxy(s3_server.endpoint, rule=rule).start()
    try:
        env = _env(
            "s3",
            addr=openbao.addr,
            token=openbao.root_token,
            endpoint=proxy.url,
            bucket=s3_bucket,
            tmp=tmp_path,
        )
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == 0, run.stderr[-4000:]
    cleaned = run.report.cleaned
    assert cleaned is not None and cleaned.uploads == 0 and cleaned.keys == ()
    assert cleaned.error is not None and "access denied" in cleaned.error, cleaned
    assert "could not remove all abandoned uploads" in run.stderr
    assert len(_s3_pending(s3_server.endpoint, s3_bucket, PREFIX)) == 1


# -- the age and prefix filter ------------------------------------------------------------------

RUN_START = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)


def test_only_uploads_started_before_the_run_under_the_prefix_are_abandoned() -> None:
    def ab(key: str, started: dt.datetime | None) -> bool:
        return is_abandoned(key=key, started=started, prefix=PREFIX, before=RUN_START)

    second = dt.timedelta(seconds=1)
    assert ab(f"{PREFIX}a.snap", RUN_START - second)
    assert ab(f"{PREFIX}a.snap", (RUN_START - second).replace(tzinfo=None)), "naive = UTC"
    assert ab(
        f"{PREFIX}a.snap", (RUN_START - second).astimezone(dt.timezone(dt.timedelta(hours=5)))
    )
    assert not ab(f"{PREFIX}a.snap", RUN_START), "started at the run's start: not older"
    assert not ab(f"{PREFIX}a.snap", RUN_START + second)
    assert not ab(f"{PREFIX}a.snap", None), "unknown start: never"
    for key in [*OUTSIDE, "x.snap", PREFIX.rstrip("/"), PREFIX[1:]]:
        assert not ab(key, RUN_START - dt.timedelta(days=30)), key


class _FakeS3:
    """list_multipart_uploads (two pages) and abort_multipart_upload, recorded."""

    def __init__(
        self, pages: list[list[dict[str, Any]]], *, gone: frozenset[str] = frozenset()
    ) -> None:
        self.pages = pages
        self.gone = set(gone)
        self.listed_prefix: str | None = None
        self.aborted: list[tuple[str, str]] = []

    def get_paginator(self, name: str) -> _FakeS3:
        assert name == "list_multipart_uploads"
        return self

    async def paginate(self, *, Bucket: str, Prefix: str) -> AsyncIterator[dict[str, Any]]:
        self.listed_prefix = Prefix
        for page in self.pages:
            yield {"Uploads": page}

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> None:
        if UploadId in self.gone:
            raise ClientError(
                {
                    "Error": {"Code": "NoSuchUpload", "Message": "gone"},
                    "ResponseMetadata": {"HTTPStatusCode": 404},
                },
                "AbortMultipartUpload",
            )
        if UploadId == "denied":
            raise ClientError(
                {
                    "Error": {"Code": "AccessDenied", "Message": "no"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "AbortMultipartUpload",
            )
        self.aborted.append((Key, UploadId))


def _s3_settings(tmp_path: Path) -> StorageSettings:
    env = _env(
        "s3",
        addr="http://127.0.0.1:1",
        token="t",
        endpoint="http://127.0.0.1:1",
        bucket="bkt",
        tmp=tmp_path,
    )
    return load_config(mode="backup", environ=env).storage


async def test_s3_cleanup_aborts_only_older_uploads_under_the_prefix(tmp_path: Path) -> None:
    old = RUN_START - dt.timedelta(minutes=10)
    fake = _FakeS3(
        [
            [
                {"Key": f"{PREFIX}old.snap", "UploadId": "u-old", "Initiated": old},
                {
                    "Key": f"{PREFIX}new.snap",
                    "UploadId": "u-new",
                    "Initiated": RUN_START + dt.timedelta(seconds=1),
                },
                {"Key": f"{PREFIX}now.snap", "UploadId": "u-now", "Initiated": RUN_START},
            ],
            [
                {"Key": OUTSIDE[0], "UploadId": "u-outside", "Initiated": old},  # a lax server
                {"Key": f"{PREFIX}gone.snap", "UploadId": "u-gone", "Initiated": old},
                {"Key": f"{PREFIX}undated.snap", "UploadId": "u-undated"},
                {"Key": f"{PREFIX}old2.snap", "UploadId": "u-old2", "Initiated": old},
            ],
        ],
        gone=frozenset({"u-gone"}),
    )
    sink = S3Sink(client=fake, settings=_s3_settings(tmp_path))
    result = CleanupResult()
    await sink.clean_abandoned(prefix=PREFIX, before=RUN_START, result=result)
    assert fake.listed_prefix == PREFIX
    assert fake.aborted == [(f"{PREFIX}old.snap", "u-old"), (f"{PREFIX}old2.snap", "u-old2")]
    assert result.removed == [f"{PREFIX}old.snap", f"{PREFIX}old2.snap"]
    assert result.supported

    with pytest.raises(InternalError):
        await sink.clean_abandoned(prefix="", before=RUN_START, result=CleanupResult())
    with pytest.raises(InternalError):
        await sink.clean_abandoned(
            prefix="clusters/prod/team-a/bao", before=RUN_START, result=CleanupResult()
        )

    denied = _FakeS3(
        [
            [
                {"Key": f"{PREFIX}a.snap", "UploadId": "u-a", "Initiated": old},
                {"Key": f"{PREFIX}b.snap", "UploadId": "denied", "Initiated": old},
            ]
        ]
    )
    result = CleanupResult()
    with pytest.raises(StorageError, match="access denied"):
        await S3Sink(client=denied, settings=_s3_settings(tmp_path)).clean_abandoned(
            prefix=PREFIX, before=RUN_START, result=result
        )
    assert result.removed == [f"{PREFIX}a.snap"], "what was removed before the error is kept"


@pytest.mark.integration
async def test_azure_cleanup_honours_the_run_start(
    azurite_server: StorageServer, azure_container: str, tmp_path: Path
) -> None:
    """Against Azurite: an uncommitted blob modified after the given start is left alone;
    with a later start it is deleted; committed blobs and blobs outside are never touched."""
    c = _container(azurite_server.endpoint, azure_container)
    c.get_blob_client(f"{PREFIX}a.snap").stage_block("00000001", b"x" * 100)
    c.get_blob_client(OUTSIDE[0]).stage_block("00000001", b"x" * 100)
    c.get_blob_client(INSIDE_COMMITTED).upload_blob(b"keep me")
    c.get_blob_client(f"{PREFIX}empty").upload_blob(b"")  # committed, zero bytes
    staged = c.get_blob_client(f"{PREFIX}a.snap")
    env = _env(
        "azure",
        addr="http://127.0.0.1:1",
        token="t",
        endpoint=azurite_server.endpoint,
        bucket=azure_container,
        tmp=tmp_path,
    )
    settings = load_config(mode="backup", environ=env).storage
    async with open_azure(settings=settings) as sink:
        early = CleanupResult()
        await sink.clean_abandoned(
            prefix=PREFIX, before=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), result=early
        )
        assert early.removed == []
        assert _azure_uncommitted(azurite_server.endpoint, azure_container, PREFIX) == [
            f"{PREFIX}a.snap"
        ]
        later = CleanupResult()
        await sink.clean_abandoned(
            prefix=PREFIX, before=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2), result=later
        )
        assert later.removed == [f"{PREFIX}a.snap"]
    assert _azure_uncommitted(azurite_server.endpoint, azure_container, "") == [OUTSIDE[0]]
    assert {b.name for b in c.list_blobs()} == {INSIDE_COMMITTED, f"{PREFIX}empty"}
    from azure.core.exceptions import ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError):
        staged.get_block_list("all")


# -- the backup's side: bounded, never failing --------------------------------------------------


class _Sink:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def clean_abandoned(
        self, *, prefix: str, before: dt.datetime, result: CleanupResult
    ) -> None:
        if self.behaviour == "unsupported":
            result.supported = False
            return
        result.removed += [f"{prefix}{i:02d}.snap" for i in range(CLEANED_KEYS_MAX + 5)]
        if self.behaviour == "error":
            raise StorageError("listing: access denied by S3 (AccessDenied: no)")
        if self.behaviour == "bug":
            raise KeyError("UploadId")
        if self.behaviour == "slow":
            await asyncio.sleep(3600)


@pytest.mark.parametrize("behaviour", ["ok", "error", "bug", "slow", "unsupported"])
async def test_backup_side_never_raises_and_reports(behaviour: str) -> None:
    from executor.backup import clean_abandoned

    progress = Progress(mode="backup")
    cleaned = await clean_abandoned(
        sink=_Sink(behaviour),  # type: ignore[arg-type]
        progress=progress,
        prefix=PREFIX,
        before=RUN_START,
        budget=0.2,
    )
    assert progress.phase == "removing abandoned uploads"
    assert progress.cleaned is cleaned
    if behaviour == "unsupported":
        assert cleaned is None
        return
    assert cleaned is not None
    assert cleaned.uploads == CLEANED_KEYS_MAX + 5
    assert cleaned.keys == tuple(f"{PREFIX}{i:02d}.snap" for i in range(CLEANED_KEYS_MAX))
    expected = {
        "ok": None,
        "error": "listing: access denied by S3 (AccessDenied: no)",
        "bug": "unexpected KeyError: 'UploadId'",
        "slow": f"stopped after 0.2 s with {CLEANED_KEYS_MAX + 5} removed; the next backup goes on",
    }[behaviour]
    assert cleaned.error == expected


async def test_backup_side_lets_cancellation_through() -> None:
    from executor.backup import clean_abandoned

    task = asyncio.create_task(
        clean_abandoned(
            sink=_Sink("slow"),  # type: ignore[arg-type]
            progress=Progress(mode="backup"),
            prefix=PREFIX,
            before=RUN_START,
            budget=60,
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the report field ---------------------------------------------------------------------------


def _report(cleaned: Cleaned | None, **kw: Any) -> Report:
    return Report(
        mode="backup",
        outcome="succeeded",
        started_at=RUN_START,
        finished_at=RUN_START,
        key=f"{PREFIX}x.snap",
        cleaned=cleaned,
        **kw,
    )


def test_report_round_trip_and_absence() -> None:
    cleaned = Cleaned.of([f"{PREFIX}a.snap", f"{PREFIX}b.snap"], "x" * 1000)
    assert cleaned.error is not None and len(cleaned.error) == 300
    r = _report(cleaned)
    assert Report.from_json(r.to_json()) == r
    assert "cleaned" not in _report(None).to_dict()
    assert Report.from_json(_report(None).to_json()).cleaned is None


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        3,
        [],
        {"uploads": -1},
        {"uploads": True},
        {"uploads": "1"},
        {"uploads": 1, "keys": "a"},
        {"uploads": 1, "keys": [1]},
        {"uploads": 1, "error": 5},
    ],
)
def test_a_malformed_cleaned_is_ignored_not_fatal(bad: object) -> None:
    import json

    data = _report(None).to_dict()
    data["cleaned"] = bad
    assert Report.from_json(json.dumps(data)).cleaned is None
    data["cleaned"] = {"uploads": 2, "future": True}
    assert Report.from_json(json.dumps(data)).cleaned == Cleaned(uploads=2)


def test_long_cleaned_keys_are_dropped_first_and_the_count_stays() -> None:
    keys = [f"{PREFIX}{'k' * 400}-{i}.snap" for i in range(40)]
    r = _report(Cleaned.of(keys, None))
    text = r.to_json()
    assert len(text) <= MAX_BYTES
    back = Report.from_json(text)
    assert back.outcome == "succeeded" and back.error is None
    assert back.cleaned == Cleaned(uploads=40, keys=(), error=None)
    assert back.key == r.key


# -- GCS: our own session is always cancelled ---------------------------------------------------


async def test_gcs_session_created_while_cancelled_is_cancelled(tmp_path: Path) -> None:
    """SIGTERM/deadline while the session POST is in flight: the session the server created
    is cancelled (it could never be found again: sessions are not listable)."""
    posted, release = asyncio.Event(), asyncio.Event()
    deleted: list[str] = []

    async def create(request: web.Request) -> web.Response:
        posted.set()
        await release.wait()
        base = f"http://{request.host}"
        return web.json_response({}, headers={"Location": f"{base}/session?upload_id=s1"})

    async def cancel(request: web.Request) -> web.Response:
        deleted.append(request.query_string)
        return web.Response(status=499)

    app = web.Application()
    app.router.add_post("/upload/storage/v1/b/{bucket}/o", create)
    app.router.add_delete("/session", cancel)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        env = {
            **cluster_env(),
            **token_env("http://127.0.0.1:1", "t", tmp_path),
            **storage_env("gcs", endpoint=url, bucket="bkt"),
        }
        settings = load_config(mode="backup", environ=env).storage
        async with open_gcs(settings=settings) as sink:
            result = CleanupResult()
            await sink.clean_abandoned(prefix=PREFIX, before=RUN_START, result=result)
            assert not result.supported and result.removed == []
            task = asyncio.create_task(sink.begin(key=f"{PREFIX}x.snap", metadata={}))
            await asyncio.wait_for(posted.wait(), 10)
            task.cancel()
            await asyncio.sleep(0)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert deleted == ["upload_id=s1"]
    finally:
        await runner.cleanup()
