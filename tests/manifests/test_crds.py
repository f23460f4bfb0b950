"""The CRDs on the real API server: they install, valid objects round-trip (spec, defaults,
status subresource), and admission refuses what can never work with a clear message."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

pytestmark = pytest.mark.integration

GROUP = "backup.openbao.org"
VERSION = "v1alpha1"
MERGE = "application/merge-patch+json"
DELETE = object()


def cluster_body(name: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {
            "tls": {"caSecretRef": {"name": "bao-ca"}},
            "backup": {
                "schedule": "30 2 * * MON-FRI",
                "timeZone": "Europe/Berlin",
                "startingDeadlineSeconds": 600,
                "target": {
                    "provider": "s3",
                    "bucket": "backups",
                    "endpoint": "http://127.0.0.1:9000",
                    "region": "us-east-1",
                    "pathPrefix": "openbao/prod",
                    "usePathStyle": True,
                    "partSize": "16Mi",
                    "concurrency": 4,
                    "credentialsSecretRef": {"name": "s3-credentials"},
                    "caSecretRef": {"name": "s3-ca"},
                },
                "auth": {"jwt": {"role": "backup"}},
                "retention": {"maxCount": 7, "maxAge": "30d"},
                "executor": {
                    "image": "ghcr.io/example/openbao-backup:0.1.0",
                    "resources": {"limits": {"memory": "256Mi", "cpu": 1}},
                    "activeDeadlineSeconds": 1800,
                    "serviceAccountName": "openbao-backup",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                    "priorityClassName": "low",
                },
            },
        },
    }


def backup_body(name: str = "prod-manual-1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoBackup",
        "metadata": {"name": name},
        "spec": {"cluster": "prod", **spec},
    }


def restore_body(name: str = "restore-1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": name},
        "spec": {"cluster": "prod", **spec},
    }


def with_changes(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` with dotted paths set (or removed with DELETE)."""
    out = copy.deepcopy(body)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


async def create(
    api: k8s.CustomObjectsApi,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    validation: str = "Strict",
) -> dict[str, Any]:
    result: dict[str, Any] = await api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, field_validation=validation
    )
    return result


async def patch(
    api: k8s.CustomObjectsApi,
    namespace: str,
    plural: str,
    name: str,
    body: dict[str, Any],
    *,
    status: bool = False,
) -> dict[str, Any]:
    """A JSON merge patch of the object (or of its status subresource)."""
    method: Any = (
        api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
    )
    result: dict[str, Any] = await method(
        GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE
    )
    return result


def error_message(err: ApiException) -> str:
    message: str = json.loads(err.body or b"{}")["message"]
    return message


async def rejection(
    api: k8s.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any]
) -> str:
    with pytest.raises(ApiException) as caught:
        await create(api, namespace, plural, body)
    assert caught.value.status in (400, 422), caught.value.body
    return error_message(caught.value)


@pytest.fixture
def api(kube_client: k8s.ApiClient, crds: list[str]) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_client)


async def test_crds_are_established(kube_client: k8s.ApiClient, crds: list[str]) -> None:
    assert sorted(crds) == [
        "openbaobackups.backup.openbao.org",
        "openbaoclusters.backup.openbao.org",
        "openbaorestores.backup.openbao.org",
    ]
    ext = k8s.ApiextensionsV1Api(kube_client)
    for name in crds:
        crd = await ext.read_custom_resource_definition(name)
        assert crd.spec.names.categories == ["openbao"]
        assert crd.status.accepted_names.short_names == crd.spec.names.short_names
        assert crd.spec.versions[0].subresources.status is not None


