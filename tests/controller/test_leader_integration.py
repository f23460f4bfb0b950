"""Two real controller processes against the real API server: one leader, clean failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from devenv.controlplane import ControlPlane
from devenv.procs import free_port

from controller.kube.client import KubeClients
from controller.kube.resources import LEASE, OPENBAO_BACKUP
from tests.controller.conftest import ROOT
from tests.controller.helpers import until_async

pytestmark = pytest.mark.integration

DURATION, RENEW, RETRY = 6.0, 4.0, 1.0


@dataclass
class Proc:
    identity: str
    port: int
    log: Path
    popen: subprocess.Popen[bytes]

    def lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def events(self, event: str) -> list[datetime]:
        return [_ts(line) for line in self.lines() if line.get("event") == event]

    async def metric(self, name: str) -> float | None:
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(
                    f"http://127.0.0.1:{self.port}/metrics", timeout=aiohttp.ClientTimeout(total=2)
                ) as r,
            ):
                text = await r.text()
        except aiohttp.ClientError:
            return None
        for line in text.splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return None


def _ts(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))


def start(cp: ControlPlane, *, identity: str, namespace: str, lease: str, tmp: Path) -> Proc:
    port = free_port()
    log = tmp / f"{identity}.log"
    argv = [
        sys.executable,
        "-m",
        "controller",
        "--kubeconfig",
        str(cp.kubeconfig),
        "--namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--lease-name",
        lease,
        "--identity",
        identity,
        "--lease-duration",
        str(DURATION),
        "--renew-deadline",
        str(RENEW),
        "--retry-period",
        str(RETRY),
        "--bind-address",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--workers",
        "2",
        "--drain-timeout",
        "5",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return Proc(identity=identity, port=port, log=log, popen=popen)


async def test_one_leader_failover_without_overlap_and_clean_release(
    control_plane: ControlPlane,
    backup_crds: None,
    clients: KubeClients,
    test_namespace: str,
    tmp_path: Path,
) -> None:
    ns, api = test_namespace, clients.api
    lease_name = f"lock-{uuid.uuid4().hex[:6]}"
    lease_path = LEASE.path(namespace=ns, name=lease_name)
    for i in range(3):
        await api.create(
            path=OPENBAO_BACKUP.path(namespace=ns),
            body={
                "apiVersion": OPENBAO_BACKUP.api_version,
                "kind": OPENBAO_BACKUP.kind,
                "metadata": {"name": f"b{i}"},
                "spec": {"cluster": "c"},
            },
        )
    procs = {
        name: start(control_plane, identity=name, namespace=ns, lease=lease_name, tmp=tmp_path)
        for name in ("ctl-a", "ctl-b")
    }
    stop_beat = asyncio.Event()

    async def heartbeat() -> None:
        """Keep the leader busy: every change is one reconcile (one log line)."""
        n = 0
        while not stop_beat.is_set():
            n += 1
            await api.merge_patch(
                path=OPENBAO_BACKUP.path(namespace=ns, name="b0"),
                body={"metadata": {"annotations": {"beat": str(n)}}},
            )
            await asyncio.sleep(0.2)

    beat = asyncio.create_task(heartbeat())
    try:

        async def one_leads() -> bool:
            return sum(len(p.events("started leading")) for p in procs.values()) >= 1

        await until_async(one_leads, timeout=30, what="a leader")
        leader = next(p for p in procs.values() if p.events("started leading"))
        standby = next(p for p in procs.values() if p is not leader)

        async def leader_reconciles() -> bool:
            return len(leader.events("reconciled")) >= 10

        await until_async(leader_reconciles, timeout=30, what="reconciles by the leader")
        lease = await api.get(path=lease_path)
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == int(DURATION)
        assert await leader.metric("leader_election_master_status") == 1.0
        assert await standby.metric("leader_election_master_status") == 0.0
        assert standby.events("reconciled") == []

        async def standby_ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"http://127.0.0.1:{standby.port}/readyz") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await until_async(standby_ready, timeout=30, what="the standby's warm caches")

        os.kill(leader.popen.pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        killed_mono = time.monotonic()
        leader.popen.wait(timeout=10)

        async def standby_leads() -> bool:
            return bool(standby.events("started leading"))

        await until_async(standby_leads, timeout=DURATION + 10, what="the takeover")
        takeover = time.monotonic() - killed_mono
        assert takeover <= DURATION + 2 * RETRY * 1.2 + 1.0, takeover

        async def standby_reconciles() -> bool:
            return len(standby.events("reconciled")) >= 5

        await until_async(standby_reconciles, timeout=30, what="reconciles by the new leader")
        lease = await api.get(path=lease_path)
        assert lease["spec"]["holderIdentity"] == standby.identity
        assert lease["spec"]["leaseTransitions"] == 1

        # No overlap: every reconcile of the old leader precedes the kill, every reconcile of
        # the new one follows its start of leadership, which follows the kill.
        started = standby.events("started leading")[0]
        assert max(leader.events("reconciled")) <= killed_at
        assert started >= killed_at
        assert min(standby.events("reconciled")) >= started

        # Clean shutdown of the new leader: exits 0 and releases the lease.
        stop_beat.set()
        await beat
        standby.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(standby.popen.wait, 30) == 0
        lease = await api.get(path=lease_path)
        assert lease["spec"]["holderIdentity"] == ""
        assert lease["spec"]["leaseDurationSeconds"] == 1
        assert standby.events("released lease")
    finally:
        stop_beat.set()
        await asyncio.gather(beat, return_exceptions=True)
        for p in procs.values():
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait(timeout=10)


async def test_paused_leader_does_not_reconcile_on_waking_and_exits_1(
    control_plane: ControlPlane,
    backup_crds: None,
    clients: KubeClients,
    test_namespace: str,
    tmp_path: Path,
) -> None:
    """SIGSTOP the leader past the lease duration (a frozen VM, a long GC pause): the standby
    takes over; when the old leader wakes it must not reconcile anything and must exit 1."""
    ns, api = test_namespace, clients.api
    lease_name = f"lock-{uuid.uuid4().hex[:6]}"
    await api.create(
        path=OPENBAO_BACKUP.path(namespace=ns),
        body={
            "apiVersion": OPENBAO_BACKUP.api_version,
            "kind": OPENBAO_BACKUP.kind,
            "metadata": {"name": "b0"},
            "spec": {"cluster": "c"},
        },
    )
    procs = {
        name: start(control_plane, identity=name, namespace=ns, lease=lease_name, tmp=tmp_path)
        for name in ("ctl-p", "ctl-q")
    }
    stop_beat = asyncio.Event()

    async def heartbeat() -> None:
        n = 0
        while not stop_beat.is_set():
            n += 1
            await api.merge_patch(
                path=OPENBAO_BACKUP.path(namespace=ns, name="b0"),
                body={"metadata": {"annotations": {"beat": str(n)}}},
            )
            await asyncio.sleep(0.2)

    beat = asyncio.create_task(heartbeat())
    try:

        async def some_leader_reconciles() -> bool:
            return any(len(p.events("reconciled")) >= 5 for p in procs.values())

        await until_async(some_leader_reconciles, timeout=40, what="a working leader")
        leader = next(p for p in procs.values() if p.events("started leading"))
        standby = next(p for p in procs.values() if p is not leader)
        os.kill(leader.popen.pid, signal.SIGSTOP)
        paused_at = datetime.now(UTC)

        async def standby_reconciles() -> bool:
            return len(standby.events("reconciled")) >= 3

        await until_async(standby_reconciles, timeout=DURATION + 15, what="the takeover")
        await asyncio.sleep(1.0)  # let buffered watch events pile up for the sleeper
        os.kill(leader.popen.pid, signal.SIGCONT)
        rc = await asyncio.to_thread(leader.popen.wait, 30)
        assert rc == 1
        assert leader.events("stopped leading")
        late = [t for t in leader.events("reconciled") if t > paused_at]
        assert late == [], f"the old leader reconciled after waking: {late}"
        lease = await api.get(path=LEASE.path(namespace=ns, name=lease_name))
        assert lease["spec"]["holderIdentity"] == standby.identity
    finally:
        stop_beat.set()
        await asyncio.gather(beat, return_exceptions=True)
        for p in procs.values():
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, signal.SIGCONT)
                p.popen.kill()
                p.popen.wait(timeout=10)


async def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        "--lease-duration",
        "1",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"leader election" in err
