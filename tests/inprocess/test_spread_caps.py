"""Spread and caps (issue 13), in process against the real API server.

* ``--schedule-spread-seconds``: a cluster's window W starts at W + its fixed offset, and the
  record is still named after W (the backup manager's clock is moved, as in the fault
  scenarios, instead of waiting for a real window);
* ``--max-concurrent-backups 1``: while one backup runs, a second cluster's backup waits
  ``Pending`` with ``ConcurrencyLimit`` (record and cluster), counted in
  ``openbao_backup_queued``, without a ``PreflightBlocked`` Warning event (throttling is not
  a problem), and starts as soon as the first finishes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller import metrics
from controller.backup.act.deps import utcnow
from controller.backup.decide.spread import offset_seconds
from tests.inprocess.harness import Cluster, Kube, Running, play_kubelet, run_controller, until
from tests.inprocess.test_fault_scenarios import backup_manager
from tests.inprocess.test_waiting import blocked_condition

SPREAD = 600


async def test_a_spread_window_starts_at_the_clusters_offset_under_its_own_name(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    cluster = Cluster(kube=kube, namespace=namespace, name="vault", openbao_addr=openbao.addr)
    offset = offset_seconds(
        namespace=namespace, name="vault", spread_seconds=SPREAD, starting_deadline_seconds=None
    )
    window = utcnow().replace(second=0, microsecond=0) + dt.timedelta(minutes=2)
    async with run_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, schedule_spread_seconds=SPREAD
    ) as ctl:
        body = cluster.body()
        body["spec"]["backup"]["schedule"] = f"{window.minute} {window.hour} * * *"
        await kube.api.create(path=f"{cluster.base}/openbaoclusters", body=body)
        planned = window + dt.timedelta(seconds=offset)

        async def plan() -> str | None:  # the watch event may come after a quiet settle
            return (await cluster.backup_status()).get("nextScheduledBackup")

        assert await until(plan, what="the plan") == planned.strftime("%Y-%m-%dT%H:%M:%SZ")
        await ctl.settle()

        await fires_once_at_the_offset(ctl, kube, cluster, window=window, offset=offset)


async def fires_once_at_the_offset(
    ctl: Running, kube: Kube, cluster: Cluster, *, window: dt.datetime, offset: int
) -> None:
    """Move ``ctl``'s clock just short of the window plus the offset (nothing), then past it
    (the window's record, once, from ``ctl``), and let the backup succeed."""
    manager = backup_manager(ctl)
    planned = window + dt.timedelta(seconds=offset)
    poke = 0

    async def at(when: dt.datetime) -> None:
        nonlocal poke
        shift = when - utcnow()
        manager.deps.now = lambda: utcnow() + shift
        poke += 1
        await kube.api.merge_patch(
            path=cluster.path, body={"metadata": {"annotations": {"inprocess/poke": str(poke)}}}
        )
        await ctl.settle()

    name = f"vault-{window:%Y%m%d%H%M}"
    if offset > 2:
        await at(planned - dt.timedelta(seconds=2))  # the window passed, its offset not
        assert await cluster.record(name) is None
    await at(planned + dt.timedelta(seconds=1))

    async def created() -> dict[str, Any] | None:
        return await cluster.record(name)

    record = await until(created, what=f"{name} at the window plus the offset")
    assert record["spec"]["trigger"] == "scheduled"
    await cluster.wait_phase(name, {"Running"})
    await play_kubelet(kube, cluster.namespace, f"{name}-backup")
    await cluster.wait_phase(name, {"Succeeded"})
    await ctl.settle()
    scheduled = [r for r in await cluster.records() if r["spec"]["trigger"] == "scheduled"]
    assert [r["metadata"]["name"] for r in scheduled] == [name]
    posts = [c for c in ctl.faults.calls if (c.verb, c.resource) == ("POST", "openbaobackups")]
    assert [c.name for c in posts] == [name]


async def test_the_global_cap_queues_the_second_backup_until_a_slot_frees(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    first = Cluster(kube=kube, namespace=namespace, name="first", openbao_addr=openbao.addr)
    second = Cluster(kube=kube, namespace=namespace, name="second", openbao_addr=openbao.addr)
    async with run_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, max_concurrent_backups=1
    ) as ctl:
        await first.create()
        await second.create()
        await ctl.settle()
        await first.trigger("one")
        a = (await first.new_record(set()))["metadata"]["name"]
        await first.wait_phase(a, {"Running"})
        await second.trigger("two")
        b = (await second.new_record(set()))["metadata"]["name"]

        got = await until(
            lambda: blocked_condition(second, b, "ConcurrencyLimit"),
            what="the second backup waiting for a slot",
        )
        assert got["status"]["phase"] == "Pending"
        assert await second.jobs_of(b) == []

        async def cluster_says_why() -> dict[str, Any] | None:
            ready = await second.condition("Ready")
            return ready if ready and ready["reason"] == "ConcurrencyLimit" else None

        await until(cluster_says_why, what="second: Ready=False ConcurrencyLimit")
        assert metrics.REGISTRY.get_sample_value("openbao_backup_queued") == 1.0

        await play_kubelet(kube, namespace, f"{a}-backup")
        await first.wait_phase(a, {"Succeeded"})
        await second.wait_phase(b, {"Running"}, timeout=30)
        assert metrics.REGISTRY.get_sample_value("openbao_backup_queued") == 0.0
        # a wait for a slot is normal flow under a cap: a condition and a gauge, no Warning
        warned = [e for e in await second.events("PreflightBlocked") if e["regarding"]["name"] == b]
        assert warned == [], warned
        await play_kubelet(kube, namespace, f"{b}-backup")
        await second.wait_phase(b, {"Succeeded"})
        await ctl.settle()
