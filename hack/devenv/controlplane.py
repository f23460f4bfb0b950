"""A real local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

The binaries are built from their published Go modules by ``hack/build-control-plane.sh`` and
cached outside the repository (``~/.cache/openbao-backup/control-plane/<versions>/``).

Guarantees:

* every component listens on 127.0.0.1 on a free port, runs in its own session and is stopped
  by PID; ``start()`` returns only when ``/readyz`` answers ``ok`` and the controller manager
  is serving (the ``default`` ServiceAccount exists in ``default``);
* the apiserver runs with RBAC, a client-cert admin identity (``system:masters``) and a
  service-account issuer with signing keys, so TokenRequest and projected tokens work;
  ``service_account_kubeconfig()`` writes a kubeconfig that authenticates as a
  ServiceAccount (a token from a TokenRequest), so RBAC applies to its holder;
* the controller manager runs the job, ttl-after-finished, garbage-collector, namespace,
  serviceaccount(+token) and root-CA publisher controllers;
* ``restart_apiserver()`` stops and restarts kube-apiserver on the same port (for watch
  recovery tests) without touching etcd.

By default there is no scheduler and no kubelet: see ``devenv.nodeagent`` for the local node
agent. Opt-in, for a real node (``devenv.realnode``; ``RealNode.control_plane_options()`` gives
the arguments): ``advertise_address`` (the pod bridge gateway; the ``kubernetes`` Service's
endpoint), ``serving_ips`` (extra SANs), ``kubelet_access`` (the apiserver's kubelet client cert,
the kubelet serving certs verified against the CA, InternalIP first), ``extra_controllers``
(e.g. ``REAL_NODE_CONTROLLERS``), ``scheduler`` (kube-scheduler on the admin kubeconfig, no
listening port) and ``audit`` (the apiserver's audit log, ``devenv.audit``). With none of them
the control plane is exactly as described above.
Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from devenv.audit import audit_flags
from devenv.certs import Pki, make_pki
from devenv.procs import Server, ServerError, cached_build, free_port

HACK = Path(__file__).resolve().parent.parent
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KCM_CONTROLLERS = ",".join(
    [
        "job-controller",
        "ttl-after-finished-controller",
        "garbage-collector-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "root-ca-certificate-publisher-controller",
        "pod-garbage-collector-controller",
    ]
)
# What a real node additionally needs: workloads (deployment, replicaset, statefulset, daemonset,
# cronjob), Service endpoints for kube-proxy, node health (node-lifecycle removes the
# not-ready taint; taint-eviction acts on NoExecute), PodDisruptionBudgets, and the rules of the
# aggregated admin/edit/view ClusterRoles.
REAL_NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "cronjob-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "disruption-controller",
    "clusterrole-aggregation-controller",
)


class ControlPlaneOptions(TypedDict, total=False):
    """Keyword arguments of ``ControlPlane`` beyond its defaults (see the module docstring)."""

    advertise_address: str
    serving_ips: tuple[str, ...]
    kubelet_access: bool
    extra_controllers: tuple[str, ...]
    scheduler: bool


def binaries_dir() -> Path:
    """The directory with kube-apiserver, kube-controller-manager, kubectl and etcd."""
    override = os.environ.get("OPENBAO_BACKUP_CP_BIN")
    if override:
        return Path(override)
    return cached_build(HACK / "build-control-plane.sh")


@dataclass
class ControlPlane:
    workdir: Path
    bin_dir: Path = field(default_factory=binaries_dir)
    etcd: Server | None = None
    apiserver: Server | None = None
    kcm: Server | None = None
    kube_scheduler: Server | None = None
    pki: Pki | None = None
    etcd_url: str = ""
    api_port: int = 0
    kubeconfig: Path = field(init=False)
    # Opt-in for a real node; the defaults keep the control plane as it always was.
    advertise_address: str = "127.0.0.1"
    serving_ips: tuple[str, ...] = ()
    kubelet_access: bool = False
    extra_controllers: tuple[str, ...] = ()
    scheduler: bool = False
    audit: bool = False  # the apiserver's audit log (devenv.audit)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    def run_kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` as admin against this control plane; the caller reads the exit."""
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
            timeout=timeout,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        names = ["etcd", "kube-apiserver", "kube-controller-manager"]
        for name in names + (["kube-scheduler"] if self.scheduler else []):
            if not (self.bin_dir / name).exists():
                raise ServerError(f"{name} missing in {self.bin_dir}")
        if self.serving_ips or self.kubelet_access:
            self.pki = make_pki(
                self.workdir / "pki", extra_ips=self.serving_ips, kubelet_client=self.kubelet_access
            )
        else:
            self.pki = make_pki(self.workdir / "pki")
        self._start_etcd()
        self.api_port = free_port()
        self._write_kubeconfig()
        self._start_apiserver()
        self._start_kcm()
        if self.scheduler:
            self._start_scheduler()
        return self

    def stop(self) -> None:
        for srv in (self.kube_scheduler, self.kcm, self.apiserver, self.etcd):
            if srv is not None:
                srv.stop()

    def restart_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.stop()
        self._start_apiserver()

    def check_alive(self) -> None:
        for srv in (self.etcd, self.apiserver, self.kcm, self.kube_scheduler):
            if srv is not None:
                srv.check_alive()

    # -- components -----------------------------------------------------------------------

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self.etcd = Server(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name",
                "local",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"local=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--election-timeout",
                "100",
                "--heartbeat-interval",
                "20",
                "--log-level",
                "warn",
            ],
            self.workdir / "etcd.log",
        ).start()
        self.etcd.wait_until(self._etcd_healthy, timeout=30, what="etcd /health")

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=1) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")

    def _start_apiserver(self) -> None:
        pki = self.pki
        assert pki is not None
        self.apiserver = Server(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                f"--advertise-address={self.advertise_address}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
                *self._kubelet_flags(),
                *(audit_flags(self.workdir) if self.audit else []),
            ],
            self.workdir / "kube-apiserver.log",
        ).start()
        self.apiserver.wait_until(self._readyz, timeout=90, what="/readyz")

    def _kubelet_flags(self) -> list[str]:
        pki = self.pki
        if not self.kubelet_access or pki is None:
            return []
        assert pki.kubelet_client_cert is not None
        assert pki.kubelet_client_key is not None
        return [
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.pki
        assert pki is not None
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return ctx

    def _readyz(self) -> bool:
        req = urllib.request.Request(f"{self.server}/readyz")
        with urllib.request.urlopen(req, timeout=2, context=self._ssl_context()) as resp:
            return bool(resp.read().strip() == b"ok")

    def get(self, path: str) -> dict[str, object]:
        """GET an API path as admin (loopback, for readiness probes and tests)."""
        return self._admin(path)

    def _admin(self, path: str, *, body: dict[str, object] | None = None) -> dict[str, Any]:
        """GET ``path`` as admin, or POST ``body`` (JSON) to it; the decoded answer."""
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={} if body is None else {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5, context=self._ssl_context()) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def _start_kcm(self) -> None:
        pki = self.pki
        assert pki is not None
        self.kcm = Server(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join([KCM_CONTROLLERS, *self.extra_controllers])}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--concurrent-job-syncs=5",
                "--v=1",
            ],
            self.workdir / "kube-controller-manager.log",
        ).start()

        def default_sa() -> bool:
            self.get("/api/v1/namespaces/default/serviceaccounts/default")
            return True

        self.kcm.wait_until(default_sa, timeout=60, what="default ServiceAccount")

    def _start_scheduler(self) -> None:
        self.kube_scheduler = Server(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
            self.workdir / "kube-scheduler.log",
        ).start()

        def scheduler_running() -> bool:
            # The scheduler has no port here: it is up once it has not died for a moment and
            # the apiserver answers (it needs nothing else to start scheduling).
            return self._readyz()

        self.kube_scheduler.wait_until(scheduler_running, timeout=30, what="kube-scheduler")

    def token_kubeconfig(self, *, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return self._kubeconfig(path=path, user={"token": token})

    def service_account_kubeconfig(
        self, *, namespace: str, name: str, path: Path, expiration_seconds: int
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount ``namespace/name``, with a token
        the API server issues for it (a TokenRequest made as admin) valid for
        ``expiration_seconds``: the permissions are exactly those RBAC grants that account."""
        got = self._admin(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return self.token_kubeconfig(path=path, token=str(got["status"]["token"]))

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        assert pki is not None
        self._kubeconfig(
            path=self.kubeconfig,
            user={"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)},
        )

    def _kubeconfig(self, *, path: Path, user: dict[str, str]) -> Path:
        pki = self.pki
        assert pki is not None
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(pki.ca_cert)},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(cfg, indent=2))
        path.chmod(0o600)
        return path
