"""A freed executor slot wakes the oldest waiting launch at once (issue 13), in process against
the real API server.

The waiting launch's own timer (:func:`~controller.backup.decide.timing.cap_retry_delay`) is
moved an hour out in these tests, so only the wake-up can start the waiting backup within the
deadline; :func:`test_without_the_wake_up_the_waiting_backup_does_not_start` is the control
that shows the moved timer really holds it (the wake-up switched off, nothing starts).

* global cap 1, two clusters due together: the second Job is created within
  :data:`WAKE_DEADLINE` of the first backup's result being recorded; the delay between the
  two writes (the record's ``Succeeded`` status patch and the Job's POST, from the
  controller's own call log) is printed and bounded;
* per-target cap 1, three clusters, two writing to one storage target and one to another: the
  two on distinct targets run at once, the second on the shared target waits
  ``Pending``/``ConcurrencyLimit`` until the first finishes, then runs; all three succeed,
  each with exactly one record and one Job.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller.backup.act import launch as launch_module
from controller.backup.act.slots import LaunchSlots
from controller.backup.decide.timing import CAP_RETRY_SECONDS
from tests.inprocess.harness import (
    Call,
    Cluster,
    Kube,
    Running,
    play_kubelet,
    run_controller,
    until,
)
from tests.inprocess.test_waiting import blocked_condition

FAR_TIMER_SECONDS = 3600.0
"""The waiting launch's own timer in these tests: far beyond any deadline below."""
WAKE_DEADLINE = 3.0
"""How soon after a slot frees the next Job must exist: well under the fallback timer."""
assert WAKE_DEADLINE < CAP_RETRY_SECONDS


@pytest.fixture
def far_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch waiting for a slot would look again only after an hour."""
    monkeypatch.setattr(launch_module, "cap_retry_delay", lambda position: FAR_TIMER_SECONDS)


async def _running_and_waiting(
    clusters: dict[str, Cluster],
) -> tuple[str, str] | None:
    """``(cluster running, cluster waiting for a slot)`` once one runs and the other waits."""
    running = waiting = None
    for name, cluster in clusters.items():
        records = await cluster.records()
        if len(records) != 1:
            return None
        rec = records[0]
        if (rec.get("status") or {}).get("phase") == "Running":
            running = name
        elif await blocked_condition(cluster, rec["metadata"]["name"], "ConcurrencyLimit"):
            waiting = name
    return (running, waiting) if running and waiting else None


async def _two_due_together(
    kube: Kube, ctl: Running, namespace: str, openbao: OpenBao
) -> tuple[Cluster, str, Cluster, str]:
    """Two clusters triggered together under a global cap of 1: (first, its record, second,
    its record), the first running, the second waiting for the slot without a Job."""
    clusters = {
        n: Cluster(kube=kube, namespace=namespace, name=n, openbao_addr=openbao.addr)
        for n in ("one", "two")
    }
    for c in clusters.values():
        await c.create()
    await ctl.settle()
    for c in clusters.values():
        await c.trigger("together")
    got = await until(
        lambda: _running_and_waiting(clusters), what="one backup running, the other waiting"
    )
    first, second = clusters[got[0]], clusters[got[1]]
    a = (await first.records())[0]["metadata"]["name"]
    b = (await second.records())[0]["metadata"]["name"]
    assert await second.jobs_of(b) == []
    return first, a, second, b


def _succeeded_at(calls: list[Call], record: str) -> float:
    """When the controller wrote ``record``'s ``Succeeded`` status (its monotonic clock)."""
    found = [
        c.at
        for c in calls
        if (c.verb, c.resource, c.subresource, c.name)
        == ("PATCH", "openbaobackups", "status", record)
        and ((c.body or {}).get("status") or {}).get("phase") == "Succeeded"
    ]
    assert len(found) == 1, f"{record}: {len(found)} Succeeded writes"
    return found[0]


def _job_created_at(calls: list[Call], job: str) -> float:
    found = [c.at for c in calls if (c.verb, c.resource, c.name) == ("POST", "jobs", job)]
    assert len(found) == 1, f"{job}: {len(found)} creates"
    return found[0]


