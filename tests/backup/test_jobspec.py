"""The Job builder and the cluster-spec parser (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.backup.decide import names
from controller.backup.decide.jobspec import RESULT_FINALIZER, build_job
from controller.backup.decide.spec import SpecError, parse_cluster, parse_duration
from executor import contract

RECORD = {
    "metadata": {"name": "bao-202611220300", "namespace": "team-a", "uid": "u-1"},
    "spec": {"cluster": "bao", "trigger": "scheduled"},
}


def cluster(**backup: Any) -> dict[str, Any]:
    spec_backup: dict[str, Any] = {
        "target": {
            "provider": "s3",
            "bucket": "b",
            "pathPrefix": "/p/",
            "credentialsSecretRef": {"name": "creds"},
        },
        "auth": {"jwt": {"role": "backup", "mount": "jwt", "audience": "openbao"}},
    }
    spec_backup.update(backup)
    return {
        "metadata": {"name": "bao", "namespace": "team-a", "uid": "c-1", "generation": 3},
        "spec": {"backup": spec_backup},
    }


def job_for(obj: dict[str, Any], purpose: str = "backup", **kw: Any) -> dict[str, Any]:
    return build_job(
        cluster=parse_cluster(obj),
        record=RECORD,
        purpose=purpose,  # type: ignore[arg-type]
        job_name=names.job_name(record="bao-202611220300", purpose=names.JobPurpose.BACKUP),
        image="img:1",
        ttl_seconds_after_finished=600,
        **kw,
    )


def env_of(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_hardened_pod_and_job_shape() -> None:
    job = job_for(cluster())
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert len(job["metadata"]["name"]) <= 63
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == pod["activeDeadlineSeconds"] == 3600
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert RESULT_FINALIZER in job["metadata"]["finalizers"]
    assert RESULT_FINALIZER in spec["template"]["metadata"]["finalizers"]
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "OpenBaoBackup",
        "bao-202611220300",
        "u-1",
    )
    assert container["command"] == ["python", "-m", "executor", "backup"]


def test_env_uses_the_contract_and_never_secret_values() -> None:
    job = job_for(cluster())
    env = env_of(job)
    known = {v.name for v in contract.TABLE}
    assert set(env) <= known
    assert env[contract.PATH_PREFIX.name] == "p"
    assert env[contract.AUTH_METHOD.name] == "jwt"
    assert env[contract.CLUSTER_UID.name] == "c-1"
    assert int(env[contract.TIMEOUT.name]) < 3600
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    token = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "openbao-token"]
    source = token[0]["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "openbao"
    assert env[contract.AUTH_TOKEN_FILE.name].startswith("/var/run/secrets/openbao-backup/")


def test_static_token_and_gcs_credentials_are_mounted_files() -> None:
    obj = cluster(
        target={"provider": "gcs", "bucket": "b", "credentialsSecretRef": {"name": "gcs"}},
        auth={"tokenSecretRef": {"name": "bao-token"}},
    )
    job = job_for(obj)
    env = env_of(job)
    assert env[contract.OPENBAO_TOKEN_FILE.name].endswith("/token")
    assert env[contract.GOOGLE_APPLICATION_CREDENTIALS.name].endswith("/credentials.json")
    assert "envFrom" not in job["spec"]["template"]["spec"]["containers"][0]


def test_delete_jobs_carry_keys_and_no_openbao_settings() -> None:
    job = job_for(cluster(), purpose="delete", delete_keys=["p/team-a/bao/x.snap"])
    env = env_of(job)
    assert env[contract.DELETE_KEYS.name] == '["p/team-a/bao/x.snap"]'
    assert contract.OPENBAO_ADDR.name not in env
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "delete"


def test_default_address_and_bad_specs() -> None:
    parsed = parse_cluster(cluster())
    assert parsed.address == "https://bao.team-a.svc:8200"
    with pytest.raises(SpecError) as err:
        parse_cluster(cluster(target={"provider": "ftp"}, auth={}))
    assert "unknown provider" in str(err.value)
    assert "exactly one of jwt" in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2_592_000), ("1d12h", 129_600), ("90m", 5_400), ("45s", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1w", "h", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def _has_frozen(value: Any) -> bool:
    from controller.cache.store import FrozenDict

    if isinstance(value, FrozenDict | tuple):
        return True
    if isinstance(value, dict):
        return any(_has_frozen(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_frozen(v) for v in value)
    return False


def test_a_spec_from_the_frozen_cache_builds_plain_json() -> None:
    """Regression (issue 8): any executor.resources made every launch raise AttributeError
    ('FrozenDict' object has no attribute 'openapi_types') in the client's serialiser."""
    import json

    from controller.cache.store import freeze

    obj = freeze(
        cluster(
            executor={
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "podLabels": {"team": "a"},
                "podAnnotations": {"x.io/y": "z"},
            }
        )
    )
    job = job_for(obj)
    assert not _has_frozen(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}}
    assert pod["tolerations"] == [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    json.dumps(job)


def test_a_long_record_name_becomes_a_valid_label_value() -> None:
    """Regression (issue 8): a 64..253-character record name was copied into a Job label."""
    long_name = "x" * 40 + "." + "y" * 200
    record = {**RECORD, "metadata": {**RECORD["metadata"], "name": long_name}}
    job = build_job(
        cluster=parse_cluster(cluster()),
        record=record,
        purpose="backup",
        job_name=names.job_name(record=long_name, purpose=names.JobPurpose.BACKUP),
        image="img:1",
        ttl_seconds_after_finished=600,
    )
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        value = labels["backup.openbao.org/backup"]
        assert names.is_dns_label(value), value
    assert names.is_dns_label(job["metadata"]["name"])


@pytest.mark.parametrize(
    ("executor", "field"),
    [
        ({"podLabels": {"bad key!": "x"}}, "spec.backup.executor.podLabels"),
        ({"podLabels": {"ok": "not a value!"}}, "spec.backup.executor.podLabels"),
        ({"nodeSelector": {"disk": "-ssd"}}, "spec.backup.executor.nodeSelector"),
        (
            {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
            "spec.backup.executor.tolerations",
        ),
        ({"resources": {"requests": {"cpu": "lots"}}}, "spec.backup.executor.resources"),
    ],
)
def test_specs_admission_would_refuse_are_config_errors(
    executor: dict[str, Any], field: str
) -> None:
    """Objects written before the schema refused them become ConfigValid=False naming the
    field, never a Job the API server rejects."""
    with pytest.raises(SpecError) as err:
        parse_cluster(cluster(executor=executor))
    assert field in str(err.value)
