"""Issue 12, part 2: the snapshot comes from the active node, or it is not committed.

Against a REAL 3-node OpenBao Raft cluster on 127.0.0.1 (hack/devenv/openbao_cluster.py
``start_openbao_cluster``) and moto S3:

* happy path: a backup pointed at a STANDBY finds the active node, takes the snapshot there,
  confirms it afterwards and commits (the log names the active node and its active_time);
* step-down mid-stream: the executor reaches the active node through a TcpProxy that pauses
  after 1 MiB of the ~12 MB snapshot; ``bao operator step-down`` runs against that node while
  the stream is held; then the stream is released. Run three times, each on a fresh cluster
  (OpenBao 2.7.2 ignores a step-down on a node that itself became active through a step-down:
  its log says "manual step-down operation already queued", so one cluster gives one
  deterministic step-down);
* sys/leader failing at the confirmation step (an HttpProxy answering 500 to sys/leader once
  the snapshot was requested) is a leader error and nothing is committed.

What OpenBao 2.7.2 does on step-down mid-stream (seen every time): the step-down is accepted
at once (204), the node's transition to standby waits for the in-flight snapshot request
(requests to that node, sys/leader included, block meanwhile), the snapshot stream then ENDS
NORMALLY with 200 and a complete, valid archive, and only then the node is a standby. Without
the confirmation this was committed as a verified success.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from devenv.openbao import OpenBao
from devenv.openbao_cluster import OpenBaoCluster, start_openbao_cluster
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

pytestmark = pytest.mark.integration

SEED_ENTRIES = 60  # ~12 MB snapshot: the stream can be held after 1 MiB
SEED_VALUE = 150_000
PAUSE_AFTER = 1 << 20
LEADER_EXIT = 12


@pytest.fixture
def raft_cluster(tmp_path: Path) -> Iterator[OpenBaoCluster]:
    """A fresh, seeded 3-node Raft cluster; every node stopped by PID at the end."""
    cluster = start_openbao_cluster(tmp_path, name=f"raft-{uuid.uuid4().hex[:4]}")
    try:
        leader = cluster.active()
        for i in range(SEED_ENTRIES):
            leader.kv_put(f"big/{i}", {"blob": base64.b64encode(os.urandom(SEED_VALUE)).decode()})
        yield cluster
    finally:
        cluster.stop()


def log_events(run: Run, event: str) -> list[dict[str, Any]]:
    out = []
    for line in run.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            out.append(entry)
    return out


def leader_state(node: OpenBao) -> dict[str, Any]:
    status, payload = node.request("GET", "sys/leader", token="", timeout=5)
    assert status == 200, payload
    data: dict[str, Any] = json.loads(payload)
    return data


def assert_nothing_committed(run: Run, server: StorageServer, bucket: str) -> None:
    assert run.code != 0
    assert run.report.outcome == "failed"
    assert run.report.manifest_key is None
    assert run.report.key is not None, "the attempted key is reported"
    keys = list_keys("s3", endpoint=server.endpoint, bucket=bucket)
    assert run.report.key not in keys
    assert f"{run.report.key}.manifest.json" not in keys
    assert keys == {}
    assert pending_multipart_uploads(server.endpoint, bucket) == []


async def test_backup_from_three_node_cluster_names_the_active_node(
    raft_cluster: OpenBaoCluster, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    active = raft_cluster.active()
    standby = next(n for n in raft_cluster.nodes if n is not active)
    active_time = leader_state(active)["active_time"]
    env = {
        **cluster_env(),
        **token_env(standby.addr, raft_cluster.root_token, tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr
    r = run.report
    assert r.outcome == "succeeded" and r.error is None
    assert r.key is not None and r.manifest_key == f"{r.key}.manifest.json"
    keys = list_keys("s3", endpoint=s3_server.endpoint, bucket=s3_bucket)
    assert set(keys) == {r.key, r.manifest_key}
    assert keys[r.key] == r.size
    assert r.openbao_version and r.raft_index and r.raft_term
    # The report schema (v1) has no field for the node; the log names it.
    found = log_events(run, "active node found")
    assert [e["leader"] for e in found] == [active.addr]
    assert found[0]["active_time"] == active_time
    confirmed = log_events(run, "snapshot source confirmed active")
    assert [(e["node"], e["active_time"]) for e in confirmed] == [(active.addr, active_time)]
    started = log_events(run, "snapshot stream started")
    assert [e["url"] for e in started] == [f"{active.addr}/v1/sys/storage/raft/snapshot"]


@pytest.mark.parametrize("attempt", [1, 2, 3])
async def test_step_down_during_the_stream_is_never_a_success(
    attempt: int,
    raft_cluster: OpenBaoCluster,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    old = raft_cluster.active()
    before = leader_state(old)
    assert before["is_self"]
    port = urlsplit(old.addr).port
    assert port is not None
    # A small receive buffer keeps OpenBao blocked mid-write while the proxy holds the stream.
    proxy = await TcpProxy(port, pause_after=PAUSE_AFTER, upstream_rcvbuf=64 << 10).start()
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, raft_cluster.root_token, tmp_path),
            **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
        }
        task = asyncio.create_task(run_executor("backup", env, tmp=tmp_path, timeout=180))
        paused = asyncio.create_task(proxy.paused.wait())
        await asyncio.wait({paused, task}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if not paused.done():
            paused.cancel()
            early = task.result() if task.done() else None
            raise AssertionError(
                "the stream never reached the pause point; "
                + (
                    f"executor ended first: exit {early.code} {early.raw_report}\n"
                    f"{early.stderr[-3000:]}"
                    if early
                    else "executor still running"
                )
                + f"\nnode log:\n{_log_tail(old)}"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not pending_multipart_uploads(s3_server.endpoint, s3_bucket):
            assert loop.time() < deadline, "the upload never started"
            await asyncio.sleep(0.05)
        assert not task.done()
        await asyncio.to_thread(raft_cluster.step_down, old)
        held = await asyncio.to_thread(_wait_step_down_pending, old)
        proxy.release.set()
        run = await task
    finally:
        proxy.release.set()
        await proxy.stop()

    assert_nothing_committed(run, s3_server, s3_bucket)
    assert run.report.error is not None
    klass, message = run.report.error.error_class, run.report.error.message
    if klass == "leader":
        behaviour = "200 with a complete stream, rejected by the post-stream confirmation"
        assert run.code == LEADER_EXIT, run.stderr
        assert message.startswith("leadership moved during the snapshot"), message
        assert old.addr in message and before["active_time"] in message, message
        assert log_events(run, "snapshot stream started"), "the stream had started"
        assert not log_events(run, "snapshot source confirmed active")
    else:
        # Any other OpenBao behaviour (broken stream, 307 before the body) must still fail.
        behaviour = f"{klass}: {message}"
        assert klass in ("snapshot", "verification"), (klass, message)
    print(
        f"attempt {attempt}: step-down "
        f"{'held the node until the stream ended' if held else 'took effect at once'}; "
        f"observed: {behaviour}; message: {message}"
    )
    # Leadership really moved: another node is active now, with a new active_time.
    new = raft_cluster.active()
    assert new is not old or leader_state(new)["active_time"] != before["active_time"]
    if klass == "leader":
        assert new.addr in message or "not known yet" in message, message


def _log_tail(node: OpenBao) -> str:
    from devenv.procs import log_tail

    return log_tail(node.server.log_path, 30)


def _wait_step_down_pending(node: OpenBao) -> bool:
    """True once a sys/leader to ``node`` hangs (its step-down waits for the in-flight
    snapshot request); False if the node already answers as a standby."""
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            status, payload = node.request("GET", "sys/leader", token="", timeout=1)
        except TimeoutError:
            return True
        except OSError as exc:
            if "timed out" in str(exc):
                return True
            raise
        if status == 200 and not json.loads(payload).get("is_self"):
            return False
        time.sleep(0.05)
    raise AssertionError("the step-down neither took effect nor blocked within 15 s")


async def test_sys_leader_failing_at_confirmation_is_a_leader_error(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    """A real (single-node Raft, HA) OpenBao; sys/leader answers 500 once the snapshot was
    requested, so the source cannot be confirmed: not committed, class leader."""
    snapshot_seen = False

    def rule(req: web.Request, _n: int) -> Fault | None:
        nonlocal snapshot_seen
        if req.path.endswith("/sys/storage/raft/snapshot"):
            snapshot_seen = True
        if snapshot_seen and req.path.endswith("/sys/leader"):
            return Fault(status=500)
        return None

    proxy = await HttpProxy(openbao.addr, rule=rule).start()
    try:
        env = {
            **cluster_env(),
            **token_env(proxy.url, openbao.root_token, tmp_path),
            **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
        }
        run = await run_executor("backup", env, tmp=tmp_path)
    finally:
        await proxy.stop()
    assert run.code == LEADER_EXIT, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "leader"
    assert run.report.error.message.startswith("cannot confirm that"), run.report.error.message
    assert "HTTP 500" in run.report.error.message
    assert [s.status for s in proxy.seen if s.path_qs.endswith("/sys/leader")] == [200, 500]
    assert_nothing_committed(run, s3_server, s3_bucket)
