"""End-to-end fixtures: the real controller process, the node agent running the real executor,
real OpenBao with JWT auth trusting the control plane's service-account tokens, and moto S3."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from devenv.chart import CONTROLLER, SYSTEM_NAMESPACE, rbac_manifest
from devenv.controller import ControllerProcess
from devenv.controlplane import SA_ISSUER, ControlPlane
from devenv.nodeagent import LOCAL_NODE_LABEL, NodeAgentProcess
from devenv.openbao import OpenBao
from devenv.storage import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY, StorageServer
from kubernetes_asyncio import client as k8s

from tests.polling import until as poll_until

GROUP, VERSION = "backup.openbao.org", "v1alpha1"
MERGE = "application/merge-patch+json"
JWT_MOUNT = "jwt"


@pytest.fixture(scope="session")
def jwt_auth(openbao: OpenBao, control_plane: ControlPlane) -> str:
    assert control_plane.pki is not None
    openbao.setup_jwt_auth(
        mount=JWT_MOUNT, public_key_pem=control_plane.pki.sa_pub.read_text(), issuer=SA_ISSUER
    )
    return JWT_MOUNT


@pytest.fixture(scope="session")
def controller_kubeconfig(control_plane: ControlPlane, session_dir: Path, crds: list[str]) -> Path:
    """A kubeconfig for the controller's own ServiceAccount, bound to the shipped ClusterRole
    (the chart's RBAC as rendered into manifests/install.yaml): the e2e tests prove that role
    suffices, without Secrets."""
    proc = control_plane.run_kubectl("apply", "-f", "-", stdin=rbac_manifest())
    assert proc.returncode == 0, f"applying the shipped RBAC: {proc.stderr}"
    return control_plane.service_account_kubeconfig(
        namespace=SYSTEM_NAMESPACE,
        name=CONTROLLER,
        path=session_dir / "controller.kubeconfig",
        expiration_seconds=24 * 3600,
    )


@pytest.fixture(scope="module")
def controller(
    controller_kubeconfig: Path,
    node_agent: NodeAgentProcess,
    crds: list[str],
    session_dir: Path,
) -> Iterator[ControllerProcess]:
    """The controller, per test module: it watches all namespaces, so it must not outlive
    the e2e modules (it would act on other suites' OpenBaoBackup objects)."""
    proc = ControllerProcess(
        kubeconfig=controller_kubeconfig, workdir=session_dir / "controller"
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


async def until(
    probe: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 90.0,
    what: str = "condition",
    interval: float = 0.25,
) -> Any:
    """:func:`tests.polling.until` with the e2e lane's longer defaults."""
    return await poll_until(probe, timeout=timeout, what=what, interval=interval)


@dataclass
class Env:
    """One test's world: a namespace, a bucket, credentials, and API helpers."""

    api: k8s.ApiClient
    namespace: str
    bucket: str
    s3: StorageServer
    openbao: OpenBao
    controller: ControllerProcess

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def cluster_body(self, name: str, **backup: Any) -> dict[str, Any]:
        spec_backup: dict[str, Any] = {
            "target": {
                "provider": "s3",
                "endpoint": self.s3.endpoint,
                "bucket": self.bucket,
                "region": MOTO_REGION,
                "pathPrefix": "backups",
                "usePathStyle": True,
                "credentialsSecretRef": {"name": "s3-credentials"},
            },
            "auth": {"jwt": {"mount": JWT_MOUNT, "role": self.role, "audience": "openbao"}},
            "executor": {"podLabels": {LOCAL_NODE_LABEL: "true"}, "activeDeadlineSeconds": 300},
        }
        for key, value in backup.items():
            if isinstance(value, dict) and isinstance(spec_backup.get(key), dict):
                merged = copy.deepcopy(spec_backup[key])
                merged.update(value)
                spec_backup[key] = merged
            else:
                spec_backup[key] = value
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoCluster",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"address": self.openbao.addr, "backup": spec_backup},
        }

    @property
    def role(self) -> str:
        return f"backup-{self.namespace}"

    async def create_cluster(self, name: str, **backup: Any) -> dict[str, Any]:
        obj: dict[str, Any] = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "openbaoclusters", self.cluster_body(name, **backup)
        )
        return obj

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
            return obj
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        patch: Any = self.custom.patch_namespaced_custom_object
        await patch(GROUP, VERSION, self.namespace, plural, name, body, _content_type=MERGE)

    async def trigger(self, cluster: str, value: str) -> None:
        await self.patch(
            "openbaoclusters",
            cluster,
            {"metadata": {"annotations": {"backup.openbao.org/trigger": value}}},
        )

    async def backups(self, cluster: str | None = None) -> list[dict[str, Any]]:
        out = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "openbaobackups"
        )
        items: list[dict[str, Any]] = out["items"]
        return [b for b in items if cluster is None or b["spec"]["cluster"] == cluster]

    async def jobs(self) -> list[Any]:
        out = await k8s.BatchV1Api(self.api).list_namespaced_job(self.namespace)
        return list(out.items)

    async def events(self, reason: str) -> list[Any]:
        out = await k8s.CoreV1Api(self.api).list_namespaced_event(self.namespace)
        return [e for e in out.items if e.reason == reason]

    async def wait_phase(self, name: str, phases: set[str], timeout: float = 120) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            obj = await self.get("openbaobackups", name)
            if obj and (obj.get("status") or {}).get("phase") in phases:
                return obj
            return None

        got: dict[str, Any] = await until(probe, timeout=timeout, what=f"{name} in {phases}")
        return got

    def metric(self, name: str, **labels: str) -> float | None:
        want = {"namespace": self.namespace, **labels}
        for line in self.controller.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            label_text = line[len(name) + 1 : line.index("}")]
            pairs = dict(p.split("=", 1) for p in label_text.split(",") if p)
            pairs = {k: v.strip('"') for k, v in pairs.items()}
            if all(pairs.get(k) == v for k, v in want.items()):
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture
async def env(
    kube_client: k8s.ApiClient,
    namespace: str,
    s3_server: StorageServer,
    s3_bucket: str,
    openbao: OpenBao,
    controller: ControllerProcess,
    jwt_auth: str,
) -> AsyncIterator[Env]:
    core = k8s.CoreV1Api(kube_client)
    await core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="s3-credentials"),
            string_data={
                "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
            },
        ),
    )
    e = Env(
        api=kube_client,
        namespace=namespace,
        bucket=s3_bucket,
        s3=s3_server,
        openbao=openbao,
        controller=controller,
    )
    openbao.jwt_role(
        mount=jwt_auth,
        role=e.role,
        subject=f"system:serviceaccount:{namespace}:default",
        audience="openbao",
    )
    yield e
    controller.check_alive()
