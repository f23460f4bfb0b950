"""``python -m devenv up|demo``: the local development environment and the main job.

``up`` brings up, on 127.0.0.1 only: the real control plane (etcd, kube-apiserver,
kube-controller-manager), the local node agent, a real OpenBao (initialised, unsealed) and the
storage servers; applies the CRDs; prints how to reach everything; stops all of it by PID on
exit. ``--check`` runs a short smoke check (a Job through the real Job controller) and exits.
``up --real-node`` (root) runs a real node instead of the node agent (``devenv.realnode``:
containerd, kubelet, kube-proxy, kube-scheduler, pods on a bridge with no route off the machine)
and forwards OpenBao and the storage servers onto the pod bridge; its ``--check`` runs the Job
as a real container.

``demo`` is the main job on the local default: the same environment with S3 only, plus the
controller, a sample OpenBaoCluster, a manual backup triggered with kubectl, its progress,
``kubectl get openbaoclusters,openbaobackups``, the object in the bucket and the backup
metrics. ``--keep`` leaves everything running afterwards until Ctrl-C.

Dev/test infrastructure, not product code.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from devenv.controlplane import ControlPlane
from devenv.crds import CRD_DIR
from devenv.nodeagent import LOCAL_NODE_LABEL, NodeAgentProcess
from devenv.openbao import OpenBao, start_openbao
from devenv.procs import ServerError
from devenv.storage import StorageServer, start_azurite, start_fake_gcs, start_moto

if TYPE_CHECKING:
    from devenv.realnode import RealNode

ROOT = Path(__file__).resolve().parents[2]


class Env:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cp: ControlPlane | None = None
        self.agent: NodeAgentProcess | None = None
        self.bao: OpenBao | None = None
        self.storage: dict[str, StorageServer] = {}
        self.node: RealNode | None = None

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        assert self.cp is not None
        proc = self.cp.run_kubectl(*args, stdin=stdin)
        if check and proc.returncode != 0:
            raise ServerError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def up(self, *, storage: tuple[str, ...], real_node: bool = False) -> None:
        t0 = time.monotonic()
        if real_node:
            self._up_real_node()
        else:
            self.cp = ControlPlane(workdir=self.workdir / "control-plane").start()
            step(f"control plane ready at {self.cp.server} ({time.monotonic() - t0:.1f}s)")
            self.agent = NodeAgentProcess(
                kubeconfig=self.cp.kubeconfig, workdir=self.workdir / "node-agent"
            ).start()
            step(f"node agent ready: Node {self.agent.node_name} ({time.monotonic() - t0:.1f}s)")
        self.kubectl("apply", "-f", str(CRD_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        step("CRDs applied and established")
        self.bao = start_openbao(self.workdir)
        step(f"OpenBao initialised and unsealed at {self.bao.addr}")
        starters = {"s3": start_moto, "gcs": start_fake_gcs, "azure": start_azurite}
        for name in storage:
            self.storage[name] = starters[name](self.workdir)
            step(f"{name} server at {self.storage[name].endpoint}")
        if self.node is not None:
            urls = {"OpenBao": self.bao.addr} | {n: s.endpoint for n, s in self.storage.items()}
            for name, url in urls.items():
                parts = urlsplit(url)
                addr, port = self.node.expose(parts.port or 80)
                step(f"pods reach {name} at {parts.scheme}://{addr}:{port}")
        step(f"all up in {time.monotonic() - t0:.1f}s")

    def _up_real_node(self) -> None:
        from devenv.realnode import RealNode

        t0 = time.monotonic()
        self.node = RealNode.prepare(workdir=self.workdir / "real-node")
        self.cp = ControlPlane(
            workdir=self.workdir / "control-plane", **self.node.control_plane_options()
        ).start()
        step(f"control plane ready at {self.cp.server} ({time.monotonic() - t0:.1f}s)")
        self.node.start(control_plane=self.cp)
        step(
            f"real node ready: Node {self.node.node_name}, pods on {self.node.pod_subnet} "
            f"(gateway {self.node.gateway}, no route off the machine) "
            f"({time.monotonic() - t0:.1f}s)"
        )

    def down(self) -> None:
        for srv in self.storage.values():
            srv.stop()
        for thing in (self.bao, self.agent, self.node, self.cp):
            if thing is not None:
                thing.stop()

    def smoke_real_node(self) -> None:
        """A Job through the real Job controller, as a real container on the real node."""
        from devenv.realnode_images import probe_image

        assert self.node is not None
        probe = probe_image()
        self.node.import_image(probe.archive, probe.ref)
        container = {
            "name": "hello",
            "image": probe.ref,
            "imagePullPolicy": "Never",
            "args": ["echo", "hello from a real container", "report"],
        }
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        self.kubectl("wait", "--for=condition=Complete", "--timeout=90s", "job/hello")
        print(self.kubectl("logs", "job/hello"), flush=True)
        print(self.kubectl("get", "nodes,jobs,pods", "-o", "wide"), flush=True)

    def smoke(self) -> None:
        """A Job through the real Job controller and the node agent."""
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {LOCAL_NODE_LABEL: "true"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "hello",
                                "image": "python:3.11-slim",
                                "command": ["python", "-c", "print('hello from a Job pod')"],
                            }
                        ],
                    },
                },
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        self.kubectl("wait", "--for=condition=Complete", "--timeout=60s", "job/hello")
        print(self.kubectl("get", "nodes,jobs,pods", "-o", "wide"), flush=True)


def demo(env: Env, *, keep: bool, stop: threading.Event) -> int:
    from devenv.controller import ControllerProcess
    from devenv.controlplane import SA_ISSUER
    from devenv.storage import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY

    assert env.cp is not None
    assert env.cp.pki is not None
    assert env.bao is not None
    s3 = env.storage["s3"]
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        region_name=MOTO_REGION,
    )
    client.create_bucket(Bucket="openbao-backups")
    env.bao.setup_jwt_auth(
        mount="jwt", public_key_pem=env.cp.pki.sa_pub.read_text(), issuer=SA_ISSUER
    )
    env.bao.jwt_role(
        mount="jwt",
        role="backup",
        audience="openbao",
        subject="system:serviceaccount:demo:openbao-backup",
    )
    env.bao.kv_put("demo/db", {"password": "s3cr3t"})
    step("OpenBao: JWT auth trusts the cluster's service-account tokens; role 'backup'")
    ctl = ControllerProcess(kubeconfig=env.cp.kubeconfig, workdir=env.workdir).start()
    step(f"controller running (python -m controller), metrics at {ctl.url}/metrics")
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "openbao-backup", "namespace": "demo"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-credentials", "namespace": "demo"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
            },
        },
        {
            "apiVersion": "backup.openbao.org/v1alpha1",
            "kind": "OpenBaoCluster",
            "metadata": {"name": "vault", "namespace": "demo"},
            "spec": {
                "address": env.bao.addr,
                "backup": {
                    "schedule": "0 */6 * * *",
                    "timeZone": "Europe/Berlin",
                    "target": {
                        "provider": "s3",
                        "endpoint": s3.endpoint,
                        "bucket": "openbao-backups",
                        "region": MOTO_REGION,
                        "pathPrefix": "openbao",
                        "credentialsSecretRef": {"name": "s3-credentials"},
                    },
                    "auth": {"jwt": {"role": "backup", "audience": "openbao"}},
                    "retention": {"maxCount": 7, "maxAge": "30d"},
                    "executor": {
                        "serviceAccountName": "openbao-backup",
                        "podLabels": {LOCAL_NODE_LABEL: "true"},
                    },
                },
            },
        },
    ]
    for doc in manifests:
        env.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    step(
        "applied namespace demo, a ServiceAccount, the S3 credentials Secret and "
        "OpenBaoCluster demo/vault (schedule '0 */6 * * *' Europe/Berlin, retention 7/30d)"
    )
    step("kubectl -n demo annotate openbaocluster vault backup.openbao.org/trigger=demo-1")
    env.kubectl(
        "-n",
        "demo",
        "annotate",
        "openbaocluster",
        "vault",
        "backup.openbao.org/trigger=demo-1",
        "--overwrite",
    )
    deadline = time.monotonic() + 180
    last = ""
    phase = ""
    while time.monotonic() < deadline and not stop.is_set():
        out = env.kubectl(
            "-n",
            "demo",
            "get",
            "openbaobackups",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{'\\n'}{end}",
            check=False,
        ).strip()
        if out and out != last:
            step(f"progress: {out}")
            last = out
        phase = out.split()[-1] if out.split() else ""
        if phase in ("Succeeded", "Failed"):
            break
        stop.wait(0.5)
        ctl.check_alive()
    print(
        env.kubectl("-n", "demo", "get", "openbaoclusters,openbaobackups", "-o", "wide"), flush=True
    )
    step("objects in s3://openbao-backups:")
    for obj in client.list_objects_v2(Bucket="openbao-backups").get("Contents", []):
        print(f"    {obj['Size']:>10}  {obj['Key']}", flush=True)
    step("backup metrics:")
    for line in ctl.metrics().splitlines():
        if (
            line.startswith("openbao_backup_")
            and 'cluster="vault"' in line
            and ("bucket" not in line)
        ):
            print(f"    {line}", flush=True)
    if phase != "Succeeded":
        step(
            f"backup did not succeed (phase {phase or 'unknown'}); controller log: "
            f"{ctl.server.log_path if ctl.server else '?'}"
        )
        ctl.stop()
        return 1
    step("backup verified and stored")
    if keep:
        step(f"export KUBECONFIG={env.cp.kubeconfig}; kubectl: {env.cp.kubectl}")
        step("running; Ctrl-C to stop")
        while not stop.is_set():
            stop.wait(1.0)
    ctl.stop()
    return 0


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    parser.add_argument("command", choices=["up", "demo"])
    parser.add_argument("--keep", action="store_true", help="demo: keep running afterwards")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--storage", default="s3,gcs,azure", help="comma list of s3,gcs,azure")
    parser.add_argument("--check", action="store_true", help="smoke-check and exit")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: a real node (containerd, kubelet, kube-proxy, kube-scheduler; needs root) "
        "instead of the node agent",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="obb-dev-"))
    env = Env(workdir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.command == "demo":
            env.up(storage=("s3",))
            return demo(env, keep=args.keep, stop=stop)
        env.up(storage=tuple(s for s in args.storage.split(",") if s), real_node=args.real_node)
        if args.check:
            if args.real_node:
                env.smoke_real_node()
            else:
                env.smoke()
            return 0
        assert env.cp is not None
        step(f"export KUBECONFIG={env.cp.kubeconfig}")
        step(f"kubectl: {env.cp.kubectl}")
        if env.bao is not None:
            step(f"OpenBao root token and unseal key: {workdir}/openbao-credentials.json")
            (workdir / "openbao-credentials.json").write_text(
                json.dumps(
                    {
                        "addr": env.bao.addr,
                        "root_token": env.bao.root_token,
                        "unseal_key": env.bao.unseal_key,
                    }
                )
            )
        step("running; Ctrl-C to stop")
        while not stop.is_set():
            stop.wait(1.0)
            env.cp.check_alive()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        step("stopping")
        env.down()


if __name__ == "__main__":
    sys.exit(main())
