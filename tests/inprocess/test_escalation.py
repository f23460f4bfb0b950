"""Issue 11, security: the privilege escalation through OpenBaoCluster is closed, end to end.

The finding: a user who may edit OpenBaoClusters but neither read Secrets nor create Pods set
``spec.backup.executor.image`` to an arbitrary image and ``credentialsSecretRef`` /
``tokenSecretRef`` to any Secret of the namespace, and the controller created a Job running
that image with those Secrets mounted. Closed two ways, both checked here against the real
kube-apiserver (RBAC enforced) and the real controller App in process:

* the role for people who trigger backups (``openbao-backup-trigger``, shipped by the chart,
  applied as rendered into manifests/install.yaml) lets a user create OpenBaoBackups and read
  clusters and their status, and nothing else: every edit of an OpenBaoCluster, every Secret
  read, every Pod or Job create is a 403 from the API server for a ServiceAccount bound only
  to it;
* a cluster that someone who may edit it pointed at an untrusted image never gets a Job: the
  record fails ``ExecutorImageNotAllowed`` (Warning event, counted), the cluster shows
  ``ConfigValid=False`` naming the field, ``openbao_backup_config_valid`` is 0, and once the
  image is trusted again the next backup runs with the controller's image.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from devenv.chart import rbac_manifest
from devenv.controlplane import ControlPlane

from controller import errors, metrics
from controller.kube.client import connect
from controller.settings import Settings
from tests.inprocess.conftest import World
from tests.inprocess.harness import GROUP, VERSION, Kube, play_kubelet, until

pytestmark = pytest.mark.integration

TRIGGER_ROLE = "openbao-backup-trigger"
TRIGGER_SA = "backup-trigger"
UNTRUSTED = "evil.example/exfiltrate:latest"
TRUSTED = "example.invalid/openbao-backup:test"  # the in-process controller's executor_image


def apply_shipped_rbac(control_plane: ControlPlane) -> None:
    proc = control_plane.run_kubectl("apply", "-f", "-", stdin=rbac_manifest())
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
async def trigger_user(
    world: World, control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[Kube]:
    """A client authenticated as a ServiceAccount of the test's namespace that is bound (by a
    RoleBinding in that namespace) to the shipped trigger ClusterRole and to nothing else."""
    apply_shipped_rbac(control_plane)
    ns, api = world.namespace, world.kube.api
    await api.create(
        path=f"/api/v1/namespaces/{ns}/serviceaccounts",
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TRIGGER_SA}},
    )
    await api.create(
        path=f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": TRIGGER_SA},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": TRIGGER_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": TRIGGER_SA, "namespace": ns}],
        },
    )
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace=ns, name=TRIGGER_SA, path=tmp_path / "trigger.kubeconfig", expiration_seconds=3600
    )
    clients = await connect(Settings(kubeconfig=kubeconfig, leader_elect=False))
    try:
        yield Kube(clients.api)
    finally:
        await clients.close()


def backup_body(name: str, cluster: str = "vault") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoBackup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, "trigger": "by-trigger-role"},
    }


async def forbidden(call: Callable[[], Awaitable[Any]]) -> str:
    """The API server's 403 message for ``call`` (fails the test if the call went through)."""
    try:
        await call()
    except errors.Forbidden as exc:
        return exc.message
    raise AssertionError("the API server allowed a call the trigger role must not allow")


