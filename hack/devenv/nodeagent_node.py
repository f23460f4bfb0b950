"""The local node agent's Node: registration, heartbeat (Lease + Ready condition) and
NotReady on stop (part of ``devenv.nodeagent``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj, now_micro, now_rfc3339

log = logging.getLogger("nodeagent")
LOCAL_NODE_LABEL = "devenv.openbao-backup/local-node"
PID_ANNOTATION = "devenv.openbao-backup/agent-pid"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
LEASE_SECONDS = 40


def _memory_kib() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 4 * 1024 * 1024


@dataclass
class LocalNode:
    kube: KubeClient
    name: str
    _ready_since: tuple[bool, str] | None = None

    def _ready(self, ok: bool, reason: str, message: str) -> Obj:
        now = now_rfc3339()
        if self._ready_since is None or self._ready_since[0] != ok:
            self._ready_since = (ok, now)
        return {
            "type": "Ready",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": self._ready_since[1],
        }

    def _status(self) -> Obj:
        machine = os.uname().machine
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "pods": "110",
            "ephemeral-storage": "10Gi",
        }
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [self._ready(True, "KubeletReady", "local node agent is ready")],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "devenv local node agent",
                "containerRuntimeVersion": "devenv://local",
                "kubeletVersion": "v0.0.0-devenv",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        }

    async def register(self) -> None:
        """Create (or take over) the Node, annotated with this process's PID, Ready."""
        meta = {
            "name": self.name,
            "labels": {
                "kubernetes.io/hostname": self.name,
                "kubernetes.io/os": "linux",
                LOCAL_NODE_LABEL: "true",
            },
            "annotations": {PID_ANNOTATION: str(os.getpid())},
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": meta,
            "spec": {},
            "status": self._status(),
        }
        try:
            await self.kube.request("POST", "/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.kube.request(
                "PATCH", f"/api/v1/nodes/{self.name}", {"metadata": meta}, content_type=MERGE
            )
        await self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self._status()},
            content_type=SMP,
        )
        await self._renew_lease()
        log.info("node %s registered and Ready", self.name)

    async def set_ready(self, ok: bool, reason: str, message: str) -> None:
        await self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": {"conditions": [self._ready(ok, reason, message)]}},
            content_type=SMP,
        )

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            await self.kube.request("PATCH", path, {"spec": spec}, content_type=MERGE)
        except ApiError as exc:
            if exc.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            await self.kube.request("POST", path.rsplit("/", 1)[0], lease)

    async def heartbeat_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew_lease()
                await self.set_ready(True, "KubeletReady", "local node agent is ready")
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
