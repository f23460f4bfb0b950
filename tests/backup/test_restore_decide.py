"""decide.restore: the snapshot a restore asks for, and whether OpenBao came back."""

from __future__ import annotations

from typing import Any

import pytest

from controller.backup.decide.preflight import HealthProbe
from controller.backup.decide.restore import (
    Applied,
    Refusal,
    Source,
    assess_applied,
    key_problem,
    parse_restore,
    resolve_source,
)
from controller.backup.decide.spec import SpecError, Target

TARGET = Target(provider="s3", bucket="b", path_prefix="prod")
OTHER = Target(provider="gcs", bucket="old", path_prefix="legacy")
KEY = "prod/ns/vault/20261130T120000Z-0123abcd.snap"


def restore(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "r1", "namespace": "ns", "uid": "u"},
        "spec": {"cluster": "vault", **spec},
    }


def record(phase: str = "Succeeded", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "vault-1",
            "namespace": "ns",
            "creationTimestamp": "2026-11-30T12:00:00Z",
        },
        "status": {"phase": phase, **status},
    }


def test_defaults() -> None:
    got = parse_restore(restore(backupName="vault-1"))
    assert (got.force, got.allow_foreign_key, got.safety_snapshot) == (False, False, True)
    assert got.verify_timeout_seconds == 600
    assert got.auth is None and got.target is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, "exactly one of backupName or key"),
        ({"backupName": "a", "key": KEY}, "exactly one of backupName or key"),
        ({"key": KEY, "auth": {"jwt": {"mount": "jwt"}}}, "spec.auth.jwt.role"),
        ({"key": KEY, "target": {"provider": "ftp"}}, "spec.target"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment.replace(".", r"\.")):
        parse_restore(restore(**spec))


def test_a_record_source_uses_the_target_it_was_written_to() -> None:
    rec = record(
        key="legacy/ns/vault/x.snap",
        target={"provider": "gcs", "bucket": "old", "pathPrefix": "legacy"},
    )
    rec["status"]["key"] = "legacy/ns/vault/20261130T120000Z-0123abcd.snap"
    got = resolve_source(
        restore=parse_restore(restore(backupName="vault-1")), cluster_target=TARGET, record=rec
    )
    assert got == Source(key=rec["status"]["key"], target=OTHER, backup_name="vault-1")


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (None, "BackupNotFound"),
        (record("Failed"), "BackupNotSucceeded"),
        (record("Running"), "BackupNotSucceeded"),
        (record("Succeeded"), "BackupNotSucceeded"),
    ],
)
def test_records_that_cannot_be_restored(rec: dict[str, Any] | None, reason: str) -> None:
    got = resolve_source(
        restore=parse_restore(restore(backupName="vault-1")), cluster_target=TARGET, record=rec
    )
    assert isinstance(got, Refusal) and got.reason == reason


@pytest.mark.parametrize(
    ("key", "force", "foreign", "reason"),
    [
        (KEY, False, False, None),
        ("prod/ns/other/20261130T120000Z-0123abcd.snap", False, False, "KeyOutsidePrefix"),
        ("prod/ns/other/20261130T120000Z-0123abcd.snap", True, False, "KeyOutsidePrefix"),
        ("prod/ns/other/20261130T120000Z-0123abcd.snap", True, True, None),
        ("prod/ns/vault/../other/x.snap", True, True, "InvalidKey"),
        ("../../other/x.snap", False, False, "InvalidKey"),
        ("/prod/ns/vault/x.snap", False, False, "InvalidKey"),
        ("prod//ns/vault/x.snap", False, False, "InvalidKey"),
        ("prod/ns/vault/x.tar", False, False, "InvalidKey"),
        ("prod/ns/vault-2/x.snap", False, False, "KeyOutsidePrefix"),
    ],
)
def test_keys_stay_inside_the_cluster_unless_named_foreign(
    key: str, force: bool, foreign: bool, reason: str | None
) -> None:
    spec = parse_restore(restore(key=key, force=force, allowForeignKey=foreign))
    got = resolve_source(restore=spec, cluster_target=TARGET, record=None)
    if reason is None:
        assert got == Source(key=key, target=TARGET)
    else:
        assert isinstance(got, Refusal) and got.reason == reason, got


def test_key_problem_accepts_a_plain_key() -> None:
    assert key_problem(KEY) == ""


UP = HealthProbe(reachable=True, initialized=True, sealed=False, raft_applied_index=120)


@pytest.mark.parametrize(
    ("probe", "force", "index", "state"),
    [
        (UP, False, 100, Applied.ACTIVE),
        (UP, False, None, Applied.ACTIVE),
        (
            HealthProbe(reachable=True, initialized=True, sealed=False, raft_applied_index=90),
            False,
            100,
            Applied.WAITING,
        ),
        (HealthProbe(reachable=False, error="refused"), False, 100, Applied.WAITING),
        (HealthProbe(reachable=True, initialized=True, sealed=True), False, 100, Applied.WAITING),
        (HealthProbe(reachable=True, initialized=True, sealed=True), True, 100, Applied.SEALED),
        (UP, True, 100, Applied.ACTIVE),
        (
            HealthProbe(reachable=True, initialized=True, sealed=False, standby=True),
            False,
            None,
            Applied.WAITING,
        ),
        (HealthProbe(reachable=True, initialized=False), False, None, Applied.WAITING),
    ],
)
def test_assess_applied(probe: HealthProbe, force: bool, index: int | None, state: Applied) -> None:
    got = assess_applied(probe=probe, force=force, raft_index=index)
    assert got.state is state
    assert got.message


