"""In-process harness: the real controller App in the test's event loop, against the real local
control plane, with a fault-injecting API client and a test-side "kubelet".

* :class:`FaultyApi` is a :class:`~controller.kube.client.KubeApi` whose ``request`` (the one
  method every ``get``/``create``/``replace``/``merge_patch``/``delete`` and the finalizer JSON
  patches go through) records each call as ``(verb, resource plural, subresource)`` and raises
  an armed fault. A call that reaches ``_send`` without going through ``request`` is recorded
  with the verb ``RAW <verb>`` so it shows up (and fails) in the inventory test.
* :class:`Faults` holds the call log and the armed faults: ``fail(verb=, resource=,
  subresource=, nth=, status=409|422|429|500|"timeout", times=)``. 409/422/429/500 are
  refused by the "server" (the request is not sent); ``"timeout"`` sends the request and then
  loses the answer (the write happened: the ambiguous case). ``applied=`` overrides.
* :func:`play_kubelet` binds a Job's pod to a fake Node and writes a terminated container whose
  termination message is a valid executor report, so the real Job controller completes the Job.
* :class:`Cluster` helpers: create, trigger, wait for a record's phase, read the lock Lease,
  the cluster's ``status.backup``, events by reason. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from controller import errors
from controller.app import App
from controller.backup.decide.vocabulary import (
    JOB_NAME_LABEL,
    LABEL_BACKUP,
    LABEL_CLUSTER,
    RESULT_FINALIZER,
    TRIGGER_ANNOTATION,
)
from controller.kube.client import KubeApi, KubeClients, TokenBucket, connect
from controller.kube.errors import from_status
from controller.kube.resources import BACKUP_GROUP, BACKUP_VERSION
from controller.settings import Settings
from executor.layout import manifest_key, snapshot_key
from executor.report import EXIT_CODES, Report, ReportError
from tests.polling import until as until  # re-exported for the suites

GROUP, VERSION = BACKUP_GROUP, BACKUP_VERSION
__all__ = [  # the product's own names, re-exported for the suites
    "JOB_NAME_LABEL",
    "LABEL_BACKUP",
    "LABEL_CLUSTER",
    "RESULT_FINALIZER",
    "TRIGGER_ANNOTATION",
]
SMP = "application/strategic-merge-patch+json"
FAKE_NODE = "inprocess-fake-node"
PATH_PREFIX = "inprocess"
INJECTED_FIELD = "spec.faultInjected"
"""The field the injected 422 names; the contract wants it in the record's status.message."""

FaultStatus = Literal[409, 422, 429, 500, "timeout"]
CallKey = tuple[str, str, str]
JSON = dict[str, Any]

KINDS = {
    "jobs": ("Job", "batch"),
    "pods": ("Pod", ""),
    "leases": ("Lease", "coordination.k8s.io"),
    "events": ("Event", "events.k8s.io"),
    "openbaobackups": ("OpenBaoBackup", GROUP),
    "openbaoclusters": ("OpenBaoCluster", GROUP),
    "configmaps": ("ConfigMap", ""),
}


# -- calls and faults ------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    body: Any
    at: float

    @property
    def key(self) -> CallKey:
        return (self.verb, self.resource, self.subresource)

    def lease_holder(self) -> str | None:
        """For a Lease write: the holderIdentity it writes (``""`` = a release)."""
        if self.resource != "leases" or not isinstance(self.body, Mapping):
            return None
        spec = self.body.get("spec")
        if not isinstance(spec, Mapping):
            return None
        return str(spec.get("holderIdentity") or "")


