"""The real-node lane: the product as users run it.

Its own control plane (etcd, kube-apiserver, kube-controller-manager with the controllers a
real node needs, kube-scheduler) and a **real node** (kubelet on containerd + runc, kube-proxy,
a pod bridge with no route off the machine; ``hack/devenv/realnode.py``). The product image is
built from the project's Dockerfile (``hack/devenv/images.py``) and imported into containerd.
The controller is installed the way the README tells users to, from the Helm chart
(``helm upgrade --install openbao-backup charts/openbao-backup`` with the built helm, into a
namespace enforcing the ``restricted`` Pod Security Standard): the chart's CRDs, a 2-replica
Deployment from the image with the chart's arguments, probes and securityContext, under the
chart's RBAC, talking to the apiserver through the ``kubernetes`` Service; its executor Jobs run
as real container pods with their securityContext, limits and deadlines enforced.

OpenBao and moto are the session's loopback servers, forwarded onto the pod bridge.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from devenv.chart import CHART_DIR, CONTROLLER, RELEASE, SYSTEM_NAMESPACE, run_helm
from devenv.controlplane import SA_ISSUER, ControlPlane
from devenv.images import product_image
from devenv.openbao import OpenBao
from devenv.realnode import RealNode
from devenv.storage import MOTO_REGION, StorageServer
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from tests.polling import until

GROUP, VERSION = "backup.openbao.org", "v1alpha1"
MERGE = "application/merge-patch+json"
JWT_MOUNT = "jwt-realnode"
SYSTEM_NS = SYSTEM_NAMESPACE
DEPLOYMENT = CONTROLLER
LEADER_LEASE = CONTROLLER
INSTALL_TIMEOUT = "240s"  # CRDs, then both replicas Ready; a cold node pulls nothing (imported)
# A secret value that must never show in a log, an event or a status.
S3_SECRET = f"obb-secret-{uuid.uuid4().hex}"
S3_ACCESS = "obb-access-realnode"


@dataclass
class Cluster:
    """The real-node world: its control plane, node, and the loopback servers as pods see
    them."""

    cp: ControlPlane
    node: RealNode
    openbao: OpenBao
    s3: StorageServer
    openbao_addr: str
    s3_endpoint: str
    logs: dict[str, str] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        proc = self.cp.run_kubectl(*args, stdin=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def controller_logs(self) -> str:
        return self.kubectl(
            "-n", SYSTEM_NS, "logs", "-l", "app.kubernetes.io/component=controller",
            "--tail=-1", "--prefix", check=False,
        )  # fmt: skip


def _forwarded(node: RealNode, url: str) -> str:
    """``http://127.0.0.1:PORT`` as pods reach it: through the node's forwarder."""
    scheme, rest = url.split("://", 1)
    port = int(rest.rsplit(":", 1)[1].rstrip("/"))
    host, fport = node.expose(port)
    return f"{scheme}://{host}:{fport}"


