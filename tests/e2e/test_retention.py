"""Retention and deletion: exactly the expected objects and records go, never the last good copy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env, until
from tests.executor.harness import list_keys

pytestmark = pytest.mark.integration


async def _backup(env: Env, value: str, *, expect: str = "Succeeded") -> dict[str, Any]:
    before = {r["metadata"]["name"] for r in await env.backups("bao")}
    await env.trigger("bao", value)

    async def new_record() -> str | None:
        names = {r["metadata"]["name"] for r in await env.backups("bao")} - before
        return names.pop() if names else None

    name = await until(new_record, what=f"record for trigger {value}")
    done = await env.wait_phase(name, {"Succeeded", "Failed"})
    assert done["status"]["phase"] == expect, done["status"]
    return done


def _snapshots(env: Env) -> set[str]:
    return {
        k
        for k in list_keys("s3", endpoint=env.s3.endpoint, bucket=env.bucket)
        if k.endswith(".snap")
    }


async def _records_are(env: Env, names: set[str]) -> None:
    async def probe() -> bool:
        return {r["metadata"]["name"] for r in await env.backups("bao")} == names

    await until(probe, what=f"records == {sorted(names)}")


async def _snapshots_are(env: Env, keys: set[str]) -> None:
    async def probe() -> bool:
        return _snapshots(env) == keys

    await until(probe, what=f"snapshots == {sorted(keys)}")


async def test_retention_by_count_keeps_the_last_good_copy_while_failing(env: Env) -> None:
    await env.create_cluster("bao", retention={"maxCount": 1})
    first = await _backup(env, "a")
    # the target breaks: failures never trigger retention and never evict the good copy
    await env.patch(
        "openbaoclusters", "bao", {"spec": {"backup": {"target": {"bucket": "no-such-bucket-obb"}}}}
    )
    f1 = await _backup(env, "f1", expect="Failed")
    f2 = await _backup(env, "f2", expect="Failed")
    names = {first["metadata"]["name"], f1["metadata"]["name"], f2["metadata"]["name"]}
    await _records_are(env, names)
    assert _snapshots(env) == {first["status"]["key"]}

    # the target is fixed: the next success evicts the older success, and only it
    await env.patch(
        "openbaoclusters", "bao", {"spec": {"backup": {"target": {"bucket": env.bucket}}}}
    )
    second = await _backup(env, "b")
    await _records_are(
        env, {f1["metadata"]["name"], f2["metadata"]["name"], second["metadata"]["name"]}
    )
    await _snapshots_are(env, {second["status"]["key"]})
    keys = list_keys("s3", endpoint=env.s3.endpoint, bucket=env.bucket)
    assert not any(k.startswith(str(first["status"]["key"])) for k in keys), keys  # manifest too
    assert env.metric("openbao_backup_retention_deleted_total", cluster="bao") == 1.0
    assert await until(lambda: env.events("SnapshotDeleted"), what="SnapshotDeleted event")


async def test_retention_by_age_never_deletes_the_newest(env: Env) -> None:
    await env.create_cluster("bao")
    old1 = await _backup(env, "o1")
    old2 = await _backup(env, "o2")
    await env.patch("openbaoclusters", "bao", {"spec": {"backup": {"retention": {"maxAge": "1s"}}}})
    newest = await _backup(env, "n")
    await _records_are(env, {newest["metadata"]["name"]})
    await _snapshots_are(env, {newest["status"]["key"]})
    assert old1["status"]["key"] != old2["status"]["key"]


async def test_deleting_a_record_deletes_or_retains_its_snapshot(env: Env) -> None:
    await env.create_cluster("bao")
    deleted = await _backup(env, "d")
    kept = await _backup(env, "k")
    await env.patch(
        "openbaobackups", kept["metadata"]["name"], {"spec": {"deletionPolicy": "Retain"}}
    )
    for rec in (deleted, kept):
        await env.custom.delete_namespaced_custom_object(
            "backup.openbao.org",
            "v1alpha1",
            env.namespace,
            "openbaobackups",
            rec["metadata"]["name"],
        )
    await _records_are(env, set())
    await _snapshots_are(env, {kept["status"]["key"]})
    keys = list_keys("s3", endpoint=env.s3.endpoint, bucket=env.bucket)
    assert str(kept["status"]["manifestKey"]) in keys
    assert str(deleted["status"]["manifestKey"]) not in keys


async def test_deleting_the_cluster_keeps_its_backups(env: Env) -> None:
    await env.create_cluster("bao")
    kept = await _backup(env, "before-delete")

    async def counted() -> bool:  # the record shows Succeeded a moment before it is counted
        return env.metric("openbao_backup_success_total", cluster="bao") == 1.0

    await until(counted, what="the success counted")
    await env.custom.delete_namespaced_custom_object(
        "backup.openbao.org", "v1alpha1", env.namespace, "openbaoclusters", "bao"
    )

    async def series_removed() -> bool:
        return env.metric("openbao_backup_success_total", cluster="bao") is None

    await until(series_removed, what="the cluster's metric series removed")
    records = await env.backups("bao")
    assert [r["metadata"]["name"] for r in records] == [kept["metadata"]["name"]]
    assert records[0]["status"]["phase"] == "Succeeded"
    assert _snapshots(env) == {kept["status"]["key"]}
