"""Lock renewals hold under load (issue 13): they do not wait for a worker or the queue.

A backup runs under a 15 s lock (renewed every 5 s). Then every worker is kept busy for 20 s
by other clusters' reconciles (a queue that is never served, as under a burst of 1,000 due
clusters): the Lease is still renewed on time, by the renewal path, through its own write
budget. After the run the lock is released and no renewal follows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller.runner import Result
from tests.inprocess.harness import Cluster, Kube, play_kubelet, run_controller, until
from tests.inprocess.test_fault_scenarios import backup_manager

BUSY_SECONDS = 20.0


def renew_time(lease: dict[str, Any] | None) -> dt.datetime:
    assert lease is not None
    return dt.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))


async def test_renewals_keep_time_while_every_worker_is_busy(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    cluster = Cluster(kube=kube, namespace=namespace, name="vault", openbao_addr=openbao.addr)
    async with run_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, operation_lock_seconds=15
    ) as ctl:
        await cluster.create()
        await cluster.trigger("long-run")
        name = (await cluster.new_record(set()))["metadata"]["name"]
        await cluster.wait_phase(name, {"Running"})

        manager = backup_manager(ctl)
        real = manager.reconcile
        busy: set[str] = set()

        async def slow(*, key: str) -> Result:
            if key.endswith("/busy-1") or key.endswith("/busy-2"):
                busy.add(key)
                await asyncio.sleep(BUSY_SECONDS)
            return await real(key=key)

        manager.reconcile = slow  # type: ignore[method-assign]
        for other in ("busy-1", "busy-2"):
            await Cluster(
                kube=kube, namespace=namespace, name=other, openbao_addr=openbao.addr
            ).create()

        async def all_workers_busy() -> bool:
            return len(busy) == 2

        await until(all_workers_busy, what="both workers held by the busy clusters")
        started = time.monotonic()
        renewals: set[dt.datetime] = set()
        while time.monotonic() - started < BUSY_SECONDS - 2:
            renewals.add(renew_time(await cluster.lease()))
            await asyncio.sleep(0.5)  # sampling the Lease, not synchronisation
        # 18 s of a fully busy queue at one renewal per 5 s: at least 3 renewals seen
        assert len(renewals) >= 3, sorted(renewals)
        gaps = sorted(renewals)
        assert max((b - a).total_seconds() for a, b in itertools.pairwise(gaps)) < 10

        manager.reconcile = real  # type: ignore[method-assign]
        await play_kubelet(kube, namespace, f"{name}-backup")
        await cluster.wait_phase(name, {"Succeeded"})
        await cluster.wait_lock_free(timeout=60)
        assert manager.deps.renewer is not None
        assert manager.deps.renewer.held() == {}
        released = await cluster.lease()
        assert released is not None and released["spec"].get("holderIdentity") in (None, "")

        async def settled() -> bool:
            return ctl.idle()

        await until(settled, what="the controller idle")
