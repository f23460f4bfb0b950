"""Watch this node's pods and act on each one as a kubelet would: bind, run, stop, finish
deletion (part of ``devenv.nodeagent``).

Guarantees:

* Scheduling: pods matching ``--label-selector`` (default ``devenv.openbao-backup/local-node=true``,
  set it in the Job's pod template) that are Pending and unscheduled are bound to this node
  (pods/binding). Pods bound to the node by other means are run only if they match too.
* Every pod is its own asyncio task (a ``PodRunner``, ``devenv.nodeagent_runner``). A pod
  being deleted that is terminal or already ran here is deleted with grace 0 (unless its grace
  is 0 already); a pod found Running (or being deleted) on this node that this agent process
  never ran is abandoned (reported Failed, ContainerStatusUnknown). A pod that disappears has
  its runner stopped.
* Watch: list + watch of pods from the list's resourceVersion, bookmarks, re-watch after a
  server/inactivity time-out, relist after 410 or errors (backoff 0.8 s doubling to 30 s).
  A pod event that fails with an API or transport error is logged and the watch goes on.
* Node registration is retried (0.2 s doubling to 5 s) until it succeeds or the agent is
  stopped; then the heartbeat runs (``devenv.nodeagent_node``).
* Stop: every container is stopped (pods marked Failed), pod tasks get ``max_grace`` + 5 s to
  finish before they are cancelled, then the Node is set Ready=False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj
from devenv.nodeagent_node import LocalNode
from devenv.nodeagent_runner import AgentContext, PodRunner, abandon
from devenv.nodeagent_spec import service_env
from devenv.nodeagent_status import TERMINAL
from devenv.nodeagent_writes import force_delete

log = logging.getLogger("nodeagent")


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