def parse_path(path: str) -> tuple[str, str, str, str, str]:
    """``(group, namespace, resource, name, subresource)`` of an API path."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    group = ""
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        return "", "", "/".join(parts), "", ""
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    sub = "/".join(rest[2:])
    return group, namespace, resource, name, sub


@dataclass
class Armed:
    verb: str
    resource: str
    subresource: str
    status: FaultStatus
    nth: int = 1
    times: int = 1
    applied: bool = False
    seen: int = 0
    fired: list[Call] = field(default_factory=list)
    where: Callable[[Call], bool] | None = None
    """Optional: only calls this predicate accepts match (one call site among a key's)."""

    def matches(self, call: Call) -> bool:
        same = (call.verb, call.resource, call.subresource) == (
            self.verb,
            self.resource,
            self.subresource,
        )
        return same and (self.where is None or self.where(call))

    @property
    def exhausted(self) -> bool:
        return len(self.fired) >= self.times


def fault_error(status: FaultStatus, call: Call) -> errors.KubeError:
    """The exception a real apiserver answer of ``status`` would become."""
    kind, group = KINDS.get(call.resource, (call.resource, call.group))
    qualified = f"{call.resource}.{group}" if group else call.resource
    what = f'{kind}.{group} "{call.name}"' if group else f'{kind} "{call.name}"'
    if status == "timeout":
        return errors.Timeout("timed out: TimeoutError (injected fault)")
    body: JSON = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status}
    if status == 409:
        body |= {
            "reason": "Conflict",
            "message": f'Operation cannot be fulfilled on {qualified} "{call.name}": the object '
            "has been modified; please apply your changes to the latest version and try again "
            "(injected fault)",
        }
    elif status == 422:
        body |= {
            "reason": "Invalid",
            "message": f'{what} is invalid: {INJECTED_FIELD}: Invalid value: "x": injected fault',
            "details": {"causes": [{"reason": "FieldValueInvalid", "field": INJECTED_FIELD}]},
        }
    elif status == 429:
        body |= {
            "reason": "TooManyRequests",
            "message": "the server has received too many requests and has asked us to try "
            "again later (injected fault)",
        }
    else:
        body |= {
            "reason": "InternalError",
            "message": "Internal error occurred: etcdserver: request timed out (injected fault)",
        }
    return from_status(int(status), body=json.dumps(body).encode())