async def test_cluster_round_trip_with_defaults_and_status(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    body = cluster_body()
    body["spec"]["backup"]["auth"] = {"kubernetes": {"role": "backup"}}
    del body["spec"]["backup"]["timeZone"]
    created = await create(api, namespace, "openbaoclusters", body)
    spec = created["spec"]
    assert spec["backup"]["timeZone"] == "UTC"
    assert spec["backup"]["suspend"] is False
    assert spec["backup"]["auth"]["kubernetes"] == {
        "role": "backup",
        "mount": "kubernetes",
        "audience": "openbao",
    }
    assert spec["tls"]["caSecretRef"] == {"name": "bao-ca", "key": "ca.crt"}
    assert "address" not in spec  # optional: the controller derives the default
    assert spec["backup"]["target"]["partSize"] == "16Mi"

    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "BackupReady",
                "status": "True",
                "reason": "BackupSucceeded",
                "message": "backup prod-202606010230 succeeded",
                "lastTransitionTime": "2026-06-01T02:31:00Z",
                "observedGeneration": 1,
            }
        ],
        "backup": {
            "lastBackupTime": "2026-06-01T02:31:00Z",
            "lastAttemptTime": "2026-06-01T02:30:01Z",
            "lastAttemptScheduledTime": "2026-06-01T02:30:00Z",
            "nextScheduledBackup": "2026-06-02T02:30:00Z",
            "consecutiveFailures": 0,
            "lastFailureReason": "storage: bucket said no",
            "lastBackupName": "openbao/prod/ns/prod/20260601T023001Z-0123abcd.snap",
            "lastBackupRecord": "prod-202606010030",
            "lastBackupSize": 123456,
            "lastBackupDuration": "12.5s",
            "lastHandledTrigger": "2026-06-01T00:00:00Z",
            "lastHandledWindow": "2026-06-01T00:30:00Z",
            "missedWindows": 2,
            "lastMissedWindow": "2026-05-30T00:30:00Z",
            "activeBackup": "prod-202606010030",
        },
    }
    await patch(api, namespace, "openbaoclusters", "prod", {"status": status}, status=True)
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaoclusters", "prod"
    )
    assert got["status"] == status
    # writes to the main resource never change status
    await patch(
        api,
        namespace,
        "openbaoclusters",
        "prod",
        {"status": {"backup": {"consecutiveFailures": 99}}},
    )
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaoclusters", "prod"
    )
    assert got["status"]["backup"]["consecutiveFailures"] == 0
    # and status writes never change spec
    await patch(
        api,
        namespace,
        "openbaoclusters",
        "prod",
        {"spec": {"backup": {"suspend": True}}},
        status=True,
    )
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaoclusters", "prod"
    )
    assert got["spec"]["backup"]["suspend"] is False


@pytest.mark.parametrize(
    "target",
    [
        {
            "provider": "gcs",
            "bucket": "bkt",
            "gcs": {"project": "p", "emulator": True},
            "partSize": 262144 * 64,
        },
        {
            "provider": "azure",
            "azure": {"storageAccount": "devstoreaccount1", "container": "backups"},
            "partSize": "4000Mi",
        },
        {
            "provider": "s3",
            "bucket": "bkt",
            "roleArn": "arn:aws:iam::123456789012:role/backup",
            "partSize": "5Gi",
        },
        {"provider": "s3", "bucket": "bkt", "pathPrefix": ""},
    ],
    ids=["gcs", "azure", "s3-irsa", "s3-minimal"],
)
async def test_other_valid_targets(
    api: k8s.CustomObjectsApi, namespace: str, target: dict[str, Any]
) -> None:
    body = with_changes(cluster_body(), {"spec.backup.target": target})
    await create(api, namespace, "openbaoclusters", body)