async def test_the_trigger_role_triggers_backups_and_cannot_edit_clusters_or_read_secrets(
    world: World, trigger_user: Kube
) -> None:
    user, cluster = trigger_user.api, world.cluster
    base = cluster.base

    # What the role is for: read clusters and their status, create (and watch) records.
    listed = await user.request(method="GET", path=f"{base}/openbaoclusters")
    assert [c["metadata"]["name"] for c in listed["items"]] == ["vault"]
    assert (await user.get(path=f"{cluster.path}/status"))["metadata"]["name"] == "vault"
    await user.create(path=f"{base}/openbaobackups", body=backup_body("by-hand-1"))
    running = await cluster.wait_phase("by-hand-1", {"Running", "Failed"})
    assert running["status"]["phase"] == "Running", running["status"]
    assert (await user.get(path=f"{base}/openbaobackups/by-hand-1"))["status"]["phase"]
    pods = await user.request(method="GET", path=f"/api/v1/namespaces/{world.namespace}/pods")
    assert isinstance(pods["items"], list)  # the plugin follows the executor's log
    (job,) = await cluster.jobs_of("by-hand-1")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == TRUSTED
    await play_kubelet(world.kube, world.namespace, job["metadata"]["name"])
    await cluster.wait_phase("by-hand-1", {"Succeeded"})

    # The escalation: every way of changing what the controller runs, or reading a Secret.
    edits: dict[str, dict[str, Any]] = {
        "executor.image": {"spec": {"backup": {"executor": {"image": UNTRUSTED}}}},
        "credentialsSecretRef": {
            "spec": {"backup": {"target": {"credentialsSecretRef": {"name": "other-team"}}}}
        },
        "tokenSecretRef": {
            "spec": {"backup": {"auth": {"tokenSecretRef": {"name": "root-token"}}}}
        },
        "address": {"spec": {"address": "http://169.254.169.254"}},
    }
    for what, patch in edits.items():
        message = await forbidden(partial(user.merge_patch, path=cluster.path, body=patch))
        assert "openbaoclusters" in message, (what, message)
    current = await cluster.get()
    current["spec"]["backup"]["executor"] = {"image": UNTRUSTED}
    await forbidden(lambda: user.replace(path=cluster.path, body=current))
    await forbidden(lambda: user.merge_patch(path=f"{cluster.path}/status", body={"status": {}}))
    evil = cluster.body()
    evil["metadata"] = {"name": "evil"}
    evil["spec"]["backup"]["executor"] = {"image": UNTRUSTED}
    await forbidden(lambda: user.create(path=f"{base}/openbaoclusters", body=evil))
    await forbidden(lambda: user.delete(path=cluster.path))
    ns = world.namespace
    await forbidden(lambda: user.request(method="GET", path=f"/api/v1/namespaces/{ns}/secrets"))
    await forbidden(lambda: user.get(path=f"/api/v1/namespaces/{ns}/secrets/openbao-token"))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": UNTRUSTED}]},
    }
    await forbidden(lambda: user.create(path=f"/api/v1/namespaces/{ns}/pods", body=pod))
    exec_path = f"/api/v1/namespaces/{ns}/pods/any/exec"
    await forbidden(lambda: user.request(method="POST", path=exec_path, query=[("command", "sh")]))
    job_body = {**job, "metadata": {"name": "j"}}
    await forbidden(lambda: user.create(path=f"/apis/batch/v1/namespaces/{ns}/jobs", body=job_body))
    # Deleting a record deletes its snapshot, and a restore overwrites OpenBao: not triggering.
    await forbidden(lambda: user.delete(path=f"{base}/openbaobackups/by-hand-1"))
    restore = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": "r"},
        "spec": {"cluster": "vault", "backupName": "by-hand-1"},
    }
    await forbidden(lambda: user.create(path=f"{base}/openbaorestores", body=restore))
    spec = (await cluster.get())["spec"]
    assert "executor" not in spec["backup"]
    assert spec["address"] == world.openbao_addr


async def test_a_cluster_edited_to_an_untrusted_image_never_gets_a_job(
    world: World, trigger_user: Kube
) -> None:
    cluster, kube, ns = world.cluster, world.kube, world.namespace
    # Someone who may edit the cluster (not the trigger user) points it at an untrusted image.
    await kube.api.merge_patch(
        path=cluster.path, body={"spec": {"backup": {"executor": {"image": UNTRUSTED}}}}
    )
    name = f"after-edit-{uuid.uuid4().hex[:6]}"
    await trigger_user.api.create(path=f"{cluster.base}/openbaobackups", body=backup_body(name))
    done = await cluster.wait_phase(name, {"Running", "Failed"})
    jobs = await kube.items(f"/apis/batch/v1/namespaces/{ns}/jobs")
    assert jobs == [], [j["spec"]["template"]["spec"]["containers"][0]["image"] for j in jobs]
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["failureReason"] == "ExecutorImageNotAllowed"
    assert UNTRUSTED in done["status"]["message"]
    assert "spec.backup.executor.image" in done["status"]["message"]
    assert [
        e
        for e in await cluster.events("ExecutorImageNotAllowed")
        if e["regarding"]["name"] == name and e["type"] == "Warning"
    ]
    assert (await cluster.wait_accounted(name))["consecutiveFailures"] == 1

    async def invalid() -> dict[str, Any] | None:
        cond = await cluster.condition("ConfigValid")
        return cond if cond and cond["status"] == "False" else None

    cond = await until(invalid, what="ConfigValid=False")
    assert "spec.backup.executor.image" in cond["message"] and UNTRUSTED in cond["message"]
    labels = {"namespace": ns, "cluster": cluster.name}

    async def config_invalid_metric() -> bool:
        return metrics.REGISTRY.get_sample_value("openbao_backup_config_valid", labels) == 0.0

    await until(config_invalid_metric, what="openbao_backup_config_valid == 0")
    # The trigger annotation path (by an editor) ends the same way, with no Job either.
    await cluster.trigger("after-edit")
    manual = await cluster.new_record({name})
    manual_name = manual["metadata"]["name"]
    failed = await cluster.wait_phase(manual_name, {"Running", "Failed"})
    assert failed["status"].get("failureReason") == "ExecutorImageNotAllowed"
    assert await kube.items(f"/apis/batch/v1/namespaces/{ns}/jobs") == []
    await cluster.wait_lock_free()

    # Trusted again (the field removed): the next backup runs, with the controller's image.
    await kube.api.merge_patch(
        path=cluster.path, body={"spec": {"backup": {"executor": {"image": None}}}}
    )
    await until(lambda: _config_valid(cluster), what="ConfigValid=True again")
    again = f"fixed-{uuid.uuid4().hex[:6]}"
    await trigger_user.api.create(path=f"{cluster.base}/openbaobackups", body=backup_body(again))
    await cluster.wait_phase(again, {"Running"})
    (job,) = await cluster.jobs_of(again)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == TRUSTED


async def _config_valid(cluster: Any) -> bool:
    cond = await cluster.condition("ConfigValid")
    return bool(cond and cond["status"] == "True")
