"""``python -m devenv up``: the local development environment, up until Ctrl-C.

Brings up, on 127.0.0.1 only: the real control plane (etcd, kube-apiserver,
kube-controller-manager), the local node agent, a real OpenBao (initialised, unsealed) and the
storage servers; applies the CRDs; prints how to reach everything; stops all of it by PID on
exit. ``--check`` runs a short smoke check (a Job through the real Job controller) and exits.

Dev/test infrastructure, not product code.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from devenv.controlplane import ControlPlane
from devenv.nodeagent import LOCAL_NODE_LABEL, NodeAgentProcess
from devenv.openbao import OpenBao, start_openbao
from devenv.procs import ServerError
from devenv.storage import StorageServer, start_azurite, start_fake_gcs, start_moto

ROOT = Path(__file__).resolve().parents[2]


class Env:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cp: ControlPlane | None = None
        self.agent: NodeAgentProcess | None = None
        self.bao: OpenBao | None = None
        self.storage: dict[str, StorageServer] = {}

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        assert self.cp is not None
        proc = subprocess.run(
            [str(self.cp.kubectl), "--kubeconfig", str(self.cp.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ServerError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def up(self, *, storage: tuple[str, ...]) -> None:
        t0 = time.monotonic()
        self.cp = ControlPlane(workdir=self.workdir / "control-plane").start()
        step(f"control plane ready at {self.cp.server} ({time.monotonic() - t0:.1f}s)")
        self.agent = NodeAgentProcess(
            kubeconfig=self.cp.kubeconfig, workdir=self.workdir / "node-agent"
        ).start()
        step(f"node agent ready: Node {self.agent.node_name} ({time.monotonic() - t0:.1f}s)")
        self.kubectl("apply", "-f", str(ROOT / "manifests" / "crds"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        step("CRDs applied and established")
        self.bao = start_openbao(self.workdir)
        step(f"OpenBao initialised and unsealed at {self.bao.addr}")
        starters = {"s3": start_moto, "gcs": start_fake_gcs, "azure": start_azurite}
        for name in storage:
            self.storage[name] = starters[name](self.workdir)
            step(f"{name} server at {self.storage[name].endpoint}")
        step(f"all up in {time.monotonic() - t0:.1f}s")

    def down(self) -> None:
        for srv in self.storage.values():
            srv.stop()
        for thing in (self.bao, self.agent, self.cp):
            if thing is not None:
                thing.stop()

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


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--storage", default="s3,gcs,azure", help="comma list of s3,gcs,azure")
    parser.add_argument("--check", action="store_true", help="smoke-check and exit")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="obb-dev-"))
    env = Env(workdir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        env.up(storage=tuple(s for s in args.storage.split(",") if s))
        if args.check:
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
