"""``python -m executor verify``: a stored snapshot checked against its manifest, storage only.

Real moto / fake-gcs-server / Azurite, the executor as a subprocess WITHOUT any OpenBao
variable (verify must not need one). Every run leaves the bucket exactly as it found it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
from devenv.storage import StorageServer

from executor.contract import Config, load_config
from executor.layout import Manifest, manifest_key
from tests.executor import snapshots
from tests.executor.harness import (
    Run,
    list_keys,
    pending_multipart_uploads,
    read_object,
    run_executor,
    storage_env,
    write_object,
)
from tests.executor.test_roundtrip import PROVIDERS, storage_for

KEY = "clusters/prod/team-a/bao/20261121T233045Z-0123abcd.snap"
INDEX, TERM = 98765, 7
STATE = os.urandom(700_000)  # several chunks on every provider
VERIFICATION, STORAGE, CONFIGURATION = 15, 14, 10


def manifest_for(data: bytes, *, key: str = KEY) -> Manifest:
    return Manifest(
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        createdAt="2026-11-21T23:30:47.000Z",
        takenAt="2026-11-21T23:30:45.000Z",
        namespace="team-a",
        cluster="bao",
        clusterUID="uid-1",
        trigger="manual",
        backupName="nightly-1",
        openbaoVersion="2.4.1",
        raftIndex=INDEX,
        raftTerm=TERM,
        raftConfigurationIndex=1,
        snapshotMetaVersion=1,
        executorVersion="test",
    )


def good_snapshot() -> bytes:
    return snapshots.build(state=STATE, index=INDEX, term=TERM)


class Bucket:
    """One provider's bucket, seen through the providers' plain clients."""

    def __init__(self, provider: str, server: StorageServer, name: str) -> None:
        self.provider = provider
        self.endpoint = server.endpoint
        self.name = name

    def put(self, key: str, data: bytes) -> None:
        write_object(self.provider, endpoint=self.endpoint, bucket=self.name, key=key, data=data)

    def store(self, data: bytes, manifest: Manifest | None) -> None:
        self.put(KEY, data)
        if manifest is not None:
            self.put(manifest_key(KEY), manifest.to_json().encode())

    def contents(self) -> dict[str, str]:
        """Every object -> sha256 of its bytes."""
        keys = list_keys(self.provider, endpoint=self.endpoint, bucket=self.name)
        out = {}
        for key, size in keys.items():
            data = read_object(self.provider, endpoint=self.endpoint, bucket=self.name, key=key)
            assert len(data) == size
            out[key] = hashlib.sha256(data).hexdigest()
        return out

    async def verify(self, tmp: Path, key: str = KEY, **extra: str) -> Run:
        """Run verify and check that it left the bucket untouched."""
        before = self.contents()
        env = {
            "OBB_CLUSTER_NAMESPACE": "team-a",
            "OBB_CLUSTER_NAME": "bao",
            **storage_env(self.provider, endpoint=self.endpoint, bucket=self.name),
            "OBB_VERIFY_KEY": key,
            **extra,
        }
        run = await run_executor("verify", env, tmp=tmp)
        assert self.contents() == before, "verify must not write to the bucket"
        if self.provider == "s3":
            assert pending_multipart_uploads(self.endpoint, self.name) == []
        assert run.report.mode == "verify"
        assert run.report.key == key
        assert run.code == run.report.exit_code
        return run


@pytest.fixture(params=PROVIDERS)
def bucket(request: pytest.FixtureRequest) -> Bucket:
    server, name = storage_for(request.param, request)
    return Bucket(request.param, server, name)


def failed(run: Run, code: int, fragment: str) -> None:
    assert run.report.outcome == "failed"
    assert run.report.error is not None, run.stderr
    assert run.code == code, run.report.error
    assert fragment in run.report.error.message, run.report.error.message


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_good_snapshot_verifies(bucket: Bucket, tmp_path: Path) -> None:
    data = good_snapshot()
    manifest = manifest_for(data)
    bucket.store(data, manifest)
    run = await bucket.verify(tmp_path)
    assert run.code == 0, run.stderr
    r = run.report
    assert r.outcome == "succeeded"
    assert r.error is None
    assert r.manifest_key == KEY + ".manifest.json"
    assert (r.sha256, r.size) == (manifest.sha256, manifest.size)
    assert (r.sha256, r.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (r.raft_index, r.raft_term, r.openbao_version) == (INDEX, TERM, "2.4.1")
    assert r.deleted_keys is None
    assert "stored snapshot verified" in run.stderr


@pytest.mark.integration
async def test_a_flipped_byte_fails(bucket: Bucket, tmp_path: Path) -> None:
    data = good_snapshot()
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0x40  # inside state.bin
    bucket.store(bytes(tampered), manifest_for(data))
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, KEY)
    assert run.report.error is not None
    assert run.report.error.error_class == "verification"
    # the report still says what the manifest claimed
    assert run.report.sha256 == hashlib.sha256(data).hexdigest()
    assert run.report.raft_index == INDEX


@pytest.mark.integration
async def test_a_truncated_object_fails(bucket: Bucket, tmp_path: Path) -> None:
    data = good_snapshot()
    bucket.store(data[:-1000], manifest_for(data))
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, f"has {len(data) - 1000} bytes but its manifest says {len(data)}")


@pytest.mark.integration
async def test_a_truncated_object_with_a_matching_manifest_fails(
    bucket: Bucket, tmp_path: Path
) -> None:
    """Size and sha256 agree with the manifest: the archive check still sees the cut."""
    data = good_snapshot()[: len(STATE) // 2]
    bucket.store(data, manifest_for(data))
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, "is not a valid snapshot")


@pytest.mark.integration
async def test_a_manifest_rewritten_to_match_a_tampered_object_fails(
    bucket: Bucket, tmp_path: Path
) -> None:
    """A well-formed archive whose state.bin was changed, with a manifest made to match it:
    only the archive's own SHA256SUMS can tell, and it does."""
    state = bytearray(STATE)
    state[1234] ^= 0x01
    meta = snapshots.meta_json(index=INDEX, term=TERM, size=len(STATE))
    original_sums = snapshots.sums_for({"meta.json": meta, "state.bin": STATE})
    tampered = snapshots.build(state=bytes(state), meta=meta, sums=original_sums)
    assert len(tampered) == len(good_snapshot())
    bucket.store(tampered, manifest_for(tampered))
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, "state.bin does not match SHA256SUMS")


