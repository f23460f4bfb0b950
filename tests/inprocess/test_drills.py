"""Restore drills, controller side, in process against the real apiserver.

The drill Job's executor is played by the test (its ``drill`` report); tests/executor/
test_drill.py runs the real executor against a real scratch OpenBao. Here: a due drill window
starts one drill Job for the newest unverified backup, with the scratch server beside the
executor; its result lands on the record and the cluster (condition, events, metrics); a
marker mismatch is a precise failure; retention never deletes the newest verified backup.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller import metrics
from controller.backup.act.deps import utcnow
from controller.reconcilers.backups import BackupManager
from executor.report import DrillResult, Report, ReportError
from tests.inprocess.conftest import World
from tests.inprocess.harness import Cluster, Running, play_kubelet, until

DRILL_SCHEDULE = "0 3 * * *"


def manager(ctl: Running) -> BackupManager:
    for runner in ctl.app.runners:
        reconciler = runner._reconciler  # the runner's reconciler (test access)
        if isinstance(reconciler, BackupManager):
            return reconciler
    raise AssertionError("no backup manager runner")


def drill_report(key: str, *, matched: bool | None, error: str | None = None) -> Report:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    proved = DrillResult(unsealed=True, marker_checked=matched is not None, marker_matched=matched)
    if error is not None:
        return Report(
            mode="drill",
            outcome="failed",
            started_at=now,
            finished_at=now,
            key=key,
            error=ReportError("verification", error),
            drill=proved,
        )
    return Report(
        mode="drill",
        outcome="succeeded",
        started_at=now - dt.timedelta(seconds=3),
        finished_at=now,
        key=key,
        drill=proved,
    )


async def drilled_cluster(world: World, name: str, **backup: Any) -> Cluster:
    cluster = Cluster(
        kube=world.kube, namespace=world.namespace, name=name, openbao_addr=world.openbao_addr
    )
    body = cluster.body()
    body["spec"]["backup"].update(
        {
            "verify": {
                "schedule": DRILL_SCHEDULE,
                "port": 18300,
                "unsealKeysSecretRef": {"name": "unseal-keys"},
            },
            "marker": {"path": "secret/data/openbao-backup/marker"},
            **backup,
        }
    )
    await world.kube.api.create(path=f"{cluster.base}/openbaoclusters", body=body)
    return cluster


async def succeeded(
    world: World, cluster: Cluster, value: str, *, lock_free: bool = True
) -> dict[str, Any]:
    known = {r["metadata"]["name"] for r in await cluster.records()}
    await cluster.trigger(value)
    rec = await cluster.new_record(known)
    name = rec["metadata"]["name"]
    await cluster.wait_phase(name, {"Running"})
    (job,) = await cluster.jobs_of(name)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OBB_MARKER_PATH"] == "secret/data/openbao-backup/marker"
    await play_kubelet(world.kube, world.namespace, f"{name}-backup")
    done: dict[str, Any] = await cluster.wait_phase(name, {"Succeeded"})
    if lock_free:
        await cluster.wait_lock_free()
    return done


async def due_drill_window(world: World, cluster: Cluster, days: int) -> None:
    """Move the manager's clock past the next 03:00 UTC (+days) and wake the cluster."""
    now = utcnow()
    window = (now + dt.timedelta(days=days)).replace(hour=3, minute=0, second=5, microsecond=0)
    if window <= now:
        window += dt.timedelta(days=1)
    offset = window - now
    manager(world.controller).deps.now = lambda: utcnow() + offset
    await world.kube.api.merge_patch(
        path=cluster.path, body={"metadata": {"annotations": {"inprocess/poke": str(days)}}}
    )


def verification(record: dict[str, Any] | None) -> dict[str, Any]:
    return ((record or {}).get("status") or {}).get("verification") or {}


