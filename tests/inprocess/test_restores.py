"""OpenBaoRestore through the API, in process against the real apiserver and a real OpenBao.

The executor's side is played by the test (its verify / restore / backup reports); the
end-to-end lane (tests/e2e/test_restore.py) runs the real executor against the three storage
servers. Here the controller's lifecycle is checked: phases, conditions, events, the safety
snapshot, the operation lock against concurrent backups, and that nothing is retried.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from controller import metrics
from executor.report import Report, ReportError
from tests.inprocess.conftest import World
from tests.inprocess.harness import Cluster, play_kubelet, until

GROUP, VERSION = "backup.openbao.org", "v1alpha1"


def report(mode: str, key: str, *, error: str | None = None) -> Report:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if error is not None:
        return Report(
            mode=mode,  # type: ignore[arg-type]
            outcome="failed",
            started_at=now,
            finished_at=now,
            key=key,
            error=ReportError(error, f"injected {mode} failure"),  # type: ignore[arg-type]
        )
    return Report(
        mode=mode,  # type: ignore[arg-type]
        outcome="succeeded",
        started_at=now - dt.timedelta(seconds=1),
        finished_at=now,
        key=key,
        manifest_key=key + ".manifest.json" if mode == "verify" else None,
        size=4096 if mode == "verify" else None,
        sha256="ab" * 32 if mode == "verify" else None,
        raft_index=1 if mode == "verify" else None,
        raft_term=1 if mode == "verify" else None,
        openbao_version="2.4.1" if mode == "verify" else None,
    )


async def backed_up(world: World, value: str, known: set[str] | None = None) -> dict[str, Any]:
    """One successful backup of the world's cluster (the test plays the executor)."""
    cluster = world.cluster
    await cluster.trigger(value)
    rec = await cluster.new_record(known or set())
    name = rec["metadata"]["name"]
    await cluster.wait_phase(name, {"Running"})
    await play_kubelet(world.kube, world.namespace, f"{name}-backup")
    done: dict[str, Any] = await cluster.wait_phase(name, {"Succeeded"})
    await cluster.wait_lock_free()
    return done


async def create_restore(world: World, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": name, "namespace": world.namespace},
        "spec": {"cluster": "vault", **spec},
    }
    await world.kube.api.create(path=f"{world.cluster.base}/openbaorestores", body=body)


async def restore_obj(world: World, name: str) -> dict[str, Any] | None:
    return await world.kube.get(f"{world.cluster.base}/openbaorestores/{name}")


