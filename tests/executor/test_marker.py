"""The freshness marker: a backup writes it into the live OpenBao before the snapshot, and the
manifest and the report carry it. Real OpenBao and moto, the executor as a subprocess; plus
the schema rules (old manifests stay valid, the report stays within its size).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
from devenv.openbao import OpenBao
from devenv.storage import StorageServer

from executor.contract import load_config
from executor.errors import ConfigurationError
from executor.layout import Manifest, Marker
from executor.report import MAX_BYTES, DrillResult, Report, ReportError
from tests.executor.harness import (
    Run,
    cluster_env,
    list_keys,
    pending_multipart_uploads,
    read_object,
    run_executor,
    storage_env,
    token_env,
)

AUTH = 11


def kv_mount(openbao: OpenBao, *, version: int) -> str:
    """A fresh KV mount of ``version`` on the session OpenBao (ready to serve)."""
    mount = f"obb-marker-{uuid.uuid4().hex[:8]}"
    openbao.api("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": str(version)}})
    if version == 2:
        openbao.server.wait_until(
            lambda: openbao.request("GET", f"{mount}/config")[0] == 200,
            timeout=20,
            what="kv-v2 ready",
        )
    return mount


async def backup_with_marker(
    openbao: OpenBao,
    s3_server: StorageServer,
    bucket: str,
    tmp: Path,
    *,
    path: str,
    kv_version: int = 2,
    name: str | None = "nightly-7",
    token: str | None = None,
) -> Run:
    env = {
        **cluster_env(),
        **token_env(openbao.addr, token or openbao.root_token, tmp),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=bucket),
        "OBB_MARKER_PATH": path,
        "OBB_MARKER_KV_VERSION": str(kv_version),
    }
    if name is not None:
        env["OBB_BACKUP_NAME"] = name
    return await run_executor("backup", env, tmp=tmp)


def stored_manifest(s3_server: StorageServer, bucket: str, run: Run) -> Manifest:
    assert run.report.manifest_key is not None
    return Manifest.from_json(
        read_object("s3", endpoint=s3_server.endpoint, bucket=bucket, key=run.report.manifest_key)
    )


@pytest.mark.integration
async def test_backup_writes_the_marker_kv2(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    mount = kv_mount(openbao, version=2)
    path = f"{mount}/data/openbao-backup/marker"
    before = dt.datetime.now(dt.UTC)
    run = await backup_with_marker(openbao, s3_server, s3_bucket, tmp_path, path=path)
    assert run.code == 0, run.stderr
    marker = run.report.marker
    assert marker is not None
    assert (marker.path, marker.kvVersion, marker.record) == (path, 2, "nightly-7")
    assert re.fullmatch(r"[0-9a-f]{32}", marker.nonce)
    assert before - dt.timedelta(seconds=1) <= dt.datetime.fromisoformat(marker.time)
    assert json.loads(run.raw_report)["marker"] == marker.to_dict()
    # The manifest records the same marker, and the live OpenBao holds it.
    assert stored_manifest(s3_server, s3_bucket, run).marker == marker
    live = openbao.api("GET", path)["data"]["data"]
    assert live == {"record": "nightly-7", "time": marker.time, "nonce": marker.nonce}


@pytest.mark.integration
async def test_backup_writes_the_marker_kv1_record_defaults_to_the_key(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    mount = kv_mount(openbao, version=1)
    path = f"{mount}/marker"
    run = await backup_with_marker(
        openbao, s3_server, s3_bucket, tmp_path, path=path, kv_version=1, name=None
    )
    assert run.code == 0, run.stderr
    marker = run.report.marker
    assert marker is not None
    assert marker.record == run.report.key
    assert stored_manifest(s3_server, s3_bucket, run).marker == marker
    assert openbao.api("GET", path)["data"] == marker.value()


@pytest.mark.integration
async def test_marker_refused_is_auth_and_nothing_is_uploaded(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    mount = kv_mount(openbao, version=2)
    policy = openbao.setup_backup_policy()  # snapshot read only: no write on the marker
    token = openbao.api("POST", "auth/token/create", {"policies": [policy], "ttl": "10m"})["auth"][
        "client_token"
    ]
    run = await backup_with_marker(
        openbao, s3_server, s3_bucket, tmp_path, path=f"{mount}/data/marker", token=token
    )
    assert run.code == AUTH, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "auth"
    assert "freshness marker" in run.report.error.message
    assert run.report.marker is None
    assert list_keys("s3", endpoint=s3_server.endpoint, bucket=s3_bucket) == {}
    assert pending_multipart_uploads(s3_server.endpoint, s3_bucket) == []


# -- schema and configuration (no servers) -----------------------------------------------------

MARKER = Marker(
    path="secret/data/openbao-backup/marker",
    kvVersion=2,
    record="nightly-7",
    time="2026-11-21T23:30:45.123Z",
    nonce="0" * 32,
)


def manifest(marker: Marker | None) -> Manifest:
    return Manifest(
        key="team-a/bao/20261121T233045Z-0123abcd.snap",
        sha256="a" * 64,
        size=10,
        createdAt="2026-11-21T23:30:47.000Z",
        takenAt="2026-11-21T23:30:45.000Z",
        namespace="team-a",
        cluster="bao",
        clusterUID="uid",
        trigger="manual",
        backupName="nightly-7",
        openbaoVersion="2.4.1",
        raftIndex=5,
        raftTerm=2,
        raftConfigurationIndex=1,
        snapshotMetaVersion=1,
        executorVersion="test",
        marker=marker,
    )


def test_manifest_marker_is_optional_and_round_trips() -> None:
    old = manifest(None)
    assert "marker" not in json.loads(old.to_json())
    assert Manifest.from_json(old.to_json()) == old
    new = manifest(MARKER)
    assert json.loads(new.to_json())["marker"] == {
        "path": MARKER.path,
        "kvVersion": 2,
        "record": "nightly-7",
        "time": MARKER.time,
        "nonce": MARKER.nonce,
    }
    assert Manifest.from_json(new.to_json()) == new
    bad = json.loads(new.to_json())
    bad["marker"]["kvVersion"] = 3
    with pytest.raises(ValueError, match="kvVersion"):
        Manifest.from_json(json.dumps(bad))


def test_report_marker_and_drill_round_trip_and_fit() -> None:
    t0 = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    long_marker = Marker(
        path="kv/data/" + "m" * 248,
        kvVersion=2,
        record="r" * 253,
        time=MARKER.time,
        nonce=MARKER.nonce,
    )
    report = Report(
        mode="drill",
        outcome="failed",
        started_at=t0,
        finished_at=t0,
        key="k/" + "x" * 1000 + ".snap",
        manifest_key="k/" + "x" * 1000 + ".snap.m",
        marker=long_marker,
        drill=DrillResult(unsealed=True, marker_checked=True, marker_matched=False),
        error=ReportError("verification", "marker mismatch: " + "y" * 5000),
    )
    text = report.to_json()
    assert len(text) <= MAX_BYTES
    parsed = Report.from_json(text)
    assert parsed.marker == long_marker
    assert parsed.drill == report.drill
    assert parsed.error is not None
    assert parsed.error.message.startswith("marker mismatch: ")
    plain = Report(mode="backup", outcome="succeeded", started_at=t0, finished_at=t0)
    assert "marker" not in json.loads(plain.to_json())
    assert "drill" not in json.loads(plain.to_json())


@pytest.mark.parametrize(
    ("path", "version", "fragment"),
    [
        ("secret/openbao-backup/marker", "2", "/data/"),
        ("sys/policies/acl/x", "1", "KV mount"),
        ("secret/../sys/x", "1", "API path"),
        ("secret/data/x", "3", "OBB_MARKER_KV_VERSION"),
    ],
)
def test_marker_path_is_checked(path: str, version: str, fragment: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    env = {
        **cluster_env(),
        **token_env("http://127.0.0.1:8200", "t", tmp_path),
        **storage_env("s3", endpoint="http://127.0.0.1:1", bucket="obb-test"),
        "OBB_MARKER_PATH": path,
        "OBB_MARKER_KV_VERSION": version,
    }
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        load_config(mode="backup", environ=env)
    env.update({"OBB_MARKER_PATH": "/secret/data/ok/", "OBB_MARKER_KV_VERSION": "2"})
    cfg = load_config(mode="backup", environ=env)
    assert cfg.backup is not None
    assert cfg.backup.marker is not None
    assert cfg.backup.marker.path == "secret/data/ok"
    assert (
        load_config(
            mode="backup",
            environ=cfg.to_env() | {k: v for k, v in env.items() if not k.startswith("OBB_")},
        )
        == cfg
    )