@pytest.mark.usefixtures("far_timer")
async def test_a_freed_slot_starts_the_waiting_backup_at_once(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    async with run_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, max_concurrent_backups=1
    ) as ctl:
        first, a, second, b = await _two_due_together(kube, ctl, namespace, openbao)
        await play_kubelet(kube, namespace, f"{a}-backup")
        await first.wait_phase(a, {"Succeeded"})
        seen = time.monotonic()

        async def second_job() -> list[dict[str, Any]]:
            return await second.jobs_of(b)

        await until(second_job, timeout=WAKE_DEADLINE, what=f"{b}'s Job after the slot freed")
        waited = time.monotonic() - seen
        delay = _job_created_at(ctl.faults.calls, f"{b}-backup") - _succeeded_at(
            ctl.faults.calls, a
        )
        print(f"slot freed -> next Job POST: {delay * 1000:.0f} ms (test saw it {waited:.2f} s)")
        assert 0 < delay < WAKE_DEADLINE
        await second.wait_phase(b, {"Running"})
        await play_kubelet(kube, namespace, f"{b}-backup")
        await second.wait_phase(b, {"Succeeded"})
        await ctl.settle()


@pytest.mark.usefixtures("far_timer")
async def test_without_the_wake_up_the_waiting_backup_does_not_start(
    kube: Kube,
    control_plane: ControlPlane,
    openbao: OpenBao,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: with the wake-up switched off, the moved timer holds the waiting backup
    past the deadline the test above allows (so that test fails without the wake-up)."""
    monkeypatch.setattr(LaunchSlots, "wake", lambda self, **_: ())
    async with run_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, max_concurrent_backups=1
    ) as ctl:
        first, a, second, b = await _two_due_together(kube, ctl, namespace, openbao)
        await play_kubelet(kube, namespace, f"{a}-backup")
        await first.wait_phase(a, {"Succeeded"})

        async def second_job() -> list[dict[str, Any]]:
            return await second.jobs_of(b)

        with pytest.raises(AssertionError):
            await until(second_job, timeout=WAKE_DEADLINE, what=f"{b}'s Job (must not come)")
        got = await second.record(b)
        assert got is not None and got["status"]["phase"] == "Pending"


@pytest.mark.usefixtures("far_timer")
async def test_the_per_target_cap_runs_distinct_targets_together_and_queues_the_shared_one(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    def cluster(name: str) -> Cluster:
        return Cluster(kube=kube, namespace=namespace, name=name, openbao_addr=openbao.addr)

    shared1, shared2, other = cluster("shared-1"), cluster("shared-2"), cluster("other")
    async with run_controller(
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        max_concurrent_backups_per_target=1,
    ) as ctl:
        await shared1.create()
        await shared2.create()
        body = other.body()
        body["spec"]["backup"]["target"]["bucket"] = "inprocess-other-bucket"
        await kube.api.create(path=f"{other.base}/openbaoclusters", body=body)
        await ctl.settle()

        await shared1.trigger("go")
        s1 = (await shared1.new_record(set()))["metadata"]["name"]
        await shared1.wait_phase(s1, {"Running"})
        await shared2.trigger("go")
        await other.trigger("go")
        s2 = (await shared2.new_record(set()))["metadata"]["name"]
        o = (await other.new_record(set()))["metadata"]["name"]

        await other.wait_phase(o, {"Running"})
        assert (await shared1.record(s1) or {})["status"]["phase"] == "Running"  # both at once
        waiting = await until(
            lambda: blocked_condition(shared2, s2, "ConcurrencyLimit"),
            what="shared-2 waiting for its target's slot",
        )
        assert waiting["status"]["phase"] == "Pending"
        why = next(c for c in waiting["status"]["conditions"] if c["type"] == "Blocked")
        assert "per storage target" in why["message"]
        assert await shared2.jobs_of(s2) == []

        await play_kubelet(kube, namespace, f"{o}-backup")  # another target's slot frees
        await other.wait_phase(o, {"Succeeded"})
        await ctl.settle()
        assert (await shared2.record(s2) or {})["status"]["phase"] == "Pending"
        assert await shared2.jobs_of(s2) == []

        await play_kubelet(kube, namespace, f"{s1}-backup")  # the shared target's slot frees
        await shared1.wait_phase(s1, {"Succeeded"})
        await shared2.wait_phase(s2, {"Running"}, timeout=WAKE_DEADLINE)
        await play_kubelet(kube, namespace, f"{s2}-backup")
        await shared2.wait_phase(s2, {"Succeeded"})
        await ctl.settle()

        for c, rec in ((shared1, s1), (shared2, s2), (other, o)):
            records = await c.records()
            assert [r["metadata"]["name"] for r in records] == [rec]
            assert [r["status"]["phase"] for r in records] == ["Succeeded"]
            assert len(await c.jobs_of(rec)) == 1
            job_posts = [
                x
                for x in ctl.faults.calls
                if (x.verb, x.resource, x.name) == ("POST", "jobs", f"{rec}-backup")
            ]
            assert len(job_posts) == 1
