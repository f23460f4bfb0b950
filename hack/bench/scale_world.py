"""The world of the scale benchmark: the shipped RBAC, the controller's ServiceAccount token, N
clusters due at one window, a stand-in for the executor pods, and the raw client it is
compared with.

Guarantees:

* :func:`install_rbac` applies the ServiceAccount, (Cluster)Roles and bindings of
  ``manifests/install.yaml`` exactly as rendered from the chart, and
  :func:`controller_kubeconfig` authenticates as that ServiceAccount (a TokenRequest), so the
  controller runs with the permissions users give it and its requests are told apart from
  the bench's in the audit log;
* :class:`Executors` plays the kubelet for executor pods (bind to a fake Node, write a
  terminated container with a valid executor report, as the in-process harness does) once a
  pod has been seen for ``hold`` seconds and its record is ``Running``; it records when each
  Job's pod ended;
* :func:`raw_client` launches backups as a plain client would, under the same token bucket
  the controller uses, as fast as that bucket allows: the minimal write set (the record, the
  Lease, the Job) or the controller's whole launch set (:data:`LAUNCH_SET`).

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import yaml
from devenv.controlplane import ControlPlane

from controller import errors
from controller.backup.decide.vocabulary import JOB_NAME_LABEL
from controller.kube.client import KubeApi, TokenBucket
from controller.kube.resources import BACKUP_GROUP as GROUP
from controller.kube.resources import BACKUP_VERSION as VERSION
from tests.inprocess.harness import Cluster, Kube, terminate_pod

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "manifests" / "install.yaml"
RELEASE_NS = "openbao-backup-system"
SERVICE_ACCOUNT = "openbao-backup-controller"
LEADER_LEASE = "openbao-backup-controller"  # the only name the chart's Role lets it update
USER = f"system:serviceaccount:{RELEASE_NS}:{SERVICE_ACCOUNT}"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": f"{RBAC}/clusterroles",
    "ClusterRoleBinding": f"{RBAC}/clusterrolebindings",
    "Role": f"{RBAC}/namespaces/{{ns}}/roles",
    "RoleBinding": f"{RBAC}/namespaces/{{ns}}/rolebindings",
}
POLL_SECONDS = 1.0
"""How often the stand-in executor lists pods: finer ends runs closer to ``hold``, costs the
API server a list of every executor pod each time."""


async def install_rbac(api: KubeApi) -> None:
    for doc in yaml.safe_load_all(INSTALL.read_text()):
        if not doc or doc.get("kind") not in _PATHS:
            continue
        ns = doc["metadata"].get("namespace", "")
        with contextlib.suppress(errors.AlreadyExists):
            await api.create(path=_PATHS[doc["kind"]].format(ns=ns), body=doc)


def controller_kubeconfig(cp: ControlPlane, path: Path) -> Path:
    return cp.service_account_kubeconfig(
        namespace=RELEASE_NS, name=SERVICE_ACCOUNT, path=path, expiration_seconds=86400
    )


def daily(window: dt.datetime) -> str:
    """A UTC schedule due every day at ``window``'s hour and minute."""
    return f"{window.minute} {window.hour} * * *"


NEVER_DURING_A_RUN = "0 0 1 1 *"
"""A schedule that is not due while the bench runs (unless it runs at New Year)."""


async def create_clusters(
    kube: Kube, *, namespace: str, n: int, addr: str, schedule: str, prefix: str = "c"
) -> None:
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        c = Cluster(
            kube=kube, namespace=namespace, name=cluster_name(i, prefix=prefix), openbao_addr=addr
        )
        body = c.body()
        body["spec"]["backup"]["schedule"] = schedule
        async with sem:
            await kube.api.create(path=f"{c.base}/openbaoclusters", body=body)

    await asyncio.gather(*(one(i) for i in range(n)))


def cluster_name(i: int, *, prefix: str = "c") -> str:
    return f"{prefix}{i:05d}"