async def wait_verification(cluster: Cluster, name: str, results: set[str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        got = verification(await cluster.record(name))
        return got if got.get("result") in results else None

    found: dict[str, Any] = await until(probe, what=f"{name} verification in {sorted(results)}")
    return found


async def test_a_due_drill_verifies_the_newest_backup_and_reports_it(world: World) -> None:
    cluster = await drilled_cluster(world, "drilled")
    older = await succeeded(world, cluster, "one")
    newest = await succeeded(world, cluster, "two")
    name, key = newest["metadata"]["name"], newest["status"]["key"]

    await due_drill_window(world, cluster, days=1)
    await wait_verification(cluster, name, {"Running"})
    (job,) = [j for j in await cluster.jobs() if j["metadata"]["name"] == f"{name}-drill"]
    pod = job["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"executor", "openbao"}
    assert containers["executor"]["command"][-1] == "drill"
    env = {e["name"]: e["value"] for e in containers["executor"]["env"]}
    assert env["OBB_DRILL_ADDR"] == "http://127.0.0.1:18300"
    assert env["OBB_DRILL_KEY"] == key
    assert env["OBB_OPENBAO_ADDR"] == "http://127.0.0.1:18300"  # never the live cluster
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["unseal-keys"]["secret"]["secretName"] == "unseal-keys"
    assert "emptyDir" in volumes["drill"]
    assert verification(await cluster.record(older["metadata"]["name"])) == {}

    await play_kubelet(
        world.kube, world.namespace, f"{name}-drill", report=drill_report(key, matched=True)
    )
    got = await wait_verification(cluster, name, {"Passed"})
    assert got["markerMatched"] is True and got["unsealed"] is True

    async def cluster_verified() -> dict[str, Any] | None:
        status = await cluster.backup_status()
        last = status.get("lastVerifiedBackup") or {}
        return last if last.get("name") == name else None

    last = await until(cluster_verified, what="lastVerifiedBackup on the cluster")
    assert last["result"] == "Passed"
    cond = await cluster.condition("RestoreVerified")
    assert cond is not None and cond["status"] == "True"
    labels = {"namespace": world.namespace, "cluster": "drilled"}
    stamp = metrics.REGISTRY.get_sample_value(
        "openbao_backup_last_verified_timestamp_seconds", labels
    )
    assert stamp is not None and stamp > 0


async def test_a_marker_mismatch_fails_the_drill_precisely(world: World) -> None:
    cluster = await drilled_cluster(world, "mismatch")
    newest = await succeeded(world, cluster, "one")
    name, key = newest["metadata"]["name"], newest["status"]["key"]
    labels = {"namespace": world.namespace, "cluster": "mismatch", "reason": "MarkerMismatch"}
    await due_drill_window(world, cluster, days=1)
    await wait_verification(cluster, name, {"Running"})
    before = metrics.REGISTRY.get_sample_value("openbao_backup_verification_failures_total", labels)
    message = "marker mismatch: expected record one-1 nonce ab, found record zero nonce cd"
    await play_kubelet(
        world.kube,
        world.namespace,
        f"{name}-drill",
        report=drill_report(key, matched=False, error=message),
    )
    got = await wait_verification(cluster, name, {"Failed"})
    assert got["reason"] == "MarkerMismatch"
    assert got["markerMatched"] is False
    assert "marker mismatch" in got["message"]

    async def failed_condition() -> dict[str, Any] | None:
        cond = await cluster.condition("RestoreVerified")
        return cond if cond and cond["status"] == "False" else None

    await until(failed_condition, what="RestoreVerified=False")
    after = metrics.REGISTRY.get_sample_value("openbao_backup_verification_failures_total", labels)
    assert after == (before or 0) + 1
    events = [
        e for e in await cluster.events("RestoreDrillFailed") if e["regarding"]["name"] == name
    ]
    assert events and "MarkerMismatch" in events[0]["note"]


async def test_retention_never_deletes_the_newest_verified_backup(world: World) -> None:
    cluster = await drilled_cluster(world, "kept", retention={"maxCount": 1})
    first = await succeeded(world, cluster, "one")
    name, key = first["metadata"]["name"], first["status"]["key"]
    await due_drill_window(world, cluster, days=1)
    await wait_verification(cluster, name, {"Running"})
    await play_kubelet(
        world.kube, world.namespace, f"{name}-drill", report=drill_report(key, matched=True)
    )
    await wait_verification(cluster, name, {"Passed"})
    second = await succeeded(world, cluster, "two")
    # the third success prunes the second (maxCount 1 among the unverified), not the first
    third = await succeeded(world, cluster, "three", lock_free=False)
    victim = second["metadata"]["name"]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    deleted = Report(
        mode="delete",
        outcome="succeeded",
        started_at=now,
        finished_at=now,
        deleted_keys=(second["status"]["key"],),
    )
    await play_kubelet(world.kube, world.namespace, f"{victim}-delete", report=deleted)

    async def second_gone() -> bool:
        return await cluster.record(victim) is None

    await until(second_gone, what="the unverified older backup pruned", timeout=30)
    kept = await cluster.record(name)
    assert kept is not None and not kept["metadata"].get("deletionTimestamp")
    assert await cluster.record(third["metadata"]["name"]) is not None
    await cluster.wait_lock_free()