async def test_cluster_without_backup_or_schedule_is_valid(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    await create(api, namespace, "openbaoclusters", with_changes(cluster_body("a"), {"spec": {}}))
    manual = with_changes(cluster_body("b"), {"spec.backup.schedule": DELETE})
    await create(api, namespace, "openbaoclusters", manual)
    await create(api, namespace, "openbaoclusters", with_changes(cluster_body("c" * 40), {}))


SCHEDULE_MSG = "schedule must be 5 cron fields"
CLUSTER_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("6-field cron", {"spec.backup.schedule": "*/5 * * * * *"}, SCHEDULE_MSG),
    ("7-field cron", {"spec.backup.schedule": "0 0 * * * * 2026"}, SCHEDULE_MSG),
    ("4-field cron", {"spec.backup.schedule": "0 * * *"}, SCHEDULE_MSG),
    ("@every", {"spec.backup.schedule": "@every 5m"}, SCHEDULE_MSG),
    ("@reboot", {"spec.backup.schedule": "@reboot"}, SCHEDULE_MSG),
    ("minute 61", {"spec.backup.schedule": "61 * * * *"}, SCHEDULE_MSG),
    ("step 0", {"spec.backup.schedule": "*/0 * * * *"}, SCHEDULE_MSG),
    ("quartz L", {"spec.backup.schedule": "0 0 L * *"}, SCHEDULE_MSG),
    ("TZ prefix", {"spec.backup.schedule": "CRON_TZ=UTC 0 * * * *"}, SCHEDULE_MSG),
    ("lower-case zone", {"spec.backup.timeZone": "utc"}, "timeZone must be an IANA"),
    ("path as zone", {"spec.backup.timeZone": "../../etc/passwd"}, "timeZone must be an IANA"),
    ("deadline too short", {"spec.backup.startingDeadlineSeconds": 5}, "at least 10"),
    ("unknown provider", {"spec.backup.target.provider": "minio"}, 'Unsupported value: "minio"'),
    (
        "s3 without bucket",
        {"spec.backup.target.bucket": DELETE},
        "bucket is required for provider s3 and gcs",
    ),
    (
        "gcs without bucket",
        {"spec.backup.target": {"provider": "gcs"}},
        "bucket is required for provider s3 and gcs",
    ),
    (
        "azure without container",
        {"spec.backup.target": {"provider": "azure", "azure": {"storageAccount": "acct1"}}},
        "provider azure requires azure.storageAccount and azure.container",
    ),
    (
        "azure without storage account",
        {"spec.backup.target": {"provider": "azure", "azure": {"container": "backups"}}},
        "provider azure requires azure.storageAccount and azure.container",
    ),
    (
        "azure with a bucket",
        {
            "spec.backup.target": {
                "provider": "azure",
                "bucket": "bkt",
                "azure": {"storageAccount": "acct1", "container": "backups"},
            }
        },
        "remove bucket",
    ),
    (
        "region on gcs",
        {"spec.backup.target": {"provider": "gcs", "bucket": "bkt", "region": "eu"}},
        "only apply to provider s3",
    ),
    (
        "gcs settings on s3",
        {"spec.backup.target.gcs": {"project": "p"}},
        "gcs settings are only valid with provider gcs",
    ),
    (
        "s3 part too small",
        {"spec.backup.target.partSize": "1Mi"},
        "partSize for provider s3 must be between 5Mi and 5Gi",
    ),
    (
        "gcs part not a multiple of 256Ki",
        {"spec.backup.target": {"provider": "gcs", "bucket": "bkt", "partSize": 1000000}},
        "multiple of 256Ki",
    ),
    (
        "part size with decimal unit",
        {"spec.backup.target.partSize": "16MB"},
        "partSize must be a positive number",
    ),
    ("zero part size", {"spec.backup.target.partSize": 0}, "partSize must be a positive number"),
    ("concurrency 0", {"spec.backup.target.concurrency": 0}, "greater than or equal to 1"),
    ("pathPrefix escaping", {"spec.backup.target.pathPrefix": "a/../b"}, "pathPrefix must be"),
    (
        "endpoint not a URL",
        {"spec.backup.target.endpoint": "s3.local:9000"},
        "endpoint must be an http:// or https:// URL",
    ),
    ("maxCount 0", {"spec.backup.retention.maxCount": 0}, "retention.maxCount must be at least 1"),
    (
        "maxCount negative",
        {"spec.backup.retention.maxCount": -1},
        "retention.maxCount must be at least 1",
    ),
    ("maxAge zero", {"spec.backup.retention.maxAge": "0d"}, "retention.maxAge must be a positive"),
    (
        "maxAge negative",
        {"spec.backup.retention.maxAge": "-1h"},
        "retention.maxAge must be a positive",
    ),
    ("maxAge weeks", {"spec.backup.retention.maxAge": "2w"}, "retention.maxAge must be a positive"),
    (
        "two auth methods",
        {"spec.backup.auth.tokenSecretRef": {"name": "t"}},
        "auth must set exactly one of jwt, kubernetes or tokenSecretRef",
    ),
    (
        "no auth method",
        {"spec.backup.auth": {}},
        "auth must set exactly one of jwt, kubernetes or tokenSecretRef",
    ),
    (
        "cross-namespace credentials",
        {"spec.backup.target.credentialsSecretRef": {"name": "c", "namespace": "other"}},
        'unknown field "spec.backup.target.credentialsSecretRef.namespace"',
    ),
    (
        "cross-namespace OpenBao CA",
        {"spec.tls.caSecretRef.namespace": "other"},
        'unknown field "spec.tls.caSecretRef.namespace"',
    ),
    (
        "cross-namespace token",
        {"spec.backup.auth": {"tokenSecretRef": {"name": "t", "namespace": "other"}}},
        'unknown field "spec.backup.auth.tokenSecretRef.namespace"',
    ),
    ("unknown field", {"spec.backup.scheduel": "@daily"}, 'unknown field "spec.backup.scheduel"'),
    ("name too long", {"metadata.name": "c" * 41}, "metadata.name must be at most 40 characters"),
    ("name with dots", {"metadata.name": "prod.eu"}, "metadata.name must be a DNS label"),
    (
        "address not http",
        {"spec.address": "ftp://openbao:8200"},
        "address must be an http:// or https:// URL",
    ),
    (
        "address with user info",
        {"spec.address": "https://u:p@openbao:8200"},
        "address must be an http:// or https:// URL",
    ),
    (
        "executor deadline too short",
        {"spec.backup.executor.activeDeadlineSeconds": 5},
        "executor.activeDeadlineSeconds must be at least 30",
    ),
    (
        "bad resource quantity",
        {"spec.backup.executor.resources.limits.memory": "lots"},
        "spec.backup.executor.resources.limits.memory",
    ),
]


