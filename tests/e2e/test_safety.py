"""Preflight and the operation lock block launches; failures are counted exactly."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests.e2e.conftest import Env, until

pytestmark = pytest.mark.integration


def _micro(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _condition(env: Env, plural: str, name: str, ctype: str) -> dict[str, Any] | None:
    obj = await env.get(plural, name)
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == ctype:
            return dict(cond)
    return None


@pytest.mark.parametrize("labelled", [True, False], ids=["labelled", "foreign-unlabelled"])
async def test_restore_lock_blocks_until_released(env: Env, labelled: bool) -> None:
    coordination = k8s.CoordinationV1Api(env.api)
    now = dt.datetime.now(dt.UTC)
    lease_body: Any = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "bao-openbao-oplock",
            "labels": {
                "app.kubernetes.io/managed-by": "openbao-backup",
                "backup.openbao.org/cluster": "bao",
                "backup.openbao.org/lock": "operation",
            }
            if labelled
            else {},
        },
        "spec": {
            "holderIdentity": "restore/drill-1",
            "leaseDurationSeconds": 3600,
            "acquireTime": _micro(now),
            "renewTime": _micro(now),
        },
    }
    await coordination.create_namespaced_lease(env.namespace, lease_body)
    await env.create_cluster("bao")
    await env.trigger("bao", "while-restoring")

    async def blocked() -> dict[str, Any] | None:
        cond = await _condition(env, "openbaoclusters", "bao", "PreflightBlocked")
        ok = cond and cond["status"] == "True" and "restore/drill-1" in cond["message"]
        return cond if ok else None

    cond = await until(blocked, what="PreflightBlocked=True naming the holder")
    assert cond["reason"] == "LockHeld"
    records = await env.backups("bao")
    assert len(records) == 1 and records[0]["status"].get("phase", "Pending") == "Pending"
    assert await env.jobs() == []
    assert await until(lambda: env.events("PreflightBlocked"), what="PreflightBlocked event")

    # the restore finishes and releases the lease: the queued backup runs
    lease = await coordination.read_namespaced_lease("bao-openbao-oplock", env.namespace)
    lease.spec.holder_identity = ""
    lease.spec.lease_duration_seconds = 1
    await coordination.replace_namespaced_lease("bao-openbao-oplock", env.namespace, lease)
    done = await env.wait_phase(records[0]["metadata"]["name"], {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert len(await env.jobs()) == 1

    async def released() -> Any:  # the record turns Succeeded a moment before the release
        got = await coordination.read_namespaced_lease("bao-openbao-oplock", env.namespace)
        return got if got.spec.holder_identity == "" else None

    lease = await until(released, what="the lease released after the run")
    assert lease.spec.holder_identity == ""
    assert lease.spec.acquire_time > now  # the backup acquired the lease after the restore


async def test_sealed_openbao_blocks_until_unsealed(env: Env) -> None:
    await env.create_cluster("bao")
    env.openbao.seal()
    try:
        await env.trigger("bao", "while-sealed")

        async def blocked() -> dict[str, Any] | None:
            cond = await _condition(env, "openbaoclusters", "bao", "PreflightBlocked")
            return cond if cond and cond["status"] == "True" else None

        cond = await until(blocked, what="PreflightBlocked=True")
        assert cond["reason"] == "OpenBaoSealed"
        records = await env.backups("bao")
        assert len(records) == 1
        rec = await _condition(env, "openbaobackups", records[0]["metadata"]["name"], "Blocked")
        assert rec is not None and rec["reason"] == "OpenBaoSealed"
        assert await env.jobs() == []
        assert env.metric("openbao_backup_preflight_blocked", cluster="bao") == 1.0
    finally:
        env.openbao.unseal()
    done = await env.wait_phase(records[0]["metadata"]["name"], {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]

    async def cleared() -> dict[str, Any] | None:
        cond = await _condition(env, "openbaoclusters", "bao", "PreflightBlocked")
        return cond if cond and cond["status"] == "False" else None

    assert (await until(cleared, what="PreflightBlocked=False"))["reason"] == "Clear"
    assert len(await env.jobs()) == 1


async def test_failures_counted_exactly_and_reset_on_success(env: Env) -> None:
    await env.create_cluster("bao", target={"bucket": "no-such-bucket-obb"})

    async def failures_are(n: int) -> Any:
        async def probe() -> dict[str, Any] | None:
            obj = await env.get("openbaoclusters", "bao")
            backup = ((obj or {}).get("status") or {}).get("backup") or {}
            return backup if backup.get("consecutiveFailures") == n else None

        return await until(probe, what=f"consecutiveFailures == {n}")

    for attempt, value in enumerate(("f1", "f2"), start=1):
        await env.trigger("bao", value)
        backup = await failures_are(attempt)
        assert backup["lastFailureReason"].startswith("storage:"), backup
    records = await env.backups("bao")
    assert sorted(r["status"]["phase"] for r in records) == ["Failed", "Failed"]
    assert all(r["status"]["failureReason"] == "storage" for r in records)
    failed = [e for e in await env.events("BackupFailed") if e.type == "Warning"]
    assert {e.involved_object.kind for e in failed} == {"OpenBaoBackup", "OpenBaoCluster"}
    assert all("storage" in (e.message or "") for e in failed), failed
    assert env.metric("openbao_backup_failure_total", cluster="bao", reason="storage") == 2.0
    assert env.metric("openbao_backup_consecutive_failures", cluster="bao") == 2.0
    failing = await _condition(env, "openbaoclusters", "bao", "BackupFailing")
    assert failing is not None and failing["status"] == "True"

    await env.patch(
        "openbaoclusters", "bao", {"spec": {"backup": {"target": {"bucket": env.bucket}}}}
    )
    await env.trigger("bao", "ok")
    backup = await failures_are(0)
    assert backup["lastBackupRecord"].startswith("bao-manual-")
    assert env.metric("openbao_backup_consecutive_failures", cluster="bao") == 0.0
    assert env.metric("openbao_backup_success_total", cluster="bao") == 1.0
    ready = await _condition(env, "openbaoclusters", "bao", "BackupReady")
    assert ready is not None and ready["status"] == "True"
    assert len(await env.jobs()) == 3