def install_chart(world: Cluster, *, image_ref: str) -> None:
    """As the README says: the namespace with its Pod Security label, then the chart with the
    image the node has (never pulled), waiting until both replicas are Ready."""
    world.kubectl(
        "apply", "-f", "-",
        stdin=json.dumps({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": SYSTEM_NS,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }),
    )  # fmt: skip
    repository, tag = image_ref.rsplit(":", 1)
    proc = run_helm(
        "upgrade", "--install", RELEASE, str(CHART_DIR), "--namespace", SYSTEM_NS,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--wait", "--timeout", INSTALL_TIMEOUT,
        kubeconfig=world.cp.kubeconfig, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"helm install: {proc.stderr.strip() or proc.stdout.strip()}"
    world.kubectl("-n", SYSTEM_NS, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=60s")


@pytest.fixture(scope="package")
def realnode_cluster(
    session_dir: Path, openbao: OpenBao, s3_server: StorageServer
) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        raise AssertionError("the real-node lane needs root (containerd, iptables, a bridge)")
    image = product_image()
    workdir = session_dir / "realnode"
    node = RealNode.prepare(workdir=workdir / "node")
    cp = ControlPlane(
        workdir=workdir / "control-plane", audit=True, **node.control_plane_options()
    ).start()
    try:
        node.start(control_plane=cp)
        node.import_image(image.archive, image.ref)
        world = Cluster(
            cp=cp,
            node=node,
            openbao=openbao,
            s3=s3_server,
            openbao_addr=_forwarded(node, openbao.addr),
            s3_endpoint=_forwarded(node, s3_server.endpoint),
        )
        assert cp.pki is not None
        openbao.setup_jwt_auth(
            mount=JWT_MOUNT, public_key_pem=cp.pki.sa_pub.read_text(), issuer=SA_ISSUER
        )
        install_chart(world, image_ref=image.ref)
        yield world
    finally:
        try:
            logs = cp.run_kubectl(
                "-n", SYSTEM_NS, "logs", "-l", "app.kubernetes.io/component=controller",
                "--tail=200", "--prefix", timeout=30,
            )  # fmt: skip
            (workdir / "controller-pods.log").write_text(logs.stdout + logs.stderr)
        finally:
            node.stop()
            cp.stop()


@pytest.fixture(scope="package")
async def rn_api(realnode_cluster: Cluster) -> AsyncIterator[k8s.ApiClient]:
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(realnode_cluster.cp.kubeconfig), client_configuration=cfg
    )
    async with k8s.ApiClient(cfg) as api:
        yield api


@dataclass
class Tenant:
    """A namespace enforcing the ``restricted`` Pod Security Standard, with S3 credentials and
    an OpenBao JWT role for its executor pods."""

    world: Cluster
    api: k8s.ApiClient
    namespace: str
    bucket: str

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def cluster_body(self, name: str, **backup: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "target": {
                "provider": "s3",
                "endpoint": self.world.s3_endpoint,
                "bucket": self.bucket,
                "region": MOTO_REGION,
                "pathPrefix": "realnode",
                "usePathStyle": True,
                "credentialsSecretRef": {"name": "s3-credentials"},
            },
            "auth": {"jwt": {"mount": JWT_MOUNT, "role": self.namespace, "audience": "openbao"}},
            "executor": {"activeDeadlineSeconds": 120},
        }
        for key, value in backup.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoCluster",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"address": self.world.openbao_addr, "backup": spec},
        }

    async def create_cluster(self, name: str, **backup: Any) -> None:
        await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "openbaoclusters", self.cluster_body(name, **backup)
        )

    async def backups(self, cluster: str) -> list[dict[str, Any]]:
        out = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "openbaobackups"
        )
        return [b for b in out["items"] if b["spec"]["cluster"] == cluster]

    async def finished(self, cluster: str, *, timeout: float = 180.0) -> dict[str, Any]:
        """The cluster's first record that reached Succeeded or Failed."""

        async def probe() -> dict[str, Any] | None:
            for b in await self.backups(cluster):
                if (b.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return b
            return None

        got: dict[str, Any] = await until(
            probe, timeout=timeout, interval=0.5, what=f"a finished backup of {cluster}"
        )
        return got

    async def patch_cluster(self, name: str, body: dict[str, Any]) -> None:
        patch: Any = self.custom.patch_namespaced_custom_object
        await patch(
            GROUP, VERSION, self.namespace, "openbaoclusters", name, body, _content_type=MERGE
        )

    def trigger(self, cluster: str) -> None:
        """The README's kubectl trigger, through the real kubectl binary."""
        self.world.kubectl(
            "-n", self.namespace, "annotate", "openbaocluster", cluster,
            f"backup.openbao.org/trigger={uuid.uuid4().hex[:12]}", "--overwrite",
        )  # fmt: skip


@pytest.fixture
async def tenant(realnode_cluster: Cluster, rn_api: k8s.ApiClient) -> AsyncIterator[Tenant]:
    ns = f"rn-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(rn_api)
    await core.create_namespace(
        k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                name=ns,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            )
        )
    )
    await core.create_namespaced_secret(
        ns,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="s3-credentials"),
            string_data={"AWS_ACCESS_KEY_ID": S3_ACCESS, "AWS_SECRET_ACCESS_KEY": S3_SECRET},
        ),
    )
    bucket = f"rn-{uuid.uuid4().hex[:12]}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=realnode_cluster.s3.endpoint,
        region_name=MOTO_REGION,
        aws_access_key_id=S3_ACCESS,
        aws_secret_access_key=S3_SECRET,
    ).create_bucket(Bucket=bucket)
    realnode_cluster.openbao.jwt_role(
        mount=JWT_MOUNT,
        role=ns,
        subject=f"system:serviceaccount:{ns}:default",
        audience="openbao",
    )
    yield Tenant(world=realnode_cluster, api=rn_api, namespace=ns, bucket=bucket)
    await core.delete_namespace(ns)