@pytest.mark.parametrize(
    ("changes", "fragment"), [pytest.param(c, f, id=i) for i, c, f in CLUSTER_REJECTIONS]
)
async def test_cluster_rejections(
    api: k8s.CustomObjectsApi, namespace: str, changes: dict[str, Any], fragment: str
) -> None:
    message = await rejection(
        api, namespace, "openbaoclusters", with_changes(cluster_body(), changes)
    )
    assert fragment in message, message


async def test_namespace_in_a_secret_ref_is_dropped_when_not_strict(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    """Without strict validation an unknown field is pruned: the reference still can only
    point into the cluster's own namespace."""
    body = with_changes(
        cluster_body(), {"spec.backup.target.credentialsSecretRef.namespace": "kube-system"}
    )
    created = await create(api, namespace, "openbaoclusters", body, validation="Ignore")
    assert created["spec"]["backup"]["target"]["credentialsSecretRef"] == {"name": "s3-credentials"}


async def test_backup_round_trip_defaults_status_and_immutability(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    created = await create(api, namespace, "openbaobackups", backup_body())
    assert created["spec"] == {"cluster": "prod", "trigger": "manual", "deletionPolicy": "Delete"}
    status = {
        "phase": "Succeeded",
        "key": "openbao/prod/ns/prod/20260601T023001Z-0123abcd.snap",
        "manifestKey": "openbao/prod/ns/prod/20260601T023001Z-0123abcd.snap.manifest.json",
        "size": 123456,
        "sha256": "ab" * 32,
        "scheduledTime": "2026-06-01T02:30:00Z",
        "startTime": "2026-06-01T02:30:01Z",
        "completionTime": "2026-06-01T02:30:14Z",
        "jobName": "prod-manual-1-backup",
        "message": "ok",
        "failureReason": "",
        "openbaoVersion": "2.4.1",
        "raftIndex": 42,
        "raftTerm": 3,
        "durationSeconds": 12.5,
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "Succeeded",
                "message": "verified",
                "lastTransitionTime": "2026-06-01T02:30:14Z",
            }
        ],
    }
    await patch(api, namespace, "openbaobackups", "prod-manual-1", {"status": status}, status=True)
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaobackups", "prod-manual-1"
    )
    assert got["status"] == status
    for change in ({"cluster": "other"}, {"trigger": "x"}):
        with pytest.raises(ApiException) as caught:
            await patch(api, namespace, "openbaobackups", "prod-manual-1", {"spec": change})
        assert caught.value.status == 422
        assert "immutable" in error_message(caught.value)
    # deletionPolicy may change: pinning a backup after the fact
    pinned = await patch(
        api, namespace, "openbaobackups", "prod-manual-1", {"spec": {"deletionPolicy": "Retain"}}
    )
    assert pinned["spec"]["deletionPolicy"] == "Retain"
    # metadata stays writable (labels, finalizers)
    await patch(
        api, namespace, "openbaobackups", "prod-manual-1", {"metadata": {"labels": {"a": "b"}}}
    )


