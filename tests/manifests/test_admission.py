"""Admission closes inputs that can never work (issue 8, item 4), on the real API server.

Each input below used to be accepted and then stalled the controller: the Job built from it
is refused by the API server on every retry (or, for startingDeadlineSeconds, the controller's
date arithmetic overflowed). Each is now a 422 whose message names the field and says what is
allowed; controller.backup.decide.validation mirrors the same rules (tests/backup/
test_validation.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

pytestmark = pytest.mark.integration

GROUP = "backup.openbao.org"
VERSION = "v1alpha1"
EX = "spec.backup.executor"


def cluster_body(name: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {
            "backup": {
                "schedule": "@daily",
                "startingDeadlineSeconds": 600,
                "target": {"provider": "s3", "bucket": "backups"},
                "auth": {"jwt": {"role": "backup"}},
                "executor": {},
            }
        },
    }


def with_executor(**fields: Any) -> dict[str, Any]:
    body = cluster_body()
    body["spec"]["backup"]["executor"].update(copy.deepcopy(fields))
    return body


def with_deadline(seconds: int) -> dict[str, Any]:
    body = cluster_body()
    body["spec"]["backup"]["startingDeadlineSeconds"] = seconds
    return body


def record_body(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"cluster": "prod"}
    if kind == "OpenBaoRestore":
        spec["backupName"] = "prod-202601010000"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def api(kube_client: k8s.ApiClient, crds: list[str]) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_client)


async def create(
    api: k8s.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = await api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, field_validation="Strict"
    )
    return result


async def refused(
    api: k8s.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any]
) -> str:
    """The message of the 422 that creating ``body`` answers."""
    with pytest.raises(ApiException) as caught:
        await create(api, namespace, plural, body)
    assert caught.value.status == 422, caught.value.body
    message: str = json.loads(caught.value.body or b"{}")["message"]
    return message


LONG = "b" * 64
REFUSED: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "backup name of 64 characters",
        "openbaobackups",
        record_body("OpenBaoBackup", LONG),
        ["metadata.name must be at most 63 characters"],
    ),
    (
        "restore name of 64 characters",
        "openbaorestores",
        record_body("OpenBaoRestore", LONG),
        ["metadata.name must be at most 63 characters"],
    ),
    (
        "pod label key with a space",
        "openbaoclusters",
        with_executor(podLabels={"team name": "db"}),
        [f"{EX}.podLabels", "executor.podLabels keys must be qualified names"],
    ),
    (
        "pod label key with two slashes",
        "openbaoclusters",
        with_executor(podLabels={"a/b/c": "db"}),
        [f"{EX}.podLabels", "executor.podLabels keys must be qualified names"],
    ),
    (
        "pod label value with a slash",
        "openbaoclusters",
        with_executor(podLabels={"team": "db/ops"}),
        [f"{EX}.podLabels[team]", "executor.podLabels values must be label values"],
    ),
    (
        "pod label value ending in a dash",
        "openbaoclusters",
        with_executor(podLabels={"team": "db-"}),
        [f"{EX}.podLabels[team]", "executor.podLabels values must be label values"],
    ),
    (
        "pod annotation key with a space",
        "openbaoclusters",
        with_executor(podAnnotations={"my note": "x"}),
        [f"{EX}.podAnnotations", "executor.podAnnotations keys must be qualified names"],
    ),
    (
        "node selector value with a slash",
        "openbaoclusters",
        with_executor(nodeSelector={"kubernetes.io/os": "linux/amd64"}),
        [f"{EX}.nodeSelector[kubernetes.io/os]", "executor.nodeSelector values must be label"],
    ),
    (
        "node selector key with a space",
        "openbaoclusters",
        with_executor(nodeSelector={"disk type": "ssd"}),
        [f"{EX}.nodeSelector", "executor.nodeSelector keys must be qualified names"],
    ),
    (
        "toleration Exists with a value",
        "openbaoclusters",
        with_executor(tolerations=[{"key": "dedicated", "operator": "Exists", "value": "db"}]),
        [f"{EX}.tolerations[0].value", "value must be empty when operator is Exists"],
    ),
    (
        "toleration with an empty key and Equal",
        "openbaoclusters",
        with_executor(tolerations=[{"operator": "Equal", "value": "db"}]),
        [f"{EX}.tolerations[0].operator", "operator must be Exists when key is empty"],
    ),
    (
        "toleration with an empty key and no operator",
        "openbaoclusters",
        with_executor(tolerations=[{"effect": "NoSchedule"}]),
        [f"{EX}.tolerations[0].operator", "operator must be Exists when key is empty"],
    ),
    (
        "toleration seconds without NoExecute",
        "openbaoclusters",
        with_executor(
            tolerations=[
                {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}
            ]
        ),
        [f"{EX}.tolerations[0].effect", "tolerationSeconds is only allowed with effect NoExecute"],
    ),
    (
        "toleration key with a space",
        "openbaoclusters",
        with_executor(tolerations=[{"key": "a b", "operator": "Exists"}]),
        [f"{EX}.tolerations[0].key", "executor.tolerations[].key must be empty or a qualified"],
    ),
    (
        "toleration value with a space",
        "openbaoclusters",
        with_executor(tolerations=[{"key": "k", "operator": "Equal", "value": "a b"}]),
        [f"{EX}.tolerations[0].value", "executor.tolerations[].value must be a label value"],
    ),
    (
        "toleration operator Lt",
        "openbaoclusters",
        with_executor(tolerations=[{"key": "k", "operator": "Lt", "value": "3"}]),
        [f"{EX}.tolerations[0].operator", 'Unsupported value: "Lt"'],
    ),
    (
        "toleration effect NoAdmit",
        "openbaoclusters",
        with_executor(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoAdmit"}]),
        [f"{EX}.tolerations[0].effect", 'Unsupported value: "NoAdmit"'],
    ),
    (
        "starting deadline of 10^14 seconds",
        "openbaoclusters",
        with_deadline(10**14),
        ["spec.backup.startingDeadlineSeconds", "must be at most 31536000"],
    ),
    (
        "starting deadline of 2^63-1 seconds",
        "openbaoclusters",
        with_deadline(2**63 - 1),
        ["spec.backup.startingDeadlineSeconds", "must be at most 31536000"],
    ),
    (
        "quantity with a fractional exponent",
        "openbaoclusters",
        with_executor(resources={"limits": {"memory": "1e1.5"}}),
        [f"{EX}.resources.limits[memory]", "values must be non-negative Kubernetes quantities"],
    ),
    (
        "negative quantity",
        "openbaoclusters",
        with_executor(resources={"requests": {"cpu": "-100m"}}),
        [f"{EX}.resources.requests[cpu]", "values must be non-negative Kubernetes quantities"],
    ),
    (
        "negative integer quantity",
        "openbaoclusters",
        with_executor(resources={"limits": {"cpu": -1}}),
        [f"{EX}.resources.limits[cpu]", "values must be non-negative Kubernetes quantities"],
    ),
    (
        "quantity with a capital K",
        "openbaoclusters",
        with_executor(resources={"limits": {"memory": "512K"}}),
        [f"{EX}.resources.limits.memory"],
    ),
    (
        "request above its limit",
        "openbaoclusters",
        with_executor(resources={"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}}),
        [f"{EX}.resources.requests", "executor.resources.requests must not exceed"],
    ),
    (
        "unknown resource name",
        "openbaoclusters",
        with_executor(resources={"limits": {"gpu": 1}}),
        [f"{EX}.resources.limits", "executor.resources.limits names must be cpu, memory"],
    ),
]


@pytest.mark.parametrize(
    ("plural", "body", "fragments"), [pytest.param(p, b, f, id=i) for i, p, b, f in REFUSED]
)
async def test_refused(
    api: k8s.CustomObjectsApi,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    fragments: list[str],
) -> None:
    message = await refused(api, namespace, plural, body)
    for fragment in fragments:
        assert fragment in message, message


async def test_a_full_valid_object_is_accepted(api: k8s.CustomObjectsApi, namespace: str) -> None:
    executor = {
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "podLabels": {"app.kubernetes.io/part-of": "openbao", "team": "db_ops.1", "empty": ""},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "nodeSelector": {"kubernetes.io/os": "linux", "node.example.com/pool": "backup"},
        "tolerations": [
            {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "pool", "operator": "Equal", "value": "backup"},
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {"operator": "Exists"},
        ],
    }
    body = with_executor(**executor)
    body["spec"]["backup"]["startingDeadlineSeconds"] = 31_536_000
    created = await create(api, namespace, "openbaoclusters", body)
    assert created["spec"]["backup"]["executor"] == executor
    assert created["spec"]["backup"]["startingDeadlineSeconds"] == 31_536_000

    name = "prod-" + "m" * 58
    assert len(name) == 63
    record = await create(api, namespace, "openbaobackups", record_body("OpenBaoBackup", name))
    assert record["metadata"]["name"] == name
    restore = await create(api, namespace, "openbaorestores", record_body("OpenBaoRestore", name))
    assert restore["metadata"]["name"] == name


async def patch_status(
    api: k8s.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any]:
    method: Any = api.patch_namespaced_custom_object_status  # the stub lacks _content_type
    result: dict[str, Any] = await method(
        GROUP,
        VERSION,
        namespace,
        "openbaobackups",
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )
    return result


async def test_backup_status_takes_the_coalesced_triggers(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    await create(api, namespace, "openbaobackups", record_body("OpenBaoBackup", "b1"))
    status = {"coalescedTriggers": ["1767225600", "1767225601"], "coalescedCount": 2}
    patched = await patch_status(api, namespace, "b1", status)
    assert patched["status"] == status
    for bad, field in (
        ({"coalescedCount": -1}, "status.coalescedCount"),
        ({"coalescedTriggers": ["x"] * 33}, "status.coalescedTriggers"),
        ({"coalescedTriggers": ["x" * 1025]}, "status.coalescedTriggers[0]"),
    ):
        with pytest.raises(ApiException) as caught:
            await patch_status(api, namespace, "b1", bad)
        assert caught.value.status == 422
        assert field in json.loads(caught.value.body or b"{}")["message"]


async def test_drills_take_shamir_keys_or_a_seal_stanza_not_both(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    both = cluster_body()
    both["spec"]["backup"]["verify"] = {
        "schedule": "@daily",
        "unsealKeysSecretRef": {"name": "keys"},
        "sealConfigRef": {"name": "seal"},
    }
    assert "not both" in await refused(api, namespace, "openbaoclusters", both)
    one = cluster_body("auto")
    one["spec"]["backup"]["verify"] = {
        "schedule": "@daily",
        "sealConfigRef": {"kind": "ConfigMap", "name": "seal"},
    }
    one["spec"]["backup"]["marker"] = {"path": "secret/data/openbao-backup/marker"}
    created = await create(api, namespace, "openbaoclusters", one)
    verify = created["spec"]["backup"]["verify"]
    assert verify["sealConfigRef"] == {"kind": "ConfigMap", "name": "seal", "key": "seal.hcl"}
    assert verify["port"] == 18200
    assert created["spec"]["backup"]["marker"]["kvVersion"] == 2
