"""The node agent as a subprocess, for tests and dev (part of ``devenv.nodeagent``).

Guarantees:

* ``start`` runs ``python -m devenv.nodeagent`` (this interpreter, ``hack/`` on PYTHONPATH) as
  a ``devenv.procs.Server`` logging to ``<workdir>/nodeagent.log``, and returns only once the
  Node is Ready AND annotated with this process's PID (not a previous agent's Node).
* ``stop`` stops it by PID, giving it ``max_grace`` + 15 s to stop its pods first.
* ``pod_dir`` names the directory the agent keeps a pod's logs, PID files and volumes in.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from devenv.nodeagent_kube import load_kubeconfig, sync_get
from devenv.nodeagent_node import LOCAL_NODE_LABEL, PID_ANNOTATION
from devenv.procs import Server

HACK_DIR = Path(__file__).resolve().parent.parent


@dataclass
class NodeAgentProcess:
    """The agent as a subprocess (``devenv.procs.Server``), stopped by PID."""

    kubeconfig: Path
    workdir: Path
    node_name: str = "devenv-node"
    label_selector: str = f"{LOCAL_NODE_LABEL}=true"
    max_grace: float = 5.0
    server: Server | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "nodeagent.log"

    def pod_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.workdir / "pods" / f"{namespace}_{name}_{uid}"

    def start(self, timeout: float = 30.0) -> NodeAgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HACK_DIR), env.get("PYTHONPATH", "")) if p
        )
        argv = [
            sys.executable,
            "-m",
            "devenv.nodeagent",
            "--kubeconfig",
            str(self.kubeconfig),
            "--node-name",
            self.node_name,
            "--workdir",
            str(self.workdir),
            "--label-selector",
            self.label_selector,
            "--max-grace",
            str(self.max_grace),
        ]
        self.server = Server("node-agent", argv, self.log_path, env=env).start()
        auth = load_kubeconfig(self.kubeconfig)
        pid = str(self.server.pid)

        def ready() -> bool:
            node = sync_get(auth, f"/api/v1/nodes/{self.node_name}")
            if node is None or node["metadata"].get("annotations", {}).get(PID_ANNOTATION) != pid:
                return False
            conds = node.get("status", {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        self.server.wait_until(ready, timeout=timeout, what=f"Node {self.node_name} Ready")
        return self

    def check_alive(self) -> None:
        assert self.server is not None
        self.server.check_alive()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=self.max_grace + 15)
