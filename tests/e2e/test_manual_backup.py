"""Manual backups end to end: annotation trigger and kubectl-created OpenBaoBackup.

Real control plane + Job controller, the node agent running the real executor, real OpenBao
(JWT login with a projected, audience-bound service-account token) and moto S3.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import GROUP, VERSION, Env, until
from tests.executor.harness import list_keys, read_object

pytestmark = pytest.mark.integration


async def test_annotation_trigger_backs_up_once(env: Env) -> None:
    env.openbao.kv_put("e2e/manual", {"value": "before"})
    await env.create_cluster("bao")
    await env.trigger("bao", "first")

    async def one_record() -> list[dict[str, Any]]:
        return await env.backups("bao")

    records = await until(one_record, what="a record for the trigger")
    assert len(records) == 1
    name = records[0]["metadata"]["name"]
    assert name.startswith("bao-manual-")
    done = await env.wait_phase(name, {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    status = done["status"]
    key = status["key"]
    assert key.startswith(f"backups/{env.namespace}/bao/") and key.endswith(".snap")
    assert len(status["sha256"]) == 64 and status["size"] > 0

    # exactly one Job, owned by the record
    jobs = await env.jobs()
    assert [j.metadata.name for j in jobs] == [f"{name}-backup"]
    assert jobs[0].metadata.owner_references[0].name == name

    # the verified object and its manifest are in the bucket
    keys = list_keys("s3", endpoint=env.s3.endpoint, bucket=env.bucket)
    assert keys[key] == status["size"]
    manifest = json.loads(
        read_object("s3", endpoint=env.s3.endpoint, bucket=env.bucket, key=status["manifestKey"])
    )
    assert manifest["sha256"] == status["sha256"]
    assert manifest["cluster"] == "bao" and manifest["namespace"] == env.namespace

    # cluster status, written when the Job reached its result
    async def accounted() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        backup = (obj or {}).get("status", {}).get("backup", {})
        return backup if backup.get("lastBackupName") == key else None

    backup = await until(accounted, what="cluster status.backup")
    assert backup["consecutiveFailures"] == 0
    assert backup["lastHandledTrigger"] == "first"
    assert backup["lastBackupRecord"] == name
    assert backup["lastBackupSize"] == status["size"]

    # events and metrics
    assert await until(lambda: env.events("BackupStarted"), what="BackupStarted event")

    async def announced() -> set[str] | None:
        kinds = {e.involved_object.kind for e in await env.events("BackupSucceeded")}
        return kinds if kinds == {"OpenBaoBackup", "OpenBaoCluster"} else None

    assert await until(announced, what="BackupSucceeded on the record and the cluster")
    assert env.metric("openbao_backup_success_total", cluster="bao") == 1.0
    assert env.metric("openbao_backup_in_progress", cluster="bao") == 0.0
    assert (env.metric("openbao_backup_last_size_bytes", cluster="bao") or 0) == status["size"]
    assert env.metric("openbao_backup_failure_total", cluster="bao", reason="storage") == 0.0

    # the same trigger value again is not a new backup; a new value is
    await env.trigger("bao", "first")
    await env.trigger("bao", "second")

    async def two_done() -> bool:
        recs = await env.backups("bao")
        return len(recs) == 2 and all(
            (r.get("status") or {}).get("phase") == "Succeeded" for r in recs
        )

    await until(two_done, what="second manual backup")
    assert len(await env.jobs()) == 2


async def test_kubectl_created_backup(env: Env) -> None:
    await env.create_cluster("bao")
    await env.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        env.namespace,
        "openbaobackups",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoBackup",
            "metadata": {"name": "pre-upgrade"},
            "spec": {"cluster": "bao", "trigger": "pre-upgrade"},
        },
    )
    done = await env.wait_phase("pre-upgrade", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert "backup.openbao.org/snapshot" in done["metadata"]["finalizers"]
    keys = list_keys("s3", endpoint=env.s3.endpoint, bucket=env.bucket)
    assert done["status"]["key"] in keys