class Faults:
    """The call log of one App and the faults armed on it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.armed: list[Armed] = []

    def fail(
        self,
        *,
        verb: str,
        resource: str,
        status: FaultStatus,
        subresource: str = "",
        nth: int = 1,
        times: int = 1,
        applied: bool | None = None,
        where: Callable[[Call], bool] | None = None,
    ) -> Armed:
        """Fail the ``nth`` matching call from now on (and the next ``times - 1`` ones);
        ``where`` narrows the match to the calls it accepts."""
        armed = Armed(
            verb=verb,
            resource=resource,
            subresource=subresource,
            status=status,
            nth=nth,
            times=times,
            applied=(status == "timeout") if applied is None else applied,
            where=where,
        )
        self.armed.append(armed)
        return armed

    def clear(self) -> None:
        self.armed.clear()

    def mark(self) -> int:
        return len(self.calls)

    def inventory(self, since: int = 0) -> set[CallKey]:
        return {c.key for c in self.calls[since:]}

    def record(self, call: Call) -> Armed | None:
        self.calls.append(call)
        for armed in self.armed:
            if armed.exhausted or not armed.matches(call):
                continue
            armed.seen += 1
            if armed.seen >= armed.nth:
                armed.fired.append(call)
                return armed
        return None


_IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_request", default=False)


class FaultyApi(KubeApi):
    """A KubeApi that records every request and raises armed faults."""

    def __init__(self, *, faults: Faults, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults

    def _call(self, method: str, path: str, body: Any, verb: str | None = None) -> Call:
        group, namespace, resource, name, sub = parse_path(path)
        if not name and isinstance(body, Mapping):  # a create names its object in the body
            name = str((body.get("metadata") or {}).get("name") or "")
        return Call(
            verb=verb or method,
            group=group,
            resource=resource,
            subresource=sub,
            namespace=namespace,
            name=name,
            body=body,
            at=time.monotonic(),
        )

    @staticmethod
    def _named(exc: errors.KubeError, method: str, path: str) -> errors.KubeError:
        """Name the request on the error, as the real client does for a server's answer."""
        exc.method, exc.path = method, path
        return exc

    async def request(
        self,
        *,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        call = self._call(method, path, body)
        armed = self.faults.record(call)
        if armed is not None and not armed.applied:
            raise self._named(fault_error(armed.status, call), method, path)
        token = _IN_REQUEST.set(True)
        try:
            answer = await super().request(
                method=method, path=path, query=query, body=body, content_type=content_type
            )
        finally:
            _IN_REQUEST.reset(token)
        if armed is not None:
            raise self._named(fault_error(armed.status, call), method, path)
        return answer

    async def _send(
        self,
        *,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        if not _IN_REQUEST.get():
            self.faults.record(self._call(method, path, body, verb=f"RAW {method}"))
        return await super()._send(
            method=method,
            path=path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=timeout,
        )


# -- waiting ---------------------------------------------------------------------------------


# -- the controller in process ---------------------------------------------------------------


def controller_settings(*, kubeconfig: Path, namespace: str, **overrides: Any) -> Settings:
    """The in-process App's settings; ``overrides`` replace fields (e.g.
    ``operation_lock_seconds``)."""
    settings = Settings(
        kubeconfig=kubeconfig,
        namespaces=(namespace,),
        leader_elect=False,
        bind_address="127.0.0.1:0",
        workers=2,
        drain_timeout=10.0,
        reconcile_timeout=60.0,
        identity=f"inprocess-{namespace}",
        executor_image="example.invalid/openbao-backup:test",
        log_level="warning",
    )
    return dataclasses.replace(settings, **overrides) if overrides else settings


async def faulty_clients(settings: Settings, faults: Faults) -> KubeClients:
    """``connect(settings)`` with ``.api`` replaced by a :class:`FaultyApi` on the same pool."""
    real = await connect(settings)
    api = FaultyApi(
        faults=faults,
        client=real.api.client,
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        throttle=TokenBucket(qps=settings.client_qps, burst=settings.client_burst),
    )
    return KubeClients(watch=real.watch, api=api)


@dataclass
class Running:
    app: App
    task: asyncio.Task[int]
    faults: Faults
    clients: KubeClients

    def idle(self) -> bool:
        """No key queued or being reconciled in any runner (timed requeues may be pending:
        the lock-renewal requeue is always there while a lock is held)."""
        return bool(self.app.runners) and all(
            len(r.queue) == 0 and not r.queue.processing for r in self.app.runners
        )

    async def settle(self, *, timeout: float = 30.0, quiet: float = 0.3) -> None:
        """Wait until the App has been idle, with no new API call, for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        seen = -1
        while time.monotonic() < deadline:
            if self.task.done():
                raise AssertionError(f"controller App exited: {self.task.result()!r}")
            count = len(self.faults.calls)
            if self.idle() and count == seen:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= quiet:
                    return
            else:
                stable_since = None
            seen = count
            await asyncio.sleep(0.05)
        raise AssertionError(f"controller did not settle within {timeout}s")

    def check_alive(self) -> None:
        if self.task.done():
            raise AssertionError(f"controller App exited early: {self.task.result()!r}")


@contextlib.asynccontextmanager
async def run_controller(
    *, kubeconfig: Path, namespace: str, **overrides: Any
) -> AsyncIterator[Running]:
    """The real App watching only ``namespace``, stopped cleanly (request_stop + await);
    ``overrides`` replace settings fields."""
    settings = controller_settings(kubeconfig=kubeconfig, namespace=namespace, **overrides)
    faults = Faults()
    clients = await faulty_clients(settings, faults)
    app = App(settings, clients=clients)
    task = asyncio.create_task(app.run(), name=f"app:{namespace}")
    running = Running(app=app, task=task, faults=faults, clients=clients)
    try:
        await until(
            lambda: _started(running), timeout=30, what="App informers synced and workers started"
        )
        yield running
    finally:
        faults.clear()
        app.request_stop()
        try:
            code = await asyncio.wait_for(task, timeout=30)
        finally:
            await clients.close()
        assert code == 0, f"App.run returned {code}"


async def _started(running: Running) -> bool:
    running.check_alive()
    return bool(running.app.runners) and all(i.has_synced() for i in running.app.informers.values())


# -- the test-side view of the cluster -------------------------------------------------------


class Kube:
    """Test-side raw JSON client (never faulted)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def get(self, path: str) -> JSON | None:
        try:
            return await self.api.get(path=path)
        except errors.NotFound:
            return None

    async def items(self, path: str, *, selector: str | None = None) -> list[JSON]:
        query = [("labelSelector", selector)] if selector else []
        out = await self.api.request(method="GET", path=path, query=query)
        items: list[JSON] = out.get("items") or []
        return items

    async def create_namespace(self) -> str:
        name = f"ip-{uuid.uuid4().hex[:10]}"
        await self.api.create(
            path="/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        return name

    async def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(errors.OpenBaoBackupError):
            await self.api.delete(path=f"/api/v1/namespaces/{name}")

    async def ensure_node(self) -> str:
        """A Node object for pods to be bound to (nothing runs on it)."""
        with contextlib.suppress(errors.AlreadyExists):
            await self.api.create(
                path="/api/v1/nodes",
                body={
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": FAKE_NODE, "labels": {"kubernetes.io/os": "linux"}},
                    "spec": {
                        "taints": [{"key": "inprocess/fake", "effect": "NoSchedule"}],
                    },
                },
            )
        return FAKE_NODE


def fake_report(
    *,
    namespace: str,
    cluster: str,
    outcome: Literal["succeeded", "failed"] = "succeeded",
    error_class: Literal["storage", "snapshot", "auth"] = "storage",
) -> Report:
    """A valid executor report for a backup of ``cluster`` under :data:`PATH_PREFIX`."""
    finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
    started = finished - dt.timedelta(seconds=2)
    suffix = uuid.uuid4().hex[:8]
    key = snapshot_key(
        path_prefix=PATH_PREFIX,
        namespace=namespace,
        cluster=cluster,
        taken_at=started,
        suffix=suffix,
    )
    if outcome == "failed":
        return Report(
            mode="backup",
            outcome="failed",
            started_at=started,
            finished_at=finished,
            key=key,
            error=ReportError(error_class, "injected executor failure"),
        )
    return Report(
        mode="backup",
        outcome="succeeded",
        started_at=started,
        finished_at=finished,
        key=key,
        manifest_key=manifest_key(key),
        size=4096,
        sha256=hashlib.sha256(suffix.encode()).hexdigest(),
        openbao_version="2.4.1",
        raft_index=42,
        raft_term=3,
    )


async def play_kubelet(
    kube: Kube,
    namespace: str,
    job_name: str,
    *,
    outcome: Literal["succeeded", "failed"] = "succeeded",
    report: Report | None = None,
    timeout: float = 30.0,
) -> str:
    """Be the kubelet for the Job's pod: bind it to the fake Node, then write a terminated
    container carrying the executor report and the terminal phase. Returns the pod name."""
    pods_path = f"/api/v1/namespaces/{namespace}/pods"

    async def find() -> JSON | None:
        pods = await kube.items(pods_path, selector=f"{JOB_NAME_LABEL}={job_name}")
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    pod: JSON = await until(find, timeout=timeout, what=f"a pod of Job {job_name}")
    await terminate_pod(kube, pod, outcome=outcome, report=report)
    return str(pod["metadata"]["name"])


async def terminate_pod(
    kube: Kube,
    pod: JSON,
    *,
    outcome: Literal["succeeded", "failed"] = "succeeded",
    report: Report | None = None,
) -> None:
    meta = pod["metadata"]
    ns, name = str(meta["namespace"]), str(meta["name"])
    path = f"/api/v1/namespaces/{ns}/pods/{name}"
    if not (pod.get("spec") or {}).get("nodeName"):
        node = await kube.ensure_node()
        with contextlib.suppress(errors.Conflict):  # already bound
            await kube.api.create(
                path=f"{path}/binding",
                body={
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                },
            )
    cluster = str((meta.get("labels") or {}).get(LABEL_CLUSTER) or "unknown")
    rep = report or fake_report(namespace=ns, cluster=cluster, outcome=outcome)
    code = 0 if rep.error is None else EXIT_CODES[rep.error.error_class]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    containers = (pod.get("spec") or {}).get("containers") or [{"name": "executor"}]
    phase = "Succeeded" if code == 0 else "Failed"

    def cond(kind: str, ok: bool, reason: str = "") -> JSON:
        c: JSON = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
        if reason:
            c["reason"] = reason
        return c

    status: JSON = {
        "phase": phase,
        "startTime": now,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": [
            cond("PodScheduled", True),
            cond("Initialized", True),
            cond("Ready", False, "PodCompleted"),
            cond("ContainersReady", False, "PodCompleted"),
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "message": rep.to_json() if i == 0 else "",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
            for i, c in enumerate(containers)
        ],
    }
    await kube.api.request(
        method="PATCH", path=f"{path}/status", body={"status": status}, content_type=SMP
    )


async def auto_kubelet(kube: Kube, namespace: str, *, interval: float = 0.1) -> None:
    """Play a successful executor for every Job pod whose OpenBaoBackup is Running (until
    cancelled). Pods of a record that never became Running are left Pending: their Job must be
    deleted by the controller (a run it failed), not finished by us."""
    done: set[str] = set()
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    records = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/openbaobackups"
    while True:
        try:
            pods = await kube.items(pods_path, selector=JOB_NAME_LABEL)
            for pod in pods:
                uid = str(pod["metadata"]["uid"])
                phase = (pod.get("status") or {}).get("phase") or "Pending"
                if uid in done or phase != "Pending" or pod["metadata"].get("deletionTimestamp"):
                    continue
                record = (pod["metadata"].get("labels") or {}).get(LABEL_BACKUP)
                rec = await kube.get(f"{records}/{record}") if record else None
                if rec is None or (rec.get("status") or {}).get("phase") != "Running":
                    continue
                with contextlib.suppress(errors.NotFound):
                    await terminate_pod(kube, pod)
                done.add(uid)
        except errors.Conflict:
            pass
        await asyncio.sleep(interval)


# -- one cluster in one namespace ------------------------------------------------------------


@dataclass
class Cluster:
    kube: Kube
    namespace: str
    name: str
    openbao_addr: str

    @property
    def base(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}"

    @property
    def path(self) -> str:
        return f"{self.base}/openbaoclusters/{self.name}"

    def body(self) -> JSON:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoCluster",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "address": self.openbao_addr,
                "backup": {
                    "target": {
                        "provider": "s3",
                        "bucket": "inprocess-unused",
                        "region": "us-east-1",
                        "endpoint": "http://127.0.0.1:9",
                        "usePathStyle": True,
                        "pathPrefix": PATH_PREFIX,
                        "credentialsSecretRef": {"name": "s3-credentials"},
                    },
                    "auth": {"tokenSecretRef": {"name": "openbao-token"}},
                },
            },
        }

    async def create(self) -> JSON:
        return await self.kube.api.create(path=f"{self.base}/openbaoclusters", body=self.body())

    async def trigger(self, value: str) -> None:
        await self.kube.api.merge_patch(
            path=self.path, body={"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}}
        )

    async def get(self) -> JSON:
        obj = await self.kube.get(self.path)
        assert obj is not None, f"OpenBaoCluster {self.namespace}/{self.name} is gone"
        return obj

    async def backup_status(self) -> JSON:
        status: JSON = ((await self.get()).get("status") or {}).get("backup") or {}
        return status

    async def condition(self, kind: str) -> JSON | None:
        for c in ((await self.get()).get("status") or {}).get("conditions") or ():
            if c.get("type") == kind:
                found: JSON = c
                return found
        return None

    async def records(self) -> list[JSON]:
        return await self.kube.items(
            f"{self.base}/openbaobackups", selector=f"{LABEL_CLUSTER}={self.name}"
        )

    async def record(self, name: str) -> JSON | None:
        return await self.kube.get(f"{self.base}/openbaobackups/{name}")

    async def new_record(self, known: set[str], *, timeout: float = 30.0) -> JSON:
        """The first record of this cluster whose name is not in ``known``."""

        async def probe() -> JSON | None:
            fresh = [r for r in await self.records() if r["metadata"]["name"] not in known]
            return fresh[0] if fresh else None

        found: JSON = await until(probe, timeout=timeout, what=f"a new record of {self.name}")
        return found

    async def wait_phase(self, name: str, phases: set[str], *, timeout: float = 60.0) -> JSON:
        async def probe() -> JSON | None:
            obj = await self.record(name)
            if obj is not None and (obj.get("status") or {}).get("phase") in phases:
                return obj
            return None

        got: JSON = await until(probe, timeout=timeout, what=f"record {name} in {sorted(phases)}")
        return got

    @property
    def lease_path(self) -> str:
        return (
            f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/"
            f"{self.name}-openbao-oplock"
        )

    async def lease(self) -> JSON | None:
        return await self.kube.get(self.lease_path)

    async def lock_holder(self) -> str | None:
        """The Lease's holderIdentity (``""`` when released), None when there is no Lease."""
        lease = await self.lease()
        if lease is None:
            return None
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    async def wait_lock_free(self, *, timeout: float = 30.0) -> None:
        async def probe() -> bool:
            return (await self.lock_holder()) in (None, "")

        await until(probe, timeout=timeout, what="the operation Lease released")

    async def wait_accounted(self, record: str, *, timeout: float = 30.0) -> JSON:
        async def probe() -> JSON | None:
            status = await self.backup_status()
            return status if status.get("lastAttemptRecord") == record else None

        got: JSON = await until(probe, timeout=timeout, what=f"{record} counted on the cluster")
        return got

    async def events(self, reason: str | None = None) -> list[JSON]:
        items = await self.kube.items(f"/apis/events.k8s.io/v1/namespaces/{self.namespace}/events")
        return [e for e in items if reason is None or e.get("reason") == reason]

    async def jobs(self) -> list[JSON]:
        return await self.kube.items(
            f"/apis/batch/v1/namespaces/{self.namespace}/jobs", selector=LABEL_CLUSTER
        )

    async def jobs_of(self, record: str) -> list[JSON]:
        return [
            j
            for j in await self.jobs()
            if (j["metadata"].get("labels") or {}).get("backup.openbao.org/backup") == record
        ]
