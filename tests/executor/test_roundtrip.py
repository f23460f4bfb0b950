"""Backup -> restore into a FRESH OpenBao -> the pre-backup value is back, per provider.

Real OpenBao, real moto / fake-gcs-server / Azurite, the executor as a subprocess.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from devenv.openbao import OpenBao, start_openbao
from devenv.storage import StorageServer

from executor.layout import Manifest, snapshot_time
from tests.executor.harness import (
    cluster_env,
    list_keys,
    object_metadata,
    read_object,
    run_executor,
    storage_env,
    token_env,
)

pytestmark = pytest.mark.integration

PROVIDERS = ["s3", "gcs", "azure"]


def storage_for(provider: str, request: pytest.FixtureRequest) -> tuple[StorageServer, str]:
    server = {"s3": "s3_server", "gcs": "gcs_server", "azure": "azurite_server"}[provider]
    bucket = {"s3": "s3_bucket", "gcs": "gcs_bucket", "azure": "azure_container"}[provider]
    return request.getfixturevalue(server), request.getfixturevalue(bucket)


def wait_for(probe: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_round_trip(
    provider: str, openbao: OpenBao, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server, bucket = storage_for(provider, request)
    secret_path = f"rt-{provider}-{uuid.uuid4().hex[:6]}"
    openbao.kv_put(secret_path, {"password": "before-backup"})
    env = {
        **cluster_env(prefix="clusters/prod"),
        **token_env(openbao.addr, openbao.root_token, tmp_path),
        **storage_env(provider, endpoint=server.endpoint, bucket=bucket),
        "OBB_BACKUP_NAME": "nightly-1",
    }

    backup = await run_executor("backup", env, tmp=tmp_path)
    assert backup.code == 0, backup.stderr
    r = backup.report
    assert r.outcome == "succeeded"
    assert r.key is not None
    assert r.key.startswith("clusters/prod/team-a/bao/")
    assert r.key.endswith(".snap")
    assert snapshot_time(r.key) is not None
    assert r.manifest_key == r.key + ".manifest.json"
    assert r.openbao_version
    assert r.raft_index
    assert r.raft_term
    assert list_keys(provider, endpoint=server.endpoint, bucket=bucket).keys() == {
        r.key,
        r.manifest_key,
    }
    data = read_object(provider, endpoint=server.endpoint, bucket=bucket, key=r.key)
    assert hashlib.sha256(data).hexdigest() == r.sha256
    assert len(data) == r.size
    manifest = Manifest.from_json(
        read_object(provider, endpoint=server.endpoint, bucket=bucket, key=r.manifest_key)
    )
    assert (manifest.key, manifest.sha256, manifest.size) == (r.key, r.sha256, r.size)
    assert (manifest.raftIndex, manifest.raftTerm) == (r.raft_index, r.raft_term)
    assert manifest.namespace == "team-a"
    assert manifest.cluster == "bao"
    assert manifest.clusterUID == env["OBB_CLUSTER_UID"]
    assert manifest.backupName == "nightly-1"
    assert manifest.openbaoVersion == r.openbao_version
    meta = object_metadata(provider, endpoint=server.endpoint, bucket=bucket, key=r.key)
    assert meta["obb-sha256"] == r.sha256
    assert meta["obb-size"] == str(r.size)

    # Move on after the backup, then restore into a brand-new cluster.
    openbao.kv_put(secret_path, {"password": "after-backup"})
    fresh = await asyncio.to_thread(start_openbao, tmp_path, name="fresh")
    try:
        restore_env = {
            **cluster_env(),
            **token_env(fresh.addr, fresh.root_token, tmp_path),
            **storage_env(provider, endpoint=server.endpoint, bucket=bucket),
            "OBB_RESTORE_KEY": r.key,
            "OBB_RESTORE_FORCE": "true",
        }
        restore = await run_executor("restore", restore_env, tmp=tmp_path)
        assert restore.code == 0, restore.stderr
        rr = restore.report
        assert (rr.mode, rr.outcome, rr.key, rr.sha256, rr.size) == (
            "restore",
            "succeeded",
            r.key,
            r.sha256,
            r.size,
        )
        assert "sealed itself" in restore.stderr
        # The restored node carries the ORIGINAL cluster's keyring and auth state.
        wait_for(lambda: fresh.health().get("sealed") is True, timeout=30, what="sealed")
        fresh.unseal(openbao.unseal_key)
        fresh.root_token = openbao.root_token
        assert fresh.kv_get(secret_path) == {"password": "before-backup"}
    finally:
        await asyncio.to_thread(fresh.stop)

    # And the delete mode removes both objects, idempotently.
    delete_env = {
        **cluster_env(prefix="clusters/prod"),
        **storage_env(provider, endpoint=server.endpoint, bucket=bucket),
        "OBB_DELETE_KEYS": json.dumps([r.key]),
    }
    for _ in range(2):
        deleted = await run_executor("delete", delete_env, tmp=tmp_path)
        assert deleted.code == 0, deleted.stderr
        assert deleted.report.deleted_keys == (r.key,)
    assert list_keys(provider, endpoint=server.endpoint, bucket=bucket) == {}