BACKUP_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("bad deletion policy", backup_body(deletionPolicy="Keep"), 'Unsupported value: "Keep"'),
    ("no cluster", {**backup_body(), "spec": {}}, "spec.cluster: Required value"),
    ("cluster name too long", backup_body(cluster="c" * 41), "spec.cluster"),
    ("bad trigger", backup_body(trigger="has space"), "spec.trigger"),
    (
        "cross-namespace cluster",
        backup_body(clusterNamespace="other"),
        'unknown field "spec.clusterNamespace"',
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [pytest.param(b, f, id=i) for i, b, f in BACKUP_REJECTIONS]
)
async def test_backup_rejections(
    api: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any], fragment: str
) -> None:
    message = await rejection(api, namespace, "openbaobackups", body)
    assert fragment in message, message


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        ({"phase": "Done"}, 'Unsupported value: "Done"'),
        ({"sha256": "xyz"}, "status.sha256"),
        ({"size": -1}, "status.size"),
    ],
)
async def test_backup_status_is_validated(
    api: k8s.CustomObjectsApi, namespace: str, status: dict[str, Any], fragment: str
) -> None:
    await create(api, namespace, "openbaobackups", backup_body("b1"))
    with pytest.raises(ApiException) as caught:
        await patch(api, namespace, "openbaobackups", "b1", {"status": status}, status=True)
    assert fragment in error_message(caught.value)


async def test_restore_round_trip_and_rules(api: k8s.CustomObjectsApi, namespace: str) -> None:
    created = await create(api, namespace, "openbaorestores", restore_body(backupName="b1"))
    assert created["spec"] == {
        "cluster": "prod",
        "backupName": "b1",
        "force": False,
        "allowForeignKey": False,
        "safetySnapshot": True,
        "verifyTimeoutSeconds": 600,
    }
    by_key = await create(
        api,
        namespace,
        "openbaorestores",
        restore_body("restore-2", key="openbao/ns/prod/20260601T023001Z-0123abcd.snap", force=True),
    )
    assert by_key["spec"]["force"] is True
    status = {
        "phase": "Restoring",
        "key": "openbao/ns/prod/x.snap",
        "startTime": "2026-06-01T03:00:00Z",
        "restoreJob": "restore-1-restore",
        "conditions": [],
    }
    await patch(api, namespace, "openbaorestores", "restore-1", {"status": status}, status=True)
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaorestores", "restore-1"
    )
    assert got["status"] == status
    with pytest.raises(ApiException) as caught:
        await patch(api, namespace, "openbaorestores", "restore-1", {"spec": {"force": True}})
    assert "immutable" in error_message(caught.value)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, "set exactly one of backupName or key"),
        ({"backupName": "b1", "key": "a/b.snap"}, "set exactly one of backupName or key"),
        ({"key": "a/b.tar"}, "key must end in .snap"),
        ({"key": "/a/b.snap"}, "key must not start with '/'"),
        ({"backupName": "b1", "clusterNamespace": "x"}, 'unknown field "spec.clusterNamespace"'),
    ],
)
async def test_restore_rejections(
    api: k8s.CustomObjectsApi, namespace: str, spec: dict[str, Any], fragment: str
) -> None:
    message = await rejection(api, namespace, "openbaorestores", restore_body(**spec))
    assert fragment in message, message


async def test_kubectl_sees_short_names_category_and_columns(
    api: k8s.CustomObjectsApi, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    await create(api, namespace, "openbaoclusters", cluster_body())
    await create(api, namespace, "openbaobackups", backup_body())
    await create(api, namespace, "openbaorestores", restore_body(backupName="prod-manual-1"))
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}

    def kubectl(*args: str) -> str:
        proc = subprocess.run(
            # a fresh discovery cache: an earlier kubectl call may predate the CRDs
            [str(control_plane.kubectl), "--cache-dir", str(tmp_path), "-n", namespace, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    everything = kubectl("get", "openbao")
    for kind_name in (
        "openbaocluster.backup.openbao.org/prod",
        "openbaobackup.backup.openbao.org/prod-manual-1",
        "openbaorestore.backup.openbao.org/restore-1",
    ):
        assert kind_name in everything
    clusters = kubectl("get", "obc")
    assert clusters.split("\n")[0].split() == [
        "NAME",
        "SCHEDULE",
        "SUSPENDED",
        "READY",
        "REASON",
        "LAST",
        "BACKUP",
        "NEXT",
        "BACKUP",
        "FAILURES",
        "AGE",
    ]
    assert "30 2 * * MON-FRI" in clusters
    backups = kubectl("get", "obb", "-o", "wide")
    assert backups.split("\n")[0].split() == [
        "NAME",
        "CLUSTER",
        "TRIGGER",
        "PHASE",
        "SIZE",
        "COMPLETED",
        "VERIFIED",
        "KEY",
        "POLICY",
        "AGE",
    ]
    assert "manual" in backups
    assert "restore-1" in kubectl("get", "obr")