async def wait_restore(world: World, name: str, phases: set[str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await restore_obj(world, name)
        return obj if obj and (obj.get("status") or {}).get("phase") in phases else None

    got: dict[str, Any] = await until(probe, what=f"restore {name} in {sorted(phases)}")
    return got


async def restore_events(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in await cluster.events() if e["regarding"]["name"] == name]


async def _has_event(cluster: Cluster, name: str, reason: str) -> bool:
    return reason in await restore_events(cluster, name)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}


async def test_restore_of_a_backup_with_safety_snapshot_while_backups_wait(world: World) -> None:
    cluster = world.cluster
    source = await backed_up(world, "v1")
    src_name, key = source["metadata"]["name"], source["status"]["key"]

    await create_restore(world, "r1", backupName=src_name)
    await wait_restore(world, "r1", {"Validating"})
    await play_kubelet(world.kube, world.namespace, "r1-verify", report=report("verify", key))

    got = await wait_restore(world, "r1", {"SafetySnapshot", "Restoring"})
    safety = got["status"]["safetySnapshot"]
    assert safety == "r1-pre-restore"
    record = await cluster.wait_phase(safety, {"Running"})
    assert record["spec"] == {
        "cluster": "vault",
        "trigger": "pre-restore",
        "deletionPolicy": "Retain",
    }
    await play_kubelet(world.kube, world.namespace, f"{safety}-backup")
    await cluster.wait_phase(safety, {"Succeeded"})

    got = await wait_restore(world, "r1", {"Restoring"})
    await until(lambda: _holder_is(cluster, "restore/r1"), what="the lock held by restore/r1")
    assert got["status"]["sha256"] == "ab" * 32 and got["status"]["raftIndex"] == 1

    known = {r["metadata"]["name"] for r in await cluster.records()}
    await cluster.trigger("during-restore")
    waiting = await cluster.new_record(known)
    waiting_name = waiting["metadata"]["name"]

    async def blocked_by_restore() -> bool:
        rec = await cluster.record(waiting_name)
        cond = conditions(rec or {}).get("Blocked") or {}
        return cond.get("reason") == "LockHeld" and "restore/r1" in cond.get("message", "")

    await until(blocked_by_restore, what="the new backup blocked by restore/r1")
    assert await cluster.jobs_of(waiting_name) == []

    await play_kubelet(world.kube, world.namespace, "r1-restore", report=report("restore", key))
    done = await wait_restore(world, "r1", {"Succeeded"})
    conds = conditions(done)
    assert {"Validated", "SafetySnapshotTaken", "Restored", "Verified"} <= set(conds)
    assert "UnsealRequired" not in conds
    assert done["status"]["durationSeconds"] >= 0
    await until(lambda: _has_event(cluster, "r1", "RestoreSucceeded"), what="RestoreSucceeded")
    reasons = await restore_events(cluster, "r1")
    for reason in (
        "RestoreValidating",
        "RestoreValidated",
        "SafetySnapshotStarted",
        "SafetySnapshotTaken",
        "RestoreStarted",
        "RestoreApplied",
        "RestoreSucceeded",
    ):
        assert reason in reasons, (reason, reasons)

    # the waiting backup runs once the restore let go of the lock
    await cluster.wait_phase(waiting_name, {"Running"})
    labels = {"namespace": world.namespace, "cluster": "vault"}
    success = metrics.REGISTRY.get_sample_value(
        "openbao_restore_last_success_timestamp_seconds", labels
    )
    assert success is not None and success > 0


async def _holder_is(cluster: Cluster, holder: str) -> bool:
    return await cluster.lock_holder() == holder


async def test_a_failed_restore_stays_failed_and_is_never_retried(world: World) -> None:
    cluster = world.cluster
    source = await backed_up(world, "v1")
    key = source["status"]["key"]
    await create_restore(world, "r2", backupName=source["metadata"]["name"], safetySnapshot=False)
    await wait_restore(world, "r2", {"Validating"})
    await play_kubelet(world.kube, world.namespace, "r2-verify", report=report("verify", key))
    await wait_restore(world, "r2", {"Restoring"})
    await play_kubelet(
        world.kube, world.namespace, "r2-restore", report=report("restore", key, error="snapshot")
    )
    failed = await wait_restore(world, "r2", {"Failed"})
    assert failed["status"]["failureReason"] == "snapshot"
    await until(lambda: _has_event(cluster, "r2", "RestoreFailed"), what="RestoreFailed event")
    await cluster.wait_lock_free()
    await world.controller.settle()
    posts = [
        c
        for c in world.controller.faults.calls
        if (c.verb, c.resource) == ("POST", "jobs") and c.name == "r2-restore"
    ]
    assert len(posts) == 1
    assert (await restore_obj(world, "r2") or {})["status"]["phase"] == "Failed"
    # the cluster's next backup still runs
    await backed_up(
        world, "after-failed-restore", {r["metadata"]["name"] for r in await cluster.records()}
    )


async def test_a_snapshot_that_does_not_verify_fails_before_anything_else(world: World) -> None:
    cluster = world.cluster
    source = await backed_up(world, "v1")
    key = source["status"]["key"]
    await create_restore(world, "r3", backupName=source["metadata"]["name"])
    await wait_restore(world, "r3", {"Validating"})
    await play_kubelet(
        world.kube, world.namespace, "r3-verify", report=report("verify", key, error="verification")
    )
    failed = await wait_restore(world, "r3", {"Failed"})
    assert failed["status"]["failureReason"] == "verification"
    await world.controller.settle()
    assert await cluster.record("r3-pre-restore") is None
    assert [j for j in await cluster.jobs() if j["metadata"]["name"] == "r3-restore"] == []


async def test_a_failed_safety_snapshot_fails_the_restore_and_touches_nothing(world: World) -> None:
    cluster = world.cluster
    source = await backed_up(world, "v1")
    key = source["status"]["key"]
    await create_restore(world, "r4", backupName=source["metadata"]["name"])
    await wait_restore(world, "r4", {"Validating"})
    await play_kubelet(world.kube, world.namespace, "r4-verify", report=report("verify", key))
    await cluster.wait_phase("r4-pre-restore", {"Running"})
    await play_kubelet(world.kube, world.namespace, "r4-pre-restore-backup", outcome="failed")
    failed = await wait_restore(world, "r4", {"Failed"})
    assert failed["status"]["failureReason"] == "SafetySnapshotFailed"
    await world.controller.settle()
    assert [j for j in await cluster.jobs() if j["metadata"]["name"] == "r4-restore"] == []


async def test_bad_sources_fail_at_once_with_the_reason(world: World) -> None:
    await create_restore(world, "missing", backupName="no-such-backup")
    await create_restore(
        world, "outside", key=f"inprocess/{world.namespace}/other/20261130T120000Z-0123abcd.snap"
    )
    await create_restore(world, "nocluster", key="x/y.snap")
    body = await restore_obj(world, "nocluster")
    assert body is not None
    for name, reason in (("missing", "BackupNotFound"), ("outside", "KeyOutsidePrefix")):
        got = await wait_restore(world, name, {"Failed"})
        assert got["status"]["failureReason"] == reason
        await until(partial(_has_event, world.cluster, name, "RestoreFailed"), what="event")
    await world.controller.settle()
    assert [j for j in await world.cluster.jobs() if "verify" in j["metadata"]["name"]] == []


async def test_a_restore_of_a_cluster_that_does_not_exist_fails(world: World) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": "ghost", "namespace": world.namespace},
        "spec": {"cluster": "ghost-cluster", "key": "a/b.snap"},
    }
    await world.kube.api.create(path=f"{world.cluster.base}/openbaorestores", body=body)
    got = await wait_restore(world, "ghost", {"Failed"})
    assert got["status"]["failureReason"] == "ClusterNotFound"