def test_a_missing_unseal_keys_secret_is_a_precise_drill_failure() -> None:
    from controller.backup.decide.drill import Result, outcome_of
    from controller.backup.decide.jobresult import JobPhase, JobResult

    got = outcome_of(
        JobResult(
            JobPhase.FAILED,
            reason="configuration",
            message="OBB_UNSEAL_KEYS_FILE: cannot read /var/run/secrets/openbao-unseal-keys/keys",
        )
    )
    assert got is not None and got.result is Result.FAILED
    assert got.reason == "UnsealKeysMissing"
    assert "unseal-keys Secret is missing" in got.message


def test_the_drill_mounts_the_unseal_keys_optionally() -> None:
    from controller.backup.decide.drilljob import build_drill_job
    from controller.backup.decide.spec import parse_cluster

    cluster = parse_cluster(
        {
            "metadata": {"name": "vault", "namespace": "ns", "uid": "u"},
            "spec": {
                "backup": {
                    "target": {"provider": "s3", "bucket": "b"},
                    "auth": {"jwt": {"role": "backup"}},
                    "verify": {"schedule": "@daily", "unsealKeysSecretRef": {"name": "keys"}},
                }
            },
        }
    )
    record = {
        "metadata": {"name": "vault-1", "namespace": "ns", "uid": "r"},
        "spec": {"cluster": "vault"},
        "status": {"key": "ns/vault/20261130T120000Z-0123abcd.snap"},
    }
    job = build_drill_job(
        cluster=cluster,
        record=record,
        job_name="vault-1-drill",
        image="img",
        ttl_seconds_after_finished=60,
    )
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["unseal-keys"]["secret"]["optional"] is True


def _drill_cluster(**verify: Any) -> Any:
    from controller.backup.decide.spec import parse_cluster

    return parse_cluster(
        {
            "metadata": {"name": "vault", "namespace": "ns", "uid": "u"},
            "spec": {
                "backup": {
                    "target": {"provider": "s3", "bucket": "b"},
                    "auth": {"jwt": {"role": "backup"}},
                    "verify": {"schedule": "@daily", **verify},
                }
            },
        }
    )


def test_an_auto_unseal_drill_mounts_the_seal_stanza_into_the_scratch_server_only() -> None:
    from controller.backup.decide.drilljob import build_drill_job

    cluster = _drill_cluster(sealConfigRef={"kind": "ConfigMap", "name": "seal"})
    record = {
        "metadata": {"name": "vault-1", "namespace": "ns", "uid": "r"},
        "spec": {"cluster": "vault"},
        "status": {"key": "ns/vault/20261130T120000Z-0123abcd.snap"},
    }
    job = build_drill_job(
        cluster=cluster,
        record=record,
        job_name="vault-1-drill",
        image="img",
        ttl_seconds_after_finished=60,
    )
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["seal-config"]["configMap"]["name"] == "seal"
    assert volumes["seal-config"]["configMap"]["items"] == [{"key": "seal.hcl", "path": "seal.hcl"}]
    containers = {c["name"]: c for c in pod["containers"]}
    server_env = {e["name"]: e["value"] for e in containers["openbao"]["env"]}
    assert server_env["DRILL_SEAL_CONFIG"].endswith("/seal.hcl")
    executor_env = {e["name"]: e["value"] for e in containers["executor"]["env"]}
    assert executor_env["OBB_DRILL_AUTO_UNSEAL"] == "true"
    assert all(m["name"] != "seal-config" for m in containers["executor"]["volumeMounts"])
    assert "unseal-keys" not in volumes


def test_shamir_keys_and_a_seal_stanza_are_exclusive() -> None:
    with pytest.raises(SpecError, match="not both"):
        _drill_cluster(unsealKeysSecretRef={"name": "k"}, sealConfigRef={"name": "s"})


# -- storage endpoints: never link-local or metadata (issue 11) --------------------------------

METADATA = "http://169.254.169.254/"


def test_a_link_local_target_endpoint_is_refused_by_the_parser() -> None:
    target = {"provider": "s3", "bucket": "b", "endpoint": METADATA}
    with pytest.raises(SpecError, match=r"spec\.target\.endpoint: .*link-local"):
        parse_restore(restore(key=KEY, target=target))
    allowed = parse_restore(restore(key=KEY, target=target, allowLinkLocalAddresses=True))
    assert allowed.allow_link_local and allowed.target is not None


@pytest.mark.parametrize(
    ("restore_allows", "cluster_allows", "refused"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_a_recorded_link_local_target_needs_an_opt_out(
    restore_allows: bool, cluster_allows: bool, refused: bool
) -> None:
    """A record's status.target (or the cluster's) pointing at a metadata address is refused
    unless the restore or the cluster opts out: status can be edited with status rights."""
    recorded = {"provider": "s3", "bucket": "b", "endpoint": METADATA, "pathPrefix": "prod"}
    rec = record(key=KEY, target=recorded)
    spec = parse_restore(restore(backupName="vault-1", allowLinkLocalAddresses=restore_allows))
    got = resolve_source(
        restore=spec, cluster_target=TARGET, record=rec, cluster_allows_link_local=cluster_allows
    )
    if refused:
        assert isinstance(got, Refusal) and got.reason == "AddressNotAllowed", got
        assert "169.254.169.254" in got.message
    else:
        assert isinstance(got, Source) and got.target.endpoint == METADATA


def test_a_cluster_target_at_a_metadata_name_is_refused_without_the_opt_out() -> None:
    target = Target(provider="s3", bucket="b", endpoint="http://metadata.google.internal")
    got = resolve_source(
        restore=parse_restore(restore(key=KEY)), cluster_target=target, record=None
    )
    assert isinstance(got, Refusal) and got.reason == "AddressNotAllowed"
