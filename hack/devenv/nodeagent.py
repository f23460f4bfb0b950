"""The local node agent: a stand-in kubelet that runs Job pods as local processes.

Guarantees (each stated in full by the module that keeps it):

* Node: registered Ready (capacity/allocatable from this host), heartbeat by a Lease in
  ``kube-node-lease`` and the Ready condition's lastHeartbeatTime; Ready=False on clean stop
  (``devenv.nodeagent_node``).
* Scheduling and watch: opted-in pods are bound to this node, every pod is its own asyncio task,
  the watch survives time-outs, 410 and errors (``devenv.nodeagent_watch``).
* Running: the pod's lifecycle, ``activeDeadlineSeconds``, deletion and agent restarts
  (``devenv.nodeagent_runner``); each container a local process that dies with the agent
  (``devenv.nodeagent_launch``).
* Environment, command and the PATH MAPPING CONTRACT the product's executor relies on
  (``devenv.nodeagent_spec``); Secret/ConfigMap/downward API values
  (``devenv.nodeagent_sources``); volumes (``devenv.nodeagent_volumes``).
* Status like a kubelet's (``devenv.nodeagent_status``), written with retries until the final
  one lands (``devenv.nodeagent_writes``).
* SIGTERM/SIGINT: stop every container (pods marked Failed), Node Ready=False, exit 0. Logs go
  to stderr; secret values are never logged.
* NOT ENFORCED (a real node does this; the real-node lane, not this agent, proves it): there is
  no network namespace per pod: every container shares the host's loopback, so a server a
  container binds to 127.0.0.1 (a restore drill's scratch OpenBao) is reachable by other pods
  and the host, and two pods cannot use one port at once (tests pick free ports); images,
  securityContext (user, read-only root, capabilities, seccomp), resource limits and OOM
  kills are not applied; multi-container pods and emptyDir volumes are run and shared as a
  pod would (containers run concurrently, an emptyDir is one directory of the pod).

Pod directories are kept after the pod ends (logs for debugging); they hold secret material,
so the workdir is private (0700) and must be a throwaway test directory.

Why: this machine has no container runtime, so no kubelet can run. With the real control plane
from ``devenv.controlplane`` (etcd, kube-apiserver, kube-controller-manager, no scheduler) Job
pods would stay Pending forever. This agent registers a Node, binds opted-in pods to it, runs
each container's command locally and reports pod status the way a kubelet does, so the REAL Job
controller marks Jobs Complete or Failed. Dev/test infrastructure, not product code.

Run: ``PYTHONPATH=hack python -m devenv.nodeagent --kubeconfig PATH --node-name NAME
[--workdir DIR] [--label-selector SEL]``. Tests use ``NodeAgentProcess``
(``devenv.nodeagent_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path

from devenv.nodeagent_kube import KubeClient, load_kubeconfig
from devenv.nodeagent_node import LOCAL_NODE_LABEL
from devenv.nodeagent_process import HACK_DIR, NodeAgentProcess
from devenv.nodeagent_spec import service_env
from devenv.nodeagent_watch import NodeAgent

__all__ = ["HACK_DIR", "LOCAL_NODE_LABEL", "NodeAgent", "NodeAgentProcess", "main", "service_env"]


async def _amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kube = KubeClient(load_kubeconfig(Path(args.kubeconfig)))
    agent = NodeAgent(
        kube,
        args.node_name,
        args.workdir,
        args.label_selector,
        max_grace=args.max_grace,
        heartbeat=args.heartbeat,
    )
    try:
        await agent.run(stop)
    finally:
        await kube.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devenv.nodeagent", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--label-selector", default=f"{LOCAL_NODE_LABEL}=true")
    parser.add_argument(
        "--max-grace",
        type=float,
        default=5.0,
        help="cap on terminationGracePeriodSeconds when stopping a container",
    )
    parser.add_argument("--heartbeat", type=float, default=10.0)
    args = parser.parse_args(argv)
    default_workdir = Path(tempfile.gettempdir()) / f"devenv-nodeagent-{args.node_name}"
    args.workdir = Path(args.workdir or default_workdir).resolve()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