class Executors:
    def __init__(self, kube: Kube, *, namespace: str, hold: float) -> None:
        self._kube = kube
        self._ns = namespace
        self.hold = hold
        self.seen: dict[str, float] = {}  # pod uid -> first seen
        self.ended: dict[str, float] = {}  # Job name -> when its pod ended
        self._sem = asyncio.Semaphore(20)

    async def run(self) -> None:
        records = f"/apis/{GROUP}/{VERSION}/namespaces/{self._ns}/openbaobackups"
        async with asyncio.TaskGroup() as tg:
            while True:
                pods = await self._kube.items(
                    f"/api/v1/namespaces/{self._ns}/pods", selector=JOB_NAME_LABEL
                )
                running = {
                    r["metadata"]["name"]
                    for r in await self._kube.items(records)
                    if (r.get("status") or {}).get("phase") == "Running"
                }
                now = time.time()
                for pod in pods:
                    meta = pod["metadata"]
                    job = (meta.get("labels") or {}).get(JOB_NAME_LABEL, "")
                    first = self.seen.setdefault(str(meta["uid"]), now)
                    phase = (pod.get("status") or {}).get("phase") or "Pending"
                    if job in self.ended or phase != "Pending" or meta.get("deletionTimestamp"):
                        continue
                    record = job.removesuffix("-backup")
                    if now - first >= self.hold and record in running:
                        self.ended[job] = now  # claimed; the time is set when it ends
                        tg.create_task(self._end(pod, job))
                await asyncio.sleep(POLL_SECONDS)

    async def _end(self, pod: dict[str, Any], job: str) -> None:
        async with self._sem:
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await terminate_pod(self._kube, pod)
            self.ended[job] = time.time()


LAUNCH_SET = (
    "create openbaobackups",
    "create leases",
    "create jobs",
    "patch openbaobackups/status",
    "patch openbaoclusters/status",
    "create events",
)
"""What the controller writes to launch one scheduled backup (docs/backup-manager.md, "API
writes per backup"): the raw client's ``same`` set. The first three are the ``minimal`` set."""


async def raw_client(
    api: KubeApi, *, namespace: str, n: int, qps: float, burst: int, writes: int
) -> float:
    """Seconds a raw client takes to launch n backups, writing the first ``writes`` kinds of
    :data:`LAUNCH_SET` per backup in order under one qps/burst bucket (the clusters it patches
    are created first, unthrottled)."""
    throttled = api.with_throttle(TokenBucket(qps=qps, burst=burst))
    group = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}"
    kube = Kube(api)
    if writes > 4:
        await create_clusters(kube, namespace=namespace, n=n, addr="http://127.0.0.1:9",
                              schedule=NEVER_DURING_A_RUN, prefix="r")  # fmt: skip
    start = time.monotonic()

    async def one(i: int) -> None:
        name = cluster_name(i, prefix="r")
        bodies: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", f"{group}/openbaobackups", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "OpenBaoBackup",
                "metadata": {"name": name}, "spec": {"cluster": name, "trigger": "scheduled"}}),
            ("POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                "spec": {"holderIdentity": "raw", "leaseDurationSeconds": 60}}),
            ("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", {
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "example.invalid/x"}]}}}}),
            ("PATCH", f"{group}/openbaobackups/{name}/status",
                {"status": {"phase": "Running", "jobName": name}}),
            ("PATCH", f"{group}/openbaoclusters/{name}/status",
                {"status": {"backup": {"nextScheduledBackup": "2030-01-01T00:00:00Z"}}}),
            ("POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", {
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": f"{name}.raw"}, "eventTime": "2026-01-01T00:00:00.000000Z",
                "reportingController": "raw", "reportingInstance": "raw", "action": "Reconcile",
                "reason": "BackupStarted", "note": "raw", "type": "Normal",
                "regarding": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OpenBaoBackup",
                              "name": name, "namespace": namespace}}),
        ]  # fmt: skip
        for method, path, body in bodies[:writes]:
            if method == "POST":
                await throttled.create(path=path, body=body)
            else:
                await throttled.merge_patch(path=path, body=body)

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - start
