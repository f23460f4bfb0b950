"""OpenBaoRestore admission (issue 9: the contract's API), on the real API server.

One test per rule: an input that can never work is a 422 whose message names the problem.
Two full valid objects (a catalog-less forced restore of a foreign key with its own target and
auth, and a backupName restore with auth) are accepted with the contract's defaults; the
status takes every field and phase of the contract; kubectl shows the contract's columns.
The static checks at the end keep target and auth the same schema as the cluster's."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.crds import load_crds
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

GROUP = "backup.openbao.org"
VERSION = "v1alpha1"
PLURAL = "openbaorestores"
MERGE = "application/merge-patch+json"
KEY = "openbao/prod/team-a/prod/20260601T023001Z-0123abcd.snap"
FOREIGN_KEY = "other-prefix/team-b/vault/20260601T023001Z-89abcdef.snap"
PHASES = [
    "Pending",
    "Validating",
    "SafetySnapshot",
    "Restoring",
    "Verifying",
    "Succeeded",
    "Failed",
]


def restore_body(name: str = "restore-1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": name},
        "spec": {"cluster": "prod", **copy.deepcopy(spec)},
    }


@pytest.fixture
def api(kube_client: k8s.ApiClient, crds: list[str]) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_client)


async def create(api: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return result


async def patch(
    api: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    body: dict[str, Any],
    *,
    status: bool = False,
) -> dict[str, Any]:
    method: Any = (  # the stub lacks _content_type
        api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
    )
    result: dict[str, Any] = await method(
        GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE
    )
    return result


def message_of(caught: pytest.ExceptionInfo[ApiException], status: int = 422) -> str:
    assert caught.value.status == status, caught.value.body
    message: str = json.loads(caught.value.body or b"{}")["message"]
    return message


async def refused(
    api: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any], status: int = 422
) -> str:
    """The message of the 422 (400: strict decoding of an unknown field) creating ``body``
    answers."""
    with pytest.raises(ApiException) as caught:
        await create(api, namespace, body)
    return message_of(caught, status)


S3_TARGET = {
    "provider": "s3",
    "bucket": "old-backups",
    "region": "eu-central-1",
    "pathPrefix": "other-prefix",
    "credentialsSecretRef": {"name": "s3-credentials"},
}
ONE_OF = "set exactly one of backupName or key"
REFUSED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("neither backupName nor key", restore_body(), ["spec", ONE_OF]),
    ("both backupName and key", restore_body(backupName="b1", key=KEY), ["spec", ONE_OF]),
    (
        "target with backupName",
        restore_body(backupName="b1", target=S3_TARGET),
        ["spec", "target is only valid with key"],
    ),
    (
        "allowForeignKey without force",
        restore_body(key=FOREIGN_KEY, allowForeignKey=True),
        ["spec", "allowForeignKey requires force"],
    ),
    (
        "allowForeignKey with force false",
        restore_body(key=FOREIGN_KEY, allowForeignKey=True, force=False),
        ["spec", "allowForeignKey requires force"],
    ),
    (
        "key not ending in .snap",
        restore_body(key="openbao/prod/team-a/prod/x.tar.gz"),
        ["spec.key", "key must end in .snap"],
    ),
    (
        "key of a manifest",
        restore_body(key=KEY + ".manifest.json"),
        ["spec.key", "key must end in .snap"],
    ),
    (
        "key with a leading slash",
        restore_body(key="/" + KEY),
        ["spec.key", "must not start with '/'"],
    ),
    (
        "key with a '..' segment",
        restore_body(key="openbao/prod/../../etc/x.snap"),
        ["spec.key", "must not contain a '..' path segment"],
    ),
    (
        "key starting with a '..' segment",
        restore_body(key="../x.snap"),
        ["spec.key", "must not contain a '..' path segment"],
    ),
    (
        "key with '//'",
        restore_body(key="openbao//prod/x.snap"),
        ["spec.key", "must not contain '//'"],
    ),
    (
        "key with a backslash",
        restore_body(key="openbao\\prod\\x.snap"),
        ["spec.key", "must not contain a backslash"],
    ),
    (
        "key longer than 1024 characters",
        restore_body(key="k/" + "a" * 1018 + ".snap"),
        ["spec.key", "may not be more than 1024"],
    ),
    (
        "verifyTimeoutSeconds below 30",
        restore_body(backupName="b1", verifyTimeoutSeconds=29),
        ["spec.verifyTimeoutSeconds", "greater than or equal to 30"],
    ),
    (
        "verifyTimeoutSeconds above 3600",
        restore_body(backupName="b1", verifyTimeoutSeconds=3601),
        ["spec.verifyTimeoutSeconds", "less than or equal to 3600"],
    ),
    (
        "name of 64 characters",
        restore_body("r" * 64, backupName="b1"),
        ["metadata.name must be at most 63 characters"],
    ),
    (
        "target with the cluster's target rules (azure without container)",
        restore_body(key=KEY, target={"provider": "azure", "azure": {"storageAccount": "acct1"}}),
        ["spec.target", "provider azure requires azure.storageAccount and azure.container"],
    ),
    (
        "target with a cross-namespace secret",
        restore_body(
            key=KEY,
            target={**S3_TARGET, "credentialsSecretRef": {"name": "c", "namespace": "other"}},
        ),
        ['unknown field "spec.target.credentialsSecretRef.namespace"'],
    ),
    (
        "auth with two methods",
        restore_body(backupName="b1", auth={"jwt": {"role": "r"}, "tokenSecretRef": {"name": "t"}}),
        ["spec.auth", "auth must set exactly one of jwt, kubernetes or tokenSecretRef"],
    ),
    (
        "no cluster",
        {**restore_body(backupName="b1"), "spec": {"backupName": "b1"}},
        ["spec.cluster: Required value"],
    ),
    (
        "cross-namespace cluster",
        restore_body(backupName="b1", clusterNamespace="other"),
        ['unknown field "spec.clusterNamespace"'],
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("body", "fragments"), [pytest.param(b, f, id=i) for i, b, f in REFUSED])
async def test_refused(
    api: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any], fragments: list[str]
) -> None:
    unknown = any(f.startswith("unknown field") for f in fragments)
    message = await refused(api, namespace, body, 400 if unknown else 422)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.integration
async def test_spec_is_immutable(api: k8s.CustomObjectsApi, namespace: str) -> None:
    await create(api, namespace, restore_body(backupName="b1"))
    for change in (
        {"force": True},
        {"safetySnapshot": False},
        {"backupName": "b2"},
        {"verifyTimeoutSeconds": 900},
    ):
        with pytest.raises(ApiException) as caught:
            await patch(api, namespace, "restore-1", {"spec": change})
        assert "spec is immutable; create a new OpenBaoRestore instead" in message_of(caught)
    # metadata stays writable (labels, finalizers)
    await patch(api, namespace, "restore-1", {"metadata": {"labels": {"a": "b"}}})


@pytest.mark.integration
async def test_a_full_valid_object_with_target_key_force_and_foreign_key(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    spec: dict[str, Any] = {
        "key": FOREIGN_KEY,
        "target": {
            **S3_TARGET,
            "endpoint": "https://s3.example.com",
            "usePathStyle": True,
            "caSecretRef": {"name": "s3-ca"},
        },
        "force": True,
        "allowForeignKey": True,
        "safetySnapshot": False,
        "auth": {"tokenSecretRef": {"name": "restore-token"}},
        "verifyTimeoutSeconds": 3600,
    }
    name = "restore-" + "m" * 55
    assert len(name) == 63
    created = await create(api, namespace, restore_body(name, **spec))
    assert created["metadata"]["name"] == name
    expected: dict[str, Any] = copy.deepcopy({"cluster": "prod", **spec})
    expected["target"]["caSecretRef"]["key"] = "ca.crt"  # the cluster schema's defaults
    expected["auth"]["tokenSecretRef"]["key"] = "token"
    assert created["spec"] == expected

    # a 1024-character key and the shortest sensible values are accepted too
    long_key = "k/" + "a" * 1017 + ".snap"
    assert len(long_key) == 1024
    other = await create(
        api,
        namespace,
        restore_body(
            "restore-2",
            key=long_key,
            verifyTimeoutSeconds=30,
            target={"provider": "gcs", "bucket": "bkt", "gcs": {"emulator": True}},
        ),
    )
    assert other["spec"]["key"] == long_key
    # '..' inside a segment name is not a '..' segment
    await create(api, namespace, restore_body("restore-3", key="a/b..c/..d.snap"))


@pytest.mark.integration
async def test_a_full_valid_object_with_backup_name_and_auth(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    created = await create(
        api,
        namespace,
        restore_body(backupName="prod-202606010230", auth={"kubernetes": {"role": "restore"}}),
    )
    assert created["spec"] == {
        "cluster": "prod",
        "backupName": "prod-202606010230",
        "auth": {"kubernetes": {"role": "restore", "mount": "kubernetes", "audience": "openbao"}},
        "force": False,
        "allowForeignKey": False,
        "safetySnapshot": True,
        "verifyTimeoutSeconds": 600,
    }


@pytest.mark.integration
async def test_status_takes_every_field_of_the_contract(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    await create(api, namespace, restore_body(backupName="b1"))
    status = {
        "phase": "Succeeded",
        "key": KEY,
        "manifestKey": KEY + ".manifest.json",
        "sha256": "ab" * 32,
        "size": 123456,
        "raftIndex": 42,
        "raftTerm": 3,
        "openbaoVersion": "2.4.1",
        "safetySnapshot": "restore-1-pre-restore",
        "validationJob": "restore-1-verify",
        "restoreJob": "restore-1-restore",
        "startTime": "2026-06-01T03:00:00Z",
        "completionTime": "2026-06-01T03:01:30Z",
        "durationSeconds": 90.5,
        "failureReason": "",
        "message": "OpenBao is active and applied raft index 42",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": "Done",
                "message": "ok",
                "lastTransitionTime": "2026-06-01T03:01:30Z",
                "observedGeneration": 1,
            }
            for t in ("Validated", "SafetySnapshotTaken", "Restored", "Verified")
        ]
        + [
            {
                "type": "UnsealRequired",
                "status": "False",
                "reason": "NotForced",
                "message": "",
                "lastTransitionTime": "2026-06-01T03:01:30Z",
            }
        ],
    }
    await patch(api, namespace, "restore-1", {"status": status}, status=True)
    got = await api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "restore-1")
    assert got["status"] == status
    for phase in PHASES:
        patched = await patch(
            api, namespace, "restore-1", {"status": {"phase": phase}}, status=True
        )
        assert patched["status"]["phase"] == phase
    for bad, field in (
        ({"phase": "Running"}, "status.phase"),
        ({"sha256": "xyz"}, "status.sha256"),
        ({"raftIndex": -1}, "status.raftIndex"),
        ({"durationSeconds": -1}, "status.durationSeconds"),
    ):
        with pytest.raises(ApiException) as caught:
            await patch(api, namespace, "restore-1", {"status": bad}, status=True)
        assert field in message_of(caught)


@pytest.mark.integration
async def test_kubectl_shows_the_contract_columns(
    api: k8s.CustomObjectsApi, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    await create(api, namespace, restore_body("by-backup", backupName="prod-202606010230"))
    await create(api, namespace, restore_body("by-key", key=KEY))
    await patch(
        api,
        namespace,
        "by-backup",
        {
            "status": {
                "phase": "Restoring",
                "safetySnapshot": "by-backup-pre-restore",
                "durationSeconds": 12.5,
            }
        },
        status=True,
    )
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    proc = subprocess.run(
        [str(control_plane.kubectl), "--cache-dir", str(tmp_path), "-n", namespace, "get", "obr"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().split("\n")
    assert lines[0].split() == ["NAME", "CLUSTER", "SOURCE", "PHASE", "SAFETY", "DURATION", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["by-backup"][1:6] == [
        "prod",
        "prod-202606010230",
        "Restoring",
        "by-backup-pre-restore",
        "12.5",
    ]
    assert rows["by-key"][1:3] == ["prod", KEY]


# -- static: the schema as written ----------------------------------------------------------------


def _schema(kind: str) -> dict[str, Any]:
    doc = next(d for d in load_crds() if d["spec"]["names"]["kind"] == kind)
    result: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def test_target_and_auth_are_the_cluster_schema() -> None:
    restore = _schema("OpenBaoRestore")["properties"]["spec"]["properties"]
    backup = _schema("OpenBaoCluster")["properties"]["spec"]["properties"]["backup"]["properties"]
    for field in ("target", "auth"):
        assert _without_descriptions(restore[field]) == _without_descriptions(backup[field]), field


def test_every_field_is_described_and_the_phases_are_the_contract() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        # the API server forbids anything but type on metadata
        assert path == ".metadata" or node.get("description"), f"{path or '<root>'}: no description"
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    schema = _schema("OpenBaoRestore")
    walk(schema, "")
    assert schema["properties"]["status"]["properties"]["phase"]["enum"] == PHASES
    spec = schema["properties"]["spec"]["properties"]
    assert list(spec) == [
        "cluster",
        "backupName",
        "key",
        "target",
        "force",
        "allowForeignKey",
        "safetySnapshot",
        "auth",
        "verifyTimeoutSeconds",
        "allowLinkLocalAddresses",
    ]
    assert spec["safetySnapshot"]["default"] is True
    assert (
        spec["verifyTimeoutSeconds"]["default"],
        spec["verifyTimeoutSeconds"]["minimum"],
        spec["verifyTimeoutSeconds"]["maximum"],
    ) == (600, 30, 3600)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("prod/./x.snap", "'.' path segment"),
        ("prod/ns/vault/a b.snap", "may only contain"),
        ("prod/ns/vault/a%2F.snap", "may only contain"),
    ],
)
async def test_keys_the_executor_would_refuse_are_refused_at_admission(
    api: k8s.CustomObjectsApi, namespace: str, key: str, fragment: str
) -> None:
    message = await refused(api, namespace, restore_body(key=key))
    assert fragment in message
