"""The local node agent: a stand-in kubelet that runs Job pods as local processes.

Why: this machine has no container runtime, so no kubelet can run. With the real control plane
from ``devenv.controlplane`` (etcd, kube-apiserver, kube-controller-manager, no scheduler) Job
pods would stay Pending forever. This agent registers a Node, binds opted-in pods to it, runs
each container's command locally and reports pod status the way a kubelet does, so the REAL Job
controller marks Jobs Complete or Failed. Dev/test infrastructure, not product code.

Run: ``PYTHONPATH=hack python -m devenv.nodeagent --kubeconfig PATH --node-name NAME
[--workdir DIR] [--label-selector SEL]``. Tests use ``NodeAgentProcess``.

Guarantees:

* Node: registered Ready (capacity/allocatable from this host), heartbeat by a Lease in
  ``kube-node-lease`` and the Ready condition's lastHeartbeatTime; Ready=False on clean stop.
* Scheduling: pods matching ``--label-selector`` (default ``devenv.openbao-backup/local-node=true``,
  set it in the Job's pod template) that are Pending and unscheduled are bound to this node
  (pods/binding). Pods bound to the node by other means are run only if they match too.
* Running: init containers one after another, then all containers concurrently; each is
  ``command + args`` (``$(VAR)`` expanded; there is no image, so a container without
  ``command`` fails the pod) as a subprocess in its own session, stopped by PID (SIGTERM,
  grace = min(pod grace, ``--max-grace``), SIGKILL to the group). A leading ``python`` /
  ``python3`` (any directory) becomes this agent's ``sys.executable`` (the venv).
  Each process gets a parent-death signal (SIGKILL), so even a SIGKILLed agent leaves no
  strays. ``restartPolicy`` is always treated as Never. The PID is written to
  ``<pod dir>/<container>.pid``; stdout+stderr go to ``<pod dir>/<container>.log``.
* Environment: only PATH (the venv's bin dir prepended), HOME, LANG, LC_ALL, PYTHONPATH and
  VIRTUAL_ENV come from the host; HOSTNAME=pod name, TMPDIR=``<pod dir>/tmp``,
  KUBERNETES_SERVICE_HOST/PORT (+ _PORT_HTTPS, KUBERNETES_PORT) point at the apiserver;
  then envFrom (secretRef/configMapRef, prefix, optional), then env (value, secretKeyRef,
  configMapKeyRef with ``optional``, fieldRef: metadata.name/namespace/uid, labels['k'],
  annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP(s)/hostIP(s) =
  127.0.0.1). ``DEVENV_POD_ROOT`` = the pod dir. resourceFieldRef is not supported.
* Volumes under ``<workdir>/pods/<ns>_<name>_<uid>/volumes/<volume>/``: emptyDir, secret,
  configMap (items, modes, optional), downwardAPI, projected (secret, configMap,
  downwardAPI, serviceAccountToken via TokenRequest for the pod's service account, bound to
  the pod, with its audience and expirationSeconds, refreshed at 80% of its lifetime).
  hostPath maps to the host path itself; persistentVolumeClaim to ``<workdir>/pvcs/<ns>/<claim>``
  (shared by pods). Missing secrets/configmaps/keys are retried (container waiting
  CreateContainerConfigError); unsupported features fail the pod at once.
* PATH MAPPING CONTRACT (the product's executor relies on it): every env value and every
  command/arg that equals a container volumeMount's mountPath or starts with ``mountPath + "/"``
  is rewritten to the materialised location (``subPath``/``subPathExpr`` respected; the longest
  mountPath wins); an arg ``--flag=VALUE`` is rewritten the same way in its VALUE. An env value
  or arg equal to the container's terminationMessagePath (default ``/dev/termination-log``) is
  rewritten to ``<pod dir>/<container>.termination-log``. Paths hard-coded inside programs and
  workingDir outside a mount are NOT mapped (the cwd is then the pod dir).
* Status (pods/status, strategic merge patch): Pending while preparing / init; Running with
  PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady, Ready, startTime and
  ``containerStatuses[].state.running``; then Succeeded (all exit 0) or Failed with
  ``state.terminated {exitCode, reason Completed|Error|DeadlineExceeded|StartError, message,
  startedAt, finishedAt}``; the message is the termination-message file (max 4096 bytes), or
  with FallbackToLogsOnError, an empty file and a failure, the log tail (80 lines / 2048 bytes).
  Killed by signal N means exit code 128+N.
* ``spec.activeDeadlineSeconds`` is enforced from the pod's start: the processes are stopped,
  the pod Failed with reason DeadlineExceeded. A deleted pod (deletionTimestamp) has its
  processes stopped, gets its terminal status and is then deleted with gracePeriodSeconds=0,
  as a kubelet would (the Job controller still removes its ``batch.kubernetes.io/job-tracking``
  finalizer). A pod found Running on this node that this agent process never ran (agent
  restart) is reported Failed with ContainerStatusUnknown (exit 137).
* NOT ENFORCED (a real node does this; the real-node lane, not this agent, proves it): there is
  no network namespace per pod: every container shares the host's loopback, so a server a
  container binds to 127.0.0.1 (a restore drill's scratch OpenBao) is reachable by other pods
  and the host, and two pods cannot use one port at once (tests pick free ports); images,
  securityContext (user, read-only root, capabilities, seccomp), resource limits and OOM
  kills are not applied; multi-container pods and emptyDir volumes are run and shared as a
  pod would (containers run concurrently, an emptyDir is one directory of the pod).
* Watch: list + watch of pods from the list's resourceVersion, bookmarks, re-watch after a
  server/inactivity time-out, relist after 410 or errors (backoff 0.8 s doubling to 30 s).
  Every pod is its own asyncio task. SIGTERM/SIGINT: stop every container (pods marked
  Failed), Node Ready=False, exit 0. Logs go to stderr; secret values are never logged.

Pod directories are kept after the pod ends (logs for debugging); they hold secret material,
so the workdir is private (0700) and must be a throwaway test directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj, load_kubeconfig, sync_get
from devenv.nodeagent_node import LOCAL_NODE_LABEL, PID_ANNOTATION, LocalNode
from devenv.nodeagent_runner import AgentContext, PodRunner, abandon
from devenv.nodeagent_status import TERMINAL
from devenv.nodeagent_writes import force_delete
from devenv.procs import Server

log = logging.getLogger("nodeagent")
__all__ = ["LOCAL_NODE_LABEL", "NodeAgent", "NodeAgentProcess", "main"]


def service_env(server: str) -> dict[str, str]:
    url = urllib.parse.urlsplit(server)
    host, port = url.hostname or "127.0.0.1", str(url.port or 443)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }


@dataclass
class NodeAgent:
    kube: KubeClient
    node_name: str
    workdir: Path
    selector: str
    max_grace: float = 5.0
    heartbeat: float = 10.0
    runners: dict[str, PodRunner] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ctx: AgentContext = field(init=False)
    _node: LocalNode = field(init=False)

    def __post_init__(self) -> None:
        self._ctx = AgentContext(
            self.kube,
            self.node_name,
            self.workdir,
            self.max_grace,
            service_env(self.kube.auth.server),
        )
        self._node = LocalNode(self.kube, self.node_name)

    # -- pods --------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            await self.kube.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
            log.info("pod %s/%s bound to %s", meta["namespace"], meta["name"], self.node_name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def _start(self, pod: Obj) -> None:
        runner = PodRunner(self._ctx, pod)
        uid = runner.uid
        self.runners[uid] = runner

        def finished(_: asyncio.Task[None]) -> None:
            self.runners.pop(uid, None)
            self.done.add(uid)

        self._spawn(runner.run()).add_done_callback(finished)

    async def on_event(self, etype: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = str(meta["uid"])
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        deleting = bool(meta.get("deletionTimestamp"))
        runner = self.runners.get(uid)
        if etype == "DELETED":
            if runner:
                runner.request_stop("Deleted")
            self.done.discard(uid)
            return
        if not spec.get("nodeName"):
            if not deleting and phase == "Pending":
                await self._bind(pod)
            return
        if spec["nodeName"] != self.node_name:
            return
        if runner:
            runner.observe(pod)
        elif uid in self.done or phase in TERMINAL:
            self.done.add(uid)
            if deleting and meta.get("deletionGracePeriodSeconds") != 0:
                self._spawn(force_delete(self.kube, pod))
        elif deleting or phase != "Pending":
            self.done.add(uid)
            self._spawn(abandon(self._ctx, pod))
        else:
            self._start(pod)

    async def _relist(self) -> str:
        items: list[Obj] = []
        params = {"labelSelector": self.selector, "limit": "500"}
        while True:
            page = await self.kube.request("GET", "/api/v1/pods", params=params)
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                break
            params = {**params, "continue": cont}
        seen = {str(p["metadata"]["uid"]) for p in items}
        for uid, runner in list(self.runners.items()):
            if uid not in seen:
                runner.request_stop("Deleted")
        for pod in items:
            await self._safe_event("ADDED", pod)
        return str(page["metadata"]["resourceVersion"])

    async def _safe_event(self, etype: str, pod: Obj) -> None:
        try:
            await self.on_event(etype, pod)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning(
                "pod %s/%s: %s", pod["metadata"].get("namespace"), pod["metadata"].get("name"), exc
            )

    async def watch_loop(self) -> None:
        backoff = 0.8
        while True:
            try:
                rv = await self._relist()
                healthy_since = time.monotonic()
                while True:
                    params = {
                        "labelSelector": self.selector,
                        "resourceVersion": rv,
                        "allowWatchBookmarks": "true",
                    }
                    try:
                        async for ev in self.kube.watch(
                            "/api/v1/pods", params, server_timeout=random.randint(240, 360)
                        ):
                            rv = str(ev["object"]["metadata"].get("resourceVersion") or rv)
                            if ev["type"] != "BOOKMARK":
                                await self._safe_event(ev["type"], ev["object"])
                    except (TimeoutError, aiohttp.ServerTimeoutError):
                        log.info("watch idle: re-watching from %s", rv)
                    if time.monotonic() - healthy_since > 120:
                        backoff = 0.8
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status == 410:
                    log.info("watch expired (410): relisting")
                    continue
                log.warning("watch failed: %s; relisting in %.1fs", exc, backoff)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning("watch failed: %s; relisting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff * random.uniform(1.0, 1.2))
            backoff = min(backoff * 2, 30.0)

    # -- main --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        delay = 0.2
        while True:
            try:
                await self._node.register()
                break
            except (ApiError, aiohttp.ClientError, OSError) as exc:
                log.warning("node registration failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            delay = min(delay * 2, 5.0)
        background = [
            asyncio.create_task(self._node.heartbeat_loop(self.heartbeat)),
            asyncio.create_task(self.watch_loop()),
        ]
        await stop.wait()
        log.info("stopping: %d running pod(s)", len(self.runners))
        for task in background:
            task.cancel()
        for runner in list(self.runners.values()):
            runner.request_stop("Shutdown")
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self.max_grace + 5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=2)
        with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError, OSError):
            await self._node.set_ready(False, "NodeAgentStopped", "the local node agent stopped")


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


# -- in-process helper for tests and dev ---------------------------------------------------------

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


if __name__ == "__main__":
    sys.exit(main())