@pytest.mark.integration
async def test_a_missing_manifest_fails(bucket: Bucket, tmp_path: Path) -> None:
    bucket.store(good_snapshot(), None)
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, "has no manifest")
    assert run.report.manifest_key is None
    assert run.report.sha256 is None


@pytest.mark.integration
async def test_a_manifest_of_another_key_fails(bucket: Bucket, tmp_path: Path) -> None:
    data = good_snapshot()
    bucket.store(data, replace(manifest_for(data), key=KEY.replace("0123abcd", "ffffffff")))
    run = await bucket.verify(tmp_path)
    failed(run, VERIFICATION, "describes")


@pytest.mark.integration
async def test_a_missing_snapshot_is_a_storage_error(bucket: Bucket, tmp_path: Path) -> None:
    run = await bucket.verify(tmp_path, key=KEY.replace("0123abcd", "00000000"))
    failed(run, STORAGE, "does not exist")
    assert run.report.error is not None
    assert run.report.error.error_class == "storage"


@pytest.mark.integration
async def test_a_key_of_another_prefix_is_verified(bucket: Bucket, tmp_path: Path) -> None:
    """verify checks content, not ownership: the controller decides which keys it may use."""
    key = "elsewhere/other-ns/other/20250101T000000Z-deadbeef.snap"
    data = good_snapshot()
    bucket.put(key, data)
    bucket.put(manifest_key(key), manifest_for(data, key=key).to_json().encode())
    run = await bucket.verify(tmp_path, key=key)
    assert run.code == 0, run.report.error


# -- configuration ------------------------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    return {
        "OBB_CLUSTER_NAMESPACE": "team-a",
        "OBB_CLUSTER_NAME": "bao",
        "OBB_PROVIDER": "s3",
        "OBB_BUCKET": "backups",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "very-secret-access-key",
        **extra,
    }


def test_verify_needs_no_openbao_and_round_trips() -> None:
    cfg = load_config(mode="verify", environ=env(OBB_VERIFY_KEY=KEY))
    assert cfg.mode == "verify"
    assert cfg.openbao is None
    assert cfg.restore is None
    assert cfg.verify is not None
    assert cfg.verify.key == KEY
    ours = cfg.to_env()
    assert ours["OBB_VERIFY_KEY"] == KEY
    assert not any(k.startswith("OBB_OPENBAO") or k.startswith("OBB_AUTH") for k in ours)
    standard = {k: v for k, v in env().items() if not k.startswith("OBB_")}
    again: Config = load_config(mode="verify", environ={**ours, **standard})
    assert again == cfg


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (None, "OBB_VERIFY_KEY: is required"),
        ("a/b/c.tar.gz", "not a snapshot key"),
        ("a/../b.snap", "unsafe segment"),
        ("a//b.snap", "unsafe segment"),
        ("a/" + "x" * 1100 + ".snap", "key longer than 1024 characters"),
    ],
)
async def test_a_bad_key_is_a_configuration_error(
    key: str | None, fragment: str, tmp_path: Path
) -> None:
    extra = {"OBB_VERIFY_KEY": key} if key is not None else {}
    run = await run_executor("verify", env(**extra), tmp=tmp_path)
    assert run.code == CONFIGURATION
    assert run.report.mode == "verify"
    assert run.report.error is not None
    assert run.report.error.error_class == "configuration"
    assert fragment in run.report.error.message
