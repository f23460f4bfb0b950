"""API writes per backup (issue 13): one scheduled backup and one manual trigger, counted by
verb and resource on the in-process App's client, against the real API server.

The budget is the table below (docs/backup-manager.md, "API writes per backup"); a change that
adds a write to the backup path fails here with the whole table in the message.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

from controller.backup.act.deps import utcnow
from tests.inprocess.conftest import World
from tests.inprocess.harness import Call, Cluster, play_kubelet, until
from tests.inprocess.test_fault_scenarios import backup_manager

WRITES = {"POST", "PUT", "PATCH", "DELETE"}

SCHEDULED_BUDGET = {
    ("POST", "openbaobackups", ""): 1,  # the record
    ("POST", "leases", ""): 1,  # the lock, created with its first holder
    ("POST", "jobs", ""): 1,  # the executor Job
    ("PATCH", "openbaobackups", "status"): 3,  # Running; the result; accounted
    ("PATCH", "openbaoclusters", "status"): 2,  # launch bookkeeping; the counted outcome
    ("PUT", "leases", ""): 1,  # the release
    ("PATCH", "jobs", ""): 1,  # the Job's result finalizer
    ("PATCH", "pods", ""): 1,  # the pod's result finalizer
    ("POST", "events", ""): 3,  # BackupStarted; BackupSucceeded on the record and the cluster
}
"""Writes of one scheduled backup on a cluster whose Lease already exists (PUT, not POST)."""


def tally(calls: list[Call]) -> dict[tuple[str, str, str], int]:
    return dict(collections.Counter(c.key for c in calls if c.verb in WRITES))


def sequence(calls: list[Call]) -> str:
    return "\n".join(
        f"  {c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''} {c.name}"
        for c in calls
        if c.verb in WRITES
    )


def table(counts: dict[tuple[str, str, str], int]) -> str:
    rows = [f"{v:>6} {r}{'/' + s if s else ''}: {n}" for (v, r, s), n in sorted(counts.items())]
    return "\n".join([*rows, f"total: {sum(counts.values())}"])


async def run_to_success(world: World, cluster: Cluster, name: str) -> None:
    await cluster.wait_phase(name, {"Running"})
    await play_kubelet(world.kube, world.namespace, f"{name}-backup")
    await cluster.wait_phase(name, {"Succeeded"})
    await cluster.wait_accounted(name)
    await cluster.wait_lock_free()
    await world.controller.settle(quiet=1.0)


async def test_writes_of_one_manual_trigger(world: World) -> None:
    cluster = world.cluster
    await cluster.trigger("warm-up")  # the Lease exists afterwards, as on any cluster but new
    first = (await cluster.new_record(set()))["metadata"]["name"]
    await run_to_success(world, cluster, first)

    mark = world.controller.faults.mark()
    await cluster.trigger("counted")
    name = (await cluster.new_record({first}))["metadata"]["name"]
    await run_to_success(world, cluster, name)
    calls = world.controller.faults.calls[mark:]
    counts = tally(calls)
    print(f"\nmanual trigger:\n{table(counts)}\n{sequence(calls)}")
    want = {
        **SCHEDULED_BUDGET,
        ("POST", "events", ""): 4,  # + BackupQueued on the cluster
    }
    want.pop(("POST", "leases", ""))
    want[("PUT", "leases", "")] = 2  # the acquire (the Lease exists) and the release
    assert counts == want, table(counts)


async def test_writes_of_one_scheduled_backup(world: World) -> None:
    cluster = world.cluster
    manager = backup_manager(world.controller)
    now = utcnow()
    window = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=2)
    await world.kube.api.merge_patch(
        path=cluster.path,
        body={"spec": {"backup": {"schedule": f"{window.minute} {window.hour} * * *"}}},
    )
    await world.controller.settle()
    mark = world.controller.faults.mark()
    offset = window + dt.timedelta(seconds=1) - utcnow()
    manager.deps.now = lambda: utcnow() + offset
    await world.kube.api.merge_patch(
        path=cluster.path, body={"metadata": {"annotations": {"inprocess/poke": "1"}}}
    )
    name = f"{cluster.name}-{window:%Y%m%d%H%M}"

    async def created() -> dict[str, Any] | None:
        return await cluster.record(name)

    await until(created, what=f"the scheduled record {name}")
    await run_to_success(world, cluster, name)
    calls = world.controller.faults.calls[mark:]
    counts = tally(calls)
    print(f"\nscheduled backup:\n{table(counts)}\n{sequence(calls)}")
    assert counts == SCHEDULED_BUDGET, table(counts)
