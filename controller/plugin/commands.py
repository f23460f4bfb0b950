"""The kubectl plugin's API calls: create a backup or restore, wait for it, follow its
executor's progress, read the catalog and a cluster's status.

Guarantees:

* a backup is requested by **creating an OpenBaoBackup** (never by editing the
  OpenBaoCluster), so the trigger-only role suffices; a restore by creating an OpenBaoRestore;
* ``--wait`` returns the terminal object; it watches the object by polling every
  :data:`POLL_SECONDS` (no watch: a plugin run is short and a poll survives apiserver restarts
  without resume logic) and, once the executor pod runs, follows its log for progress lines
  (best effort: a log that cannot be read never fails the wait);
* API errors surface as :class:`~controller.errors.OpenBaoBackupError` subclasses, translated
  once by :class:`~controller.kube.client.KubeApi`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio

from controller.errors import OpenBaoBackupError
from controller.kube.client import KubeApi
from controller.kube.resources import (
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    POD,
    Resource,
)
from controller.plugin import views

JSON = dict[str, Any]
#: Seconds between polls of a waited-for object: a live feel without loading the apiserver.
POLL_SECONDS = 1.0
TERMINAL = ("Succeeded", "Failed")
#: The trigger value the plugin's records carry (shown in ``kubectl get openbaobackups``).
PLUGIN_TRIGGER = "kubectl-openbao-backup"


async def _create(
    api: KubeApi, *, resource: Resource, namespace: str, prefix: str, spec: JSON
) -> JSON:
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"generateName": f"{prefix[:40]}-"},
        "spec": spec,
    }
    return await api.create(path=resource.path(namespace=namespace), body=body)


async def create_backup(api: KubeApi, *, namespace: str, cluster: str) -> JSON:
    await api.get(path=OPENBAO_CLUSTER.path(namespace=namespace, name=cluster))  # 404 early
    spec = {"cluster": cluster, "trigger": PLUGIN_TRIGGER}
    return await _create(
        api, resource=OPENBAO_BACKUP, namespace=namespace, prefix=f"{cluster}-kubectl", spec=spec
    )


async def create_restore(api: KubeApi, *, namespace: str, cluster: str, backup: str) -> JSON:
    await api.get(path=OPENBAO_BACKUP.path(namespace=namespace, name=backup))  # 404 early
    spec = {"cluster": cluster, "backupName": backup}
    return await _create(
        api, resource=OPENBAO_RESTORE, namespace=namespace, prefix=f"{cluster}-restore", spec=spec
    )


async def wait(
    api: KubeApi,
    *,
    path: str,
    say: Callable[[str], None],
    follow_logs: bool,
    timeout: float,
) -> JSON:
    """Poll ``path`` until its phase is terminal; report phase changes and progress."""
    followed: set[str] = set()
    last_phase: object = object()
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            while True:
                obj = await api.get(path=path)
                status = obj.get("status") or {}
                phase = status.get("phase")
                if phase != last_phase:
                    last_phase = phase
                    say(f"phase: {phase or 'Pending'}" + _why(status))
                job = status.get("jobName")
                if follow_logs and isinstance(job, str) and job not in followed:
                    pod = await _running_pod(api, namespace=_ns(obj), job=job)
                    if pod is not None:
                        followed.add(job)
                        tg.start_soon(_follow, api, _ns(obj), pod, say)
                if phase in TERMINAL:
                    tg.cancel_scope.cancel()
                    return obj
                await anyio.sleep(POLL_SECONDS)
    raise AssertionError("unreachable")  # pragma: no cover


def _ns(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def _why(status: JSON) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Blocked", "PreflightBlocked"):
            return f" ({cond.get('reason')}: {cond.get('message')})"
    return ""


async def _running_pod(api: KubeApi, *, namespace: str, job: str) -> str | None:
    pods = await api.request(
        method="GET",
        path=POD.path(namespace=namespace),
        query=[("labelSelector", f"job-name={job}")],
    )
    for pod in pods.get("items") or []:
        if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
            return str(pod["metadata"]["name"])
    return None


async def _follow(api: KubeApi, namespace: str, pod: str, say: Callable[[str], None]) -> None:
    path = POD.path(namespace=namespace, name=pod, subresource="log")
    try:
        async with api.stream(
            path=path,
            query=[("follow", "true"), ("container", "executor")],
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as lines:
            async for event in lines:
                line = views.progress_line(event)
                if line is not None:
                    say(line)
    except (OpenBaoBackupError, json.JSONDecodeError):
        return  # progress is best effort; the phase still decides the outcome


async def records(api: KubeApi, *, namespace: str | None, cluster: str | None) -> list[JSON]:
    out = await api.get(path=OPENBAO_BACKUP.path(namespace=namespace))
    items: list[JSON] = list(out.get("items") or [])
    return [r for r in items if cluster is None or (r.get("spec") or {}).get("cluster") == cluster]


async def cluster(api: KubeApi, *, namespace: str, name: str) -> JSON:
    return await api.get(path=OPENBAO_CLUSTER.path(namespace=namespace, name=name))
