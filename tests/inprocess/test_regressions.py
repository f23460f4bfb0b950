"""Regression tests for the stalls of issue 8, each against the real apiserver, in process.

Each test reproduces an input that used to stall a cluster's backups silently and asserts the
documented outcome instead: the backup runs, or the record fails precisely and the next one
runs, or the problem is surfaced (condition, event, metric).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controller import metrics
from controller.backup.act import launch
from controller.backup.decide.jobspec import build_job
from tests.inprocess.conftest import World
from tests.inprocess.harness import Cluster, play_kubelet, until

GROUP, VERSION = "backup.openbao.org", "v1alpha1"
LOCK_LABELS = {
    "app.kubernetes.io/managed-by": "openbao-backup",
    "backup.openbao.org/cluster": "vault",
    "backup.openbao.org/lock": "operation",
}


def sample(name: str, **labels: str) -> float | None:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return None if value is None else float(value)


async def other_cluster(world: World, name: str, **backup: Any) -> Cluster:
    cluster = Cluster(
        kube=world.kube, namespace=world.namespace, name=name, openbao_addr=world.openbao_addr
    )
    body = cluster.body()
    body["spec"]["backup"].update(backup)
    await world.kube.api.create(path=f"{cluster.base}/openbaoclusters", body=body)
    return cluster


async def manual_records(cluster: Cluster) -> list[dict[str, Any]]:
    return [r for r in await cluster.records() if r["spec"].get("trigger") == "manual"]


async def test_executor_resources_launch_and_succeed(world: World) -> None:
    """Any spec.backup.executor.resources made every launch raise AttributeError."""
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    cluster = await other_cluster(world, "res", executor={"resources": resources})
    await cluster.trigger("with-resources")
    record = await cluster.new_record(set())
    name = record["metadata"]["name"]
    await cluster.wait_phase(name, {"Running"})
    (job,) = await cluster.jobs_of(name)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == resources
    await play_kubelet(world.kube, world.namespace, job["metadata"]["name"])
    await cluster.wait_phase(name, {"Succeeded"})
    await cluster.wait_lock_free()
    assert (await cluster.wait_accounted(name))["consecutiveFailures"] == 0


@pytest.mark.parametrize("attempt", [1, 2, 3])
async def test_trigger_storm_while_a_backup_runs_gives_exactly_one_more_backup(
    world: World, attempt: int
) -> None:
    """20 trigger values in 2 s while a backup runs: exactly one more backup, every run; the
    last value is handled and listed on (or named by) that backup."""
    cluster = world.cluster
    await cluster.trigger(f"running-{attempt}")
    first = await cluster.new_record(set())
    first_name = first["metadata"]["name"]
    await cluster.wait_phase(first_name, {"Running"})
    values = [f"storm-{attempt}-{i:02d}" for i in range(20)]
    for value in values:
        await cluster.trigger(value)
        await asyncio.sleep(0.1)  # pacing the writer (20 values in 2 s), not synchronisation
    await until(
        lambda: _handled(cluster, values[-1]), what="the last storm value handled", timeout=30
    )
    await world.controller.settle()
    records = await manual_records(cluster)
    assert len(records) == 2, [r["metadata"]["name"] for r in records]
    (queued,) = [r for r in records if r["metadata"]["name"] != first_name]
    status = queued.get("status") or {}
    assert status.get("phase", "Pending") == "Pending"
    own = queued["metadata"]["annotations"]["backup.openbao.org/trigger-value"]
    listed = [own, *(status.get("coalescedTriggers") or [])]
    assert values[-1] in listed
    assert set(listed) <= set(values)
    assert int(status.get("coalescedCount") or 0) == len(listed) - 1
    assert await cluster.events("BackupCoalesced")

    await play_kubelet(world.kube, world.namespace, f"{first_name}-backup")
    queued_name = queued["metadata"]["name"]
    await cluster.wait_phase(queued_name, {"Running"})
    await play_kubelet(world.kube, world.namespace, f"{queued_name}-backup")
    await cluster.wait_phase(queued_name, {"Succeeded"})
    await world.controller.settle()
    assert len(await manual_records(cluster)) == 2


async def _handled(cluster: Cluster, value: str) -> bool:
    return (await cluster.backup_status()).get("lastHandledTrigger") == value


async def _renew(world: World, lease: dict[str, Any], *, duration: int) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    body = {
        **lease,
        "spec": {**lease["spec"], "renewTime": stamp, "leaseDurationSeconds": duration},
    }
    path = world.cluster.lease_path
    renewed: dict[str, Any] = await world.kube.api.replace(path=path, body=body)
    return renewed


async def test_a_foreign_holder_blocks_while_it_renews_and_is_taken_over_on_time(
    world: World,
) -> None:
    """A crashed foreign holder was taken over ~300 s after its last renewal (60 s lease): the
    blocked retry used an attempt-count backoff. Now: blocked for as long as it renews (here
    twice its lease duration), taken over within duration + one renewal period after."""
    duration = 6
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    lease: dict[str, Any] = await world.kube.api.create(
        path=world.cluster.lease_path.rsplit("/", 1)[0],
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "vault-openbao-oplock", "labels": LOCK_LABELS},
            "spec": {
                "holderIdentity": "upgrade/ops-42",
                "leaseDurationSeconds": duration,
                "acquireTime": stamp,
                "renewTime": stamp,
            },
        },
    )
    cluster = world.cluster
    await cluster.trigger("while-upgrading")
    record = await cluster.new_record(set())
    name = record["metadata"]["name"]
    blocked_until = time.monotonic() + 2 * duration
    while time.monotonic() < blocked_until:
        lease = await _renew(world, lease, duration=duration)
        last_renewal = time.monotonic()
        await asyncio.sleep(duration / 3)  # the foreign holder's renewal period
        assert await cluster.jobs_of(name) == [], "launched while the holder renewed"
    got = await cluster.wait_phase(name, {"Pending"})
    blocked = {c["type"]: c for c in got["status"]["conditions"]}["Blocked"]
    assert (blocked["status"], blocked["reason"]) == ("True", "LockHeld")

    def job_posts() -> list[float]:
        return [
            c.at
            for c in world.controller.faults.calls
            if (c.verb, c.resource) == ("POST", "jobs") and c.name == f"{name}-backup"
        ]

    await until(lambda: _truthy(job_posts()), timeout=3 * duration, what="the takeover's Job")
    delay = job_posts()[0] - last_renewal
    print(f"takeover {delay:.2f}s after the last renewal (lease {duration}s)")
    assert duration - 0.5 <= delay <= duration + duration / 3 + 1.0, delay
    assert await cluster.lock_holder() == f"backup/{name}"


async def _truthy(value: list[float]) -> bool:
    return bool(value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("schedule", "0 0 31 2 *", "never"),
        ("timeZone", "Europe/Amsterdamm", "Europe/Amsterdamm"),
    ],
)
async def test_an_invalid_schedule_is_an_event_and_a_metric_not_only_a_condition(
    world: World, field: str, value: str, fragment: str
) -> None:
    backup: dict[str, Any] = {"schedule": "0 * * * *"}
    backup[field] = value
    name = "bad-" + field.lower()
    cluster = await other_cluster(world, name, **backup)

    async def invalid() -> dict[str, Any] | None:
        cond = await cluster.condition("ConfigValid")
        return cond if cond and cond["status"] == "False" else None

    cond = await until(invalid, what="ConfigValid=False")
    assert fragment in cond["message"]
    events = [
        e
        for e in await cluster.events("InvalidSpec")
        if e["regarding"]["name"] == name and e["type"] == "Warning"
    ]
    assert events and fragment in events[0]["note"]
    labels = {"namespace": world.namespace, "cluster": name}
    await until(
        lambda: _equals(sample("openbao_backup_config_valid", **labels), 0.0),
        what="openbao_backup_config_valid == 0",
    )


async def _equals(got: float | None, want: float) -> bool:
    return got == want


async def test_a_bug_in_a_step_fails_the_record_and_the_next_backup_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception used to leave the record without a phase, the lock held and
    every later backup of the cluster blocked. Now: InternalError, counted, lock released."""
    original = build_job
    calls = {"n": 0}

    def broken_once(**kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AttributeError("'FrozenDict' object has no attribute 'openapi_types'")
        return original(**kwargs)

    monkeypatch.setattr(launch, "build_job", broken_once)
    before = sample("openbao_backup_reconcile_errors_total", step="launch", kind="bug") or 0.0
    cluster = world.cluster
    await cluster.trigger("bug-1")
    first = await cluster.new_record(set())
    name = first["metadata"]["name"]
    failed = await cluster.wait_phase(name, {"Failed"})
    assert failed["status"]["failureReason"] == "InternalError"
    assert failed["status"]["message"].startswith("AttributeError: ")
    assert [e for e in await cluster.events("InternalError") if e["regarding"]["name"] == name]
    await cluster.wait_lock_free()
    assert (await cluster.wait_accounted(name))["consecutiveFailures"] == 1
    after = sample("openbao_backup_reconcile_errors_total", step="launch", kind="bug")
    assert after == before + 1

    await cluster.trigger("bug-2")
    second = await cluster.new_record({name})
    second_name = second["metadata"]["name"]
    await cluster.wait_phase(second_name, {"Running"})
    await play_kubelet(world.kube, world.namespace, f"{second_name}-backup")
    await cluster.wait_phase(second_name, {"Succeeded"})
    assert (await cluster.wait_accounted(second_name))["consecutiveFailures"] == 0
    await cluster.wait_lock_free()


async def test_an_unreachable_openbao_blocks_visibly_and_the_backup_runs_once_it_answers(
    world: World,
) -> None:
    """Preflight: the record waits Pending with a reason, the cluster says why, a gauge is 1;
    once OpenBao answers again the same record runs (nothing is dropped)."""
    cluster = await other_cluster(world, "down")
    await world.kube.api.merge_patch(
        path=cluster.path, body={"spec": {"address": "http://127.0.0.1:9"}}
    )
    await cluster.trigger("while-down")
    record = await cluster.new_record(set())
    name = record["metadata"]["name"]

    async def blocked() -> dict[str, Any] | None:
        got = await cluster.record(name)
        conds = {c["type"]: c for c in ((got or {}).get("status") or {}).get("conditions") or ()}
        cond = conds.get("Blocked")
        return got if cond and cond["reason"] == "OpenBaoUnreachable" else None

    got = await until(blocked, what="Blocked=OpenBaoUnreachable")
    assert got["status"]["phase"] == "Pending"

    async def cluster_blocked() -> dict[str, Any] | None:
        cond = await cluster.condition("PreflightBlocked")
        return cond if cond and cond["status"] == "True" else None

    cluster_cond = await until(cluster_blocked, what="PreflightBlocked=True on the cluster")
    assert cluster_cond["reason"] == "OpenBaoUnreachable"
    labels = {"namespace": world.namespace, "cluster": "down"}
    assert sample("openbao_backup_preflight_blocked", **labels) == 1.0
    assert await cluster.jobs_of(name) == []
    assert [e for e in await cluster.events("PreflightBlocked") if e["regarding"]["name"] == name]

    await world.kube.api.merge_patch(
        path=cluster.path, body={"spec": {"address": world.openbao_addr}}
    )
    await cluster.wait_phase(name, {"Running"}, timeout=40)
    await play_kubelet(world.kube, world.namespace, f"{name}-backup")
    await cluster.wait_phase(name, {"Succeeded"})
    cleared = await cluster.condition("PreflightBlocked")
    assert cleared is not None and cleared["status"] == "False"


async def test_a_record_of_a_missing_cluster_fails_instead_of_waiting(world: World) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoBackup",
        "metadata": {"name": "orphan-1", "namespace": world.namespace},
        "spec": {"cluster": "nosuch", "trigger": "pre-upgrade"},
    }
    await world.kube.api.create(path=f"{world.cluster.base}/openbaobackups", body=body)
    got = await world.cluster.wait_phase("orphan-1", {"Failed"})
    assert got["status"]["failureReason"] == "ClusterNotFound"
    assert got["status"]["accounted"] is True
    assert "backup.openbao.org/snapshot" in got["metadata"]["finalizers"]


async def test_records_of_a_cluster_without_a_valid_spec_fail_with_the_reason(
    world: World,
) -> None:
    """A record for a cluster whose spec cannot be acted on is failed (InvalidSpec, counted)
    instead of waiting for a fix that may never come; ConfigValid says why."""
    cluster = await other_cluster(world, "nospec")
    await world.kube.api.merge_patch(path=cluster.path, body={"spec": {"backup": None}})

    async def invalid() -> dict[str, Any] | None:
        cond = await cluster.condition("ConfigValid")
        return cond if cond and cond["status"] == "False" else None

    cond = await until(invalid, what="ConfigValid=False")
    assert "spec.backup is not set" in cond["message"]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoBackup",
        "metadata": {"name": "nospec-by-hand", "namespace": world.namespace},
        "spec": {"cluster": "nospec", "trigger": "pre-upgrade"},
    }
    await world.kube.api.create(path=f"{cluster.base}/openbaobackups", body=body)
    got = await cluster.wait_phase("nospec-by-hand", {"Failed"})
    assert got["status"]["failureReason"] == "InvalidSpec"
    assert (await cluster.wait_accounted("nospec-by-hand"))["consecutiveFailures"] == 1
