"""The fault table beyond the happy path: every call site of the reconcile loop that one manual
backup (``test_fault_table.py``) does not make, each made by a small story, each story run clean
and then once per fault on each of its call sites (issue 8: "the fault-injection table covers
every API call the reconcile loop makes; the invariant holds for every row").

A :class:`Scenario` is a story in one namespace with its own in-process App: a setup (not
faulted), ``ctx.arm()`` (the call log mark; the row's fault is armed here), the story, and the
story's documented outcome. It declares

* ``inventory``: the distinct ``(verb, resource, subresource)`` the story makes after the mark,
  checked by its clean run (``test_scenario_inventory``; :data:`MAY_APPEAR` calls allowed), so
  a new call site fails until it is listed;
* ``sites``: the call sites the story makes that the happy-path table does not fault (a key in
  another step, or a later call of a key whose first call the table faults), each a
  :class:`Site` with the contract step making it and, where a key has several call sites in the
  story, a predicate on the call picking the right one. The fault fires on the FIRST call after
  the mark that matches.

Expected outcome of a row (controller/reconcilers/backups.py, docs/backup-manager.md
"Failures"): a fault in an event write, a transient fault (409, 429, 500, timeout) and any fault
of a cluster step (deletion, finish, schedule, trigger, bookkeeping) or of a lock renewal (the
renewal path, off the workqueue: a refused renewal is retried, it never fails the run) end in
the clean run's final state, possibly after retries; a 422 in a per-record step (launch,
running) fails the record: ``Failed``, ``<Kind>Rejected``, the apiserver's message (naming the
field), a Warning event of that reason, counted once. Then, for every row: the lock is free, no
Job or pod keeps the result finalizer, no record is stuck (every record terminal, none left
deleting), and a fresh trigger still produces a record that runs and succeeds.

Rows where the controller disagrees with that contract are kept, marked ``xfail(strict=True)``
with the defect named (:data:`KNOWN_DEFECTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller import errors
from controller.backup.act.deps import utcnow
from controller.backup.decide.conditions import SNAPSHOT_DELETED
from controller.reconcilers.backups import BackupManager
from executor.report import Report, ReportError
from tests.inprocess.harness import (
    FAKE_NODE,
    GROUP,
    INJECTED_FIELD,
    JOB_NAME_LABEL,
    KINDS,
    LABEL_BACKUP,
    RESULT_FINALIZER,
    SMP,
    VERSION,
    Armed,
    Call,
    CallKey,
    Cluster,
    FaultStatus,
    Kube,
    Running,
    fake_report,
    run_controller,
    terminate_pod,
    until,
)

pytestmark = pytest.mark.integration

FAULTS: tuple[FaultStatus, ...] = (409, 422, 429, 500, "timeout")
READ_FAULTS: tuple[FaultStatus, ...] = (429, 500, "timeout")
"""A GET never answers 409 or 422."""
TRANSIENT: frozenset[FaultStatus] = frozenset({409, 429, 500, "timeout"})
PER_RECORD_STEPS = frozenset({"launch", "running"})
TERMINAL = {"Succeeded", "Failed"}
MAY_APPEAR: frozenset[CallKey] = frozenset(
    {
        ("GET", "jobs", ""),  # running: the Job is not in the informer cache yet (cache lag)
        # finish: the pod's finalizer list changed under the JSON patch's test (the Job
        # controller dropping its tracking finalizer): re-read and retry (kube/finalizers.py)
        ("GET", "pods", ""),
        # best-effort events (BackupSucceeded/BackupFailed when a result is recorded)
        ("POST", "events", ""),
    }
)
"""Calls that happen or not depending on informer timing; allowed in an inventory."""

JSON = dict[str, Any]


# -- call sites ------------------------------------------------------------------------------


def _status(call: Call) -> Mapping[str, Any]:
    body = call.body if isinstance(call.body, Mapping) else {}
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def phase_is(phase: str) -> Callable[[Call], bool]:
    def where(call: Call) -> bool:
        return _status(call).get("phase") == phase

    return where


def only_accounted(call: Call) -> bool:
    return dict(_status(call)) == {"accounted": True}


def counts_outcome(call: Call) -> bool:
    backup = _status(call).get("backup")
    return isinstance(backup, Mapping) and "lastAttemptRecord" in backup


def snapshot_deleted(call: Call) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("type") == SNAPSHOT_DELETED
        for c in _status(call).get("conditions") or ()
    )


def coalesces(call: Call) -> bool:
    return "coalescedTriggers" in _status(call)


def json_patch(call: Call) -> bool:
    """A finalizer removal (a JSON patch: a list of operations)."""
    return isinstance(call.body, list)


def merge_patch(call: Call) -> bool:
    return isinstance(call.body, Mapping)


def lease_taken(call: Call) -> bool:
    """A Lease write naming a holder (acquire/renew, not a release)."""
    return bool(call.lease_holder())


@dataclass(frozen=True)
class Site:
    id: str
    key: CallKey
    step: str
    """The contract step making the call: deletion, running, finish, schedule, trigger,
    launch, bookkeeping, or events (best effort)."""
    where: Callable[[Call], bool] | None = None


@dataclass(frozen=True)
class Expect:
    rejected: str | None
    """None: the clean run's final state; else the record ends Failed with this reason."""

    @property
    def failures(self) -> int:
        return 1 if self.rejected else 0


def expected(site: Site | None, fault: FaultStatus | None) -> Expect:
    if site is None or fault is None or site.step == "events" or fault in TRANSIENT:
        return Expect(None)
    if site.step not in PER_RECORD_STEPS:
        return Expect(None)
    return Expect(f"{KINDS[site.key[1]][0]}Rejected")


# -- the fake kubelet --------------------------------------------------------------------------


def delete_report(key: str, outcome: Literal["succeeded", "failed"]) -> Report:
    finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
    started = finished - dt.timedelta(seconds=1)
    if outcome == "failed":
        return Report(
            mode="delete",
            outcome="failed",
            started_at=started,
            finished_at=finished,
            error=ReportError("storage", "injected delete failure"),
        )
    return Report(
        mode="delete",
        outcome="succeeded",
        started_at=started,
        finished_at=finished,
        deleted_keys=(key,),
    )


async def start_pod(kube: Kube, pod: JSON) -> None:
    """Be the kubelet starting the pod: bind it and write a running container."""
    meta = pod["metadata"]
    ns, name = str(meta["namespace"]), str(meta["name"])
    path = f"/api/v1/namespaces/{ns}/pods/{name}"
    if not (pod.get("spec") or {}).get("nodeName"):
        with contextlib.suppress(errors.Conflict):
            await kube.api.create(
                path=f"{path}/binding",
                body={
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": FAKE_NODE},
                },
            )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    containers = (pod.get("spec") or {}).get("containers") or [{"name": "executor"}]
    status = {
        "phase": "Running",
        "startTime": now,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in containers
        ],
    }
    await kube.api.request(
        method="PATCH", path=f"{path}/status", body={"status": status}, content_type=SMP
    )


class Kubelet:
    """Plays every executor pod of one namespace:

    * a backup pod whose record is Running: succeeds at once, or, while ``hold`` is set, is
      started and kept running until its record is in ``release`` (then succeeds) or the pod is
      deleted (then it fails as the executor does on SIGTERM);
    * a delete pod: ends with the next of ``delete_outcomes`` (default: succeeded), reporting
      mode ``delete`` for the record's ``status.key``."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.hold = False
        self.release: set[str] = set()
        self.delete_outcomes: list[Literal["succeeded", "failed"]] = []
        self.started: set[str] = set()
        self.done: set[str] = set()
        self.delete_pods: list[str] = []

    async def run(self) -> None:
        while True:
            with contextlib.suppress(errors.Conflict, errors.NotFound):
                await self._pass()
            await asyncio.sleep(0.2)

    async def _pass(self) -> None:
        ns = self.namespace
        pods = await self.kube.items(f"/api/v1/namespaces/{ns}/pods", selector=JOB_NAME_LABEL)
        records = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/openbaobackups"
        for pod in pods:
            meta = pod["metadata"]
            uid = str(meta["uid"])
            if uid in self.done:
                continue
            labels = meta.get("labels") or {}
            job = str(labels.get(JOB_NAME_LABEL) or "")
            record = str(labels.get(LABEL_BACKUP) or "")
            deleting = bool(meta.get("deletionTimestamp"))
            if job.endswith("-delete"):
                if deleting:
                    continue
                rec = await self.kube.get(f"{records}/{record}")
                key = str(((rec or {}).get("status") or {}).get("key") or "")
                outcome = self.delete_outcomes.pop(0) if self.delete_outcomes else "succeeded"
                await terminate_pod(self.kube, pod, report=delete_report(key, outcome))
                self.done.add(uid)
                self.delete_pods.append(str(meta["name"]))
                continue
            if uid in self.started:
                if deleting:  # SIGTERM: the executor aborts and reports the failure
                    report = fake_report(
                        namespace=ns,
                        cluster=str(labels.get("backup.openbao.org/cluster")),
                        outcome="failed",
                        error_class="snapshot",
                    )
                    await terminate_pod(self.kube, pod, report=report)
                    self.done.add(uid)
                elif record in self.release:
                    await terminate_pod(self.kube, pod)
                    self.done.add(uid)
                continue
            if deleting:
                continue
            rec = await self.kube.get(f"{records}/{record}") if record else None
            if rec is None or (rec.get("status") or {}).get("phase") != "Running":
                continue
            if self.hold:
                await start_pod(self.kube, pod)
                self.started.add(uid)
            else:
                await terminate_pod(self.kube, pod)
                self.done.add(uid)


# -- one story in one namespace ----------------------------------------------------------------


@dataclass
class Ctx:
    kube: Kube
    namespace: str
    ctl: Running
    cluster: Cluster
    kubelet: Kubelet
    site: Site | None
    fault: FaultStatus | None
    mark: int = -1
    armed: Armed | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)

    @property
    def want(self) -> Expect:
        return expected(self.site, self.fault)

    def arm(self) -> None:
        """End of the setup: the inventory starts here and the row's fault is armed."""
        self.mark = self.ctl.faults.mark()
        if self.site is not None and self.fault is not None:
            verb, resource, sub = self.site.key
            self.armed = self.ctl.faults.fail(
                verb=verb,
                resource=resource,
                subresource=sub,
                status=self.fault,
                where=self.site.where,
            )

    def context(self) -> str:
        fired = (
            [(c.verb, c.resource, c.subresource, c.name) for c in self.armed.fired]
            if (self.armed)
            else []
        )
        row = f"{self.site.id} x {self.fault}" if self.site else "clean run"
        return f"[{row}, ns {self.namespace}] fired on {fired}; {'; '.join(self.notes)}"

    def calls(self, since: int | None = None) -> str:
        start = self.mark if since is None else since
        return "\n".join(
            f"  {c.verb} {c.resource}/{c.subresource} {c.name}"
            for c in self.ctl.faults.calls[max(start, 0) :]
        )

    @property
    def records_path(self) -> str:
        return f"{self.cluster.base}/openbaobackups"

    async def record(self, name: str) -> JSON | None:
        return await self.cluster.record(name)

    async def trigger(self, value: str) -> str:
        known = {r["metadata"]["name"] for r in await self.cluster.records()}
        await self.cluster.trigger(value)
        rec = await self.cluster.new_record(known)
        return str(rec["metadata"]["name"])

    async def terminal(self, name: str, *, timeout: float = 45.0) -> JSON:
        try:
            return await self.cluster.wait_phase(name, TERMINAL, timeout=timeout)
        except AssertionError as exc:
            self.ctl.check_alive()
            raise AssertionError(f"{self.context()}: {exc}\ncalls:\n{self.calls()}") from None

    async def settled_run(self, name: str) -> tuple[JSON, JSON]:
        """Wait for ``name`` to end, be counted and let go of its lock: (record, status.backup)."""
        final = await self.terminal(name)
        await self.lock_free()
        backup = await self.cluster.wait_accounted(name)
        await self.no_result_finalizers(name)
        return final, backup

    async def lock_free(self, *, timeout: float = 20.0) -> None:
        try:
            await self.cluster.wait_lock_free(timeout=timeout)
        except AssertionError as exc:
            lease = await self.cluster.lease()
            raise AssertionError(
                f"{self.context()}: {exc}; lease: {lease and lease.get('spec')}\n"
                f"calls:\n{self.calls()}"
            ) from None

    async def gone(self, name: str, *, timeout: float = 20.0) -> None:
        async def probe() -> bool:
            return await self.record(name) is None

        try:
            await until(probe, timeout=timeout, what=f"record {name} gone")
        except AssertionError as exc:
            rec = await self.record(name)
            raise AssertionError(
                f"{self.context()}: {exc}; record: {rec and rec.get('status')}\n"
                f"calls:\n{self.calls()}"
            ) from None

    async def wait_running(self, name: str) -> None:
        await self.cluster.wait_phase(name, {"Running"})

        async def started() -> bool:
            pods = await self.kube.items(
                f"/api/v1/namespaces/{self.namespace}/pods", selector=f"{LABEL_BACKUP}={name}"
            )
            return any(p["metadata"]["uid"] in self.kubelet.started for p in pods)

        await until(started, what=f"the pod of {name} running")

    async def no_result_finalizers(
        self, record: str | None = None, *, timeout: float = 12.0
    ) -> None:
        """No Job or pod (of ``record``, or of the whole namespace) keeps the result finalizer:
        nothing is stuck (the garbage collector can remove them)."""
        ns = self.namespace
        selector = f"{LABEL_BACKUP}={record}" if record else LABEL_BACKUP

        async def holders() -> list[str]:
            found = []
            for kind, path in (
                ("jobs", f"/apis/batch/v1/namespaces/{ns}/jobs"),
                ("pods", f"/api/v1/namespaces/{ns}/pods"),
            ):
                for obj in await self.kube.items(path, selector=selector):
                    if RESULT_FINALIZER in (obj["metadata"].get("finalizers") or ()):
                        found.append(f"{kind}/{obj['metadata']['name']}")
            return found

        async def none() -> bool:
            return not await holders()

        try:
            await until(none, timeout=timeout, what="no result finalizer left")
        except AssertionError:
            raise AssertionError(
                f"{self.context()}: result finalizer stuck on {await holders()}\n"
                f"calls:\n{self.calls()}"
            ) from None

    async def later(self, check: Awaitable[None]) -> None:
        """Run ``check``; a failure is reported at the end of the row, after the invariant (the
        next backup runs) has been checked too."""
        try:
            await check
        except AssertionError as exc:
            self.late.append(str(exc))

    def check_rejected(self, final: JSON, backup: JSON) -> None:
        """The per-record 422 outcome, or the clean one (Succeeded, nothing counted failed)."""
        want, status = self.want, final.get("status") or {}
        if want.rejected is None:
            assert status.get("phase") == "Succeeded", f"{self.context()}: {status}"
        else:
            assert status.get("phase") == "Failed", f"{self.context()}: {status}"
            assert status.get("failureReason") == want.rejected, f"{self.context()}: {status}"
            assert INJECTED_FIELD in str(status.get("message")), f"{self.context()}: {status}"
        assert backup.get("consecutiveFailures") == want.failures, f"{self.context()}: {backup}"

    async def check_event(self, reason: str, record: str) -> None:
        async def probe() -> list[JSON]:
            return [
                e
                for e in await self.cluster.events(reason)
                if (e.get("regarding") or {}).get("name") == record and e.get("type") == "Warning"
            ]

        await until(probe, timeout=10, what=f"{self.context()}: Warning {reason} on {record}")


# -- the stories -------------------------------------------------------------------------------


async def manual_later_calls(ctx: Ctx) -> None:
    """One manual backup; the rows fault the calls after the first of their key (the result,
    the accounting, the accounted mark), which the happy-path table never reaches."""
    ctx.arm()
    name = await ctx.trigger("first")
    final, backup = await ctx.settled_run(name)
    ctx.check_rejected(final, backup)
    if ctx.want.rejected:
        await ctx.check_event(ctx.want.rejected, name)


async def scheduled_window(ctx: Ctx) -> None:
    """A due cron window becomes a record (schedule step), which runs. The schedule is daily at
    a minute ``w`` at least a minute ahead; at the mark the backup manager's clock (``deps.now``,
    the one clock it reads) is moved to ``w`` + 1 s and the cluster touched, so the window is due
    at once instead of after up to 60 s."""
    window: dt.datetime = ctx.extra["window"]
    manager = backup_manager(ctx.ctl)
    ctx.arm()
    offset = window + dt.timedelta(seconds=1) - utcnow()
    manager.deps.now = lambda: utcnow() + offset
    await ctx.kube.api.merge_patch(
        path=ctx.cluster.path, body={"metadata": {"annotations": {"inprocess/poke": "1"}}}
    )
    expected_name = f"{ctx.cluster.name}-{window:%Y%m%d%H%M}"
    await until(
        lambda: ctx.record(expected_name), timeout=30, what=f"{ctx.context()}: {expected_name}"
    )
    final, backup = await ctx.settled_run(expected_name)
    assert final["spec"]["trigger"] == "scheduled", final["spec"]
    ctx.check_rejected(final, backup)
    assert (await ctx.cluster.backup_status()).get("lastHandledWindow") == window.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


async def adopted_record(ctx: Ctx) -> None:
    """An OpenBaoBackup created with kubectl (no finalizer): adopted (snapshot finalizer added,
    deletion step), then launched and run like any record."""
    ctx.arm()
    name = "adopted"
    await ctx.kube.api.create(
        path=ctx.records_path,
        body={
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoBackup",
            "metadata": {"name": name, "namespace": ctx.namespace},
            "spec": {"cluster": ctx.cluster.name, "trigger": "pre-upgrade"},
        },
    )
    final, backup = await ctx.settled_run(name)
    ctx.check_rejected(final, backup)

    async def adopted() -> bool:
        rec = await ctx.record(name)
        return rec is not None and "backup.openbao.org/snapshot" in (
            rec["metadata"].get("finalizers") or ()
        )

    await until(adopted, timeout=15, what=f"{ctx.context()}: {name} carries the finalizer")


async def _succeeded_record(ctx: Ctx, value: str = "first") -> str:
    name = await ctx.trigger(value)
    final, _ = await ctx.settled_run(name)
    assert final["status"]["phase"] == "Succeeded" and final["status"].get("key"), final
    await ctx.ctl.settle()
    return name


async def delete_succeeded(ctx: Ctx) -> None:
    """Deleting a Succeeded record (deletionPolicy Delete): a ``<record>-delete`` Job, its
    success recorded (SnapshotDeleted), its finalizers released, the record let go."""
    name = await _succeeded_record(ctx)
    ctx.arm()
    await ctx.kube.api.delete(path=f"{ctx.records_path}/{name}")
    await ctx.gone(name)
    assert ctx.kubelet.delete_pods, f"{ctx.context()}: no delete Job ran"


async def delete_failed_then_retried(ctx: Ctx) -> None:
    """A delete Job that fails: SnapshotDeleteFailed, its finalizers released, the Job deleted,
    a fresh delete Job that succeeds; the record is let go."""
    name = await _succeeded_record(ctx)
    ctx.kubelet.delete_outcomes = ["failed"]
    ctx.arm()
    await ctx.kube.api.delete(path=f"{ctx.records_path}/{name}")
    await ctx.gone(name, timeout=60)
    assert len(ctx.kubelet.delete_pods) >= 2, f"{ctx.context()}: {ctx.kubelet.delete_pods}"
    await ctx.check_event("SnapshotDeleteFailed", name)


async def retention_prunes(ctx: Ctx) -> None:
    """maxCount 1: the second success deletes the older record (finish step), whose snapshot is
    then deleted by its delete Job and the record let go."""
    older = await _succeeded_record(ctx, "first")
    ctx.arm()
    newer = await ctx.trigger("second")
    final, backup = await ctx.settled_run(newer)
    ctx.check_rejected(final, backup)
    await ctx.later(ctx.gone(older, timeout=12))


async def deleted_while_running(ctx: Ctx) -> None:
    """A record deleted while its Job runs: the Job is deleted (cancel), the executor stops,
    the run is recorded Failed and counted, finalizers released, the record let go."""
    ctx.kubelet.hold = True
    name = await ctx.trigger("first")
    await ctx.wait_running(name)
    ctx.arm()
    await ctx.kube.api.delete(path=f"{ctx.records_path}/{name}")
    await ctx.gone(name)
    await ctx.lock_free()
    backup = await ctx.cluster.wait_accounted(name)
    assert backup.get("consecutiveFailures") == 1, f"{ctx.context()}: {backup}"
    reason = str(backup.get("lastFailureReason"))
    if ctx.want.rejected:
        assert INJECTED_FIELD in reason, f"{ctx.context()}: {backup}"
        await ctx.check_event(ctx.want.rejected, name)
    else:
        assert reason.startswith("snapshot: "), f"{ctx.context()}: {backup}"
    await ctx.later(ctx.check_event("BackupCancelled", name))


async def ca_configmap(ctx: Ctx) -> None:
    """spec.tls.caConfigMapRef: the launch reads the CA ConfigMap for the preflight. The test
    OpenBao is plain http, for which the probe builds no TLS context (the CA is read and not
    used: probe.py), so the preflight passes."""
    ctx.arm()
    name = await ctx.trigger("first")
    final, backup = await ctx.settled_run(name)
    ctx.check_rejected(final, backup)


async def foreign_free_lease(ctx: Ctx) -> None:
    """A free operation Lease made by another tool without our labels: our create answers
    AlreadyExists, so we read it and label it (the informer then sees it), wait one requeue
    (Blocked "lost the race") and take it over."""
    ctx.arm()
    name = await ctx.trigger("first")
    final, backup = await ctx.settled_run(name)
    ctx.check_rejected(final, backup)
    if ctx.want.rejected:
        await ctx.check_event(ctx.want.rejected, name)
    lease = await ctx.cluster.lease()
    assert lease is not None
    if not ctx.want.rejected:  # a refused label write is redone by the next launch
        labels = lease["metadata"].get("labels") or {}
        assert labels.get("backup.openbao.org/cluster") == "vault", ctx.context()


async def event_series(ctx: Ctx) -> None:
    """The same Warning event twice within 10 minutes (an over-long trigger value, seen by two
    reconciles) bumps the first Event's series instead of creating a second one."""
    ctx.arm()
    await ctx.cluster.trigger("x" * 1025)

    async def emitted() -> list[JSON]:
        return await ctx.cluster.events("InvalidTrigger")

    await until(emitted, timeout=15, what=f"{ctx.context()}: InvalidTrigger")
    await ctx.kube.api.merge_patch(
        path=ctx.cluster.path, body={"metadata": {"annotations": {"inprocess/poke": "1"}}}
    )

    def patched() -> bool:
        return any(c.key == ("PATCH", "events", "") for c in ctx.ctl.faults.calls[ctx.mark :])

    async def series_written() -> bool:
        return patched()

    await until(series_written, timeout=15, what=f"{ctx.context()}: the series PATCH")
    await ctx.ctl.settle()
    events = await ctx.cluster.events("InvalidTrigger")
    assert len(events) == 1, f"{ctx.context()}: {events}"
    count = int((events[0].get("series") or {}).get("count") or 1)
    if ctx.fault is None:
        assert count >= 2, events[0]
    stalled = await ctx.cluster.condition("Stalled")
    assert stalled is None or stalled.get("status") != "True", stalled


async def coalesced_trigger(ctx: Ctx) -> None:
    """A trigger value while a trigger record is queued (another backup runs) is listed on
    that record (trigger step) instead of creating a second one."""
    ctx.kubelet.hold = True
    first = await ctx.trigger("first")
    await ctx.wait_running(first)
    ctx.arm()
    queued = await ctx.trigger("second")
    await ctx.cluster.trigger("third")

    async def handled() -> bool:
        return (await ctx.cluster.backup_status()).get("lastHandledTrigger") == "third"

    await until(handled, timeout=20, what=f"{ctx.context()}: 'third' handled")
    # The queued record stays held until first is counted (it takes the lock over from first
    # as soon as first is finished, so first's lock release is not waited for here).
    ctx.kubelet.release.add(first)
    final = await ctx.terminal(first)
    assert final["status"]["phase"] == "Succeeded", final["status"]
    await ctx.cluster.wait_accounted(first)
    await ctx.no_result_finalizers(first)
    ctx.kubelet.hold = False
    ctx.kubelet.release.add(queued)
    final, backup = await ctx.settled_run(queued)
    ctx.check_rejected(final, backup)
    assert final["status"].get("coalescedTriggers") == ["third"], final["status"]
    assert final["status"].get("coalescedCount") == 1, final["status"]
    records = await ctx.cluster.records()
    assert len(records) == 2, [r["metadata"]["name"] for r in records]


async def lock_renewal(ctx: Ctx) -> None:
    """A backup that runs longer than a renewal period (15 s lock, renewed every 5 s): the
    renewal path renews the Lease, then the run ends."""
    ctx.kubelet.hold = True
    name = await ctx.trigger("first")
    await ctx.wait_running(name)
    lease = await ctx.cluster.lease()
    assert lease is not None
    acquired = lease["spec"]["renewTime"]
    ctx.arm()

    async def renewed_or_over() -> bool:
        rec = await ctx.record(name)
        if rec is not None and (rec.get("status") or {}).get("phase") in TERMINAL:
            return True
        held = await ctx.cluster.lease()
        return held is not None and held["spec"].get("renewTime") != acquired

    await until(renewed_or_over, timeout=30, what=f"{ctx.context()}: a renewal")
    ctx.kubelet.release.add(name)
    final, backup = await ctx.settled_run(name)
    ctx.check_rejected(final, backup)
    if ctx.want.rejected:
        await ctx.check_event(ctx.want.rejected, name)


# -- the table of scenarios ----------------------------------------------------------------------

HAPPY_PATH: frozenset[CallKey] = frozenset(
    {
        ("POST", "openbaobackups", ""),
        ("POST", "events", ""),
        ("PATCH", "openbaoclusters", "status"),
        ("POST", "leases", ""),
        ("POST", "jobs", ""),
        ("PATCH", "openbaobackups", "status"),
        ("PUT", "leases", ""),
        ("PATCH", "pods", ""),
        ("PATCH", "jobs", ""),
    }
)
"""One manual backup, trigger to finalizers (test_fault_table.INVENTORY)."""
LAUNCHED_AGAIN = HAPPY_PATH - {("POST", "leases", "")}
"""A manual backup when the Lease exists already (acquired with a PUT)."""
DELETION: frozenset[CallKey] = frozenset(
    {
        ("PUT", "leases", ""),  # the delete Job runs under the operation lock (delete/<record>)
        ("POST", "jobs", ""),
        ("PATCH", "openbaobackups", "status"),
        ("POST", "events", ""),
        ("PATCH", "pods", ""),
        ("PATCH", "jobs", ""),
        ("PATCH", "openbaobackups", ""),
    }
)
"""A Succeeded record deleted: the lock, its delete Job, SnapshotDeleted, finalizers, the
record."""


def delete_lock(call: Call) -> bool:
    """The Lease write taking the lock for a snapshot-delete Job."""
    return (call.lease_holder() or "").startswith("delete/")


def _cluster_spec(**backup: Any) -> Callable[[JSON], None]:
    def apply(body: JSON) -> None:
        body["spec"]["backup"].update(backup)

    return apply


@dataclass(frozen=True)
class Scenario:
    name: str
    story: Callable[[Ctx], Awaitable[None]]
    inventory: frozenset[CallKey]
    sites: tuple[Site, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "plain"
    """Extra setup: ``plain``, ``scheduled``, ``retention``, ``ca``, ``foreign-lease``."""
    may_appear: frozenset[CallKey] = frozenset()
    """Timing-dependent calls of this story, besides :data:`MAY_APPEAR`."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "manual-later-calls",
        manual_later_calls,
        HAPPY_PATH,
        (
            Site("result", ("PATCH", "openbaobackups", "status"), "running", phase_is("Succeeded")),
            Site("count", ("PATCH", "openbaoclusters", "status"), "finish", counts_outcome),
            Site("accounted", ("PATCH", "openbaobackups", "status"), "finish", only_accounted),
        ),
    ),
    Scenario(
        "scheduled-window",
        scheduled_window,
        HAPPY_PATH,
        (Site("create", ("POST", "openbaobackups", ""), "schedule"),),
        kind="scheduled",
    ),
    Scenario(
        "adopt-kubectl-record",
        adopted_record,
        (HAPPY_PATH - {("POST", "openbaobackups", "")}) | {("PATCH", "openbaobackups", "")},
        (Site("adopt", ("PATCH", "openbaobackups", ""), "deletion", merge_patch),),
    ),
    Scenario(
        "delete-succeeded-record",
        delete_succeeded,
        DELETION,
        (
            Site("delete-lock", ("PUT", "leases", ""), "deletion", delete_lock),
            Site("delete-job", ("POST", "jobs", ""), "deletion"),
            Site("deleted", ("PATCH", "openbaobackups", "status"), "deletion", snapshot_deleted),
            Site("pod-finalizer", ("PATCH", "pods", ""), "deletion"),
            Site("job-finalizer", ("PATCH", "jobs", ""), "deletion"),
            Site("finalizer", ("PATCH", "openbaobackups", ""), "deletion", json_patch),
        ),
    ),
    Scenario(
        "delete-job-fails-and-is-retried",
        delete_failed_then_retried,
        DELETION | {("DELETE", "jobs", "")},
        (Site("delete-failed-job", ("DELETE", "jobs", ""), "deletion"),),
        # a reconcile that still sees the failed Job (cache lag after its delete) repeats the
        # SnapshotDeleteFailed event: a series PATCH
        may_appear=frozenset({("PATCH", "events", "")}),
    ),
    Scenario(
        "retention-maxcount-1",
        retention_prunes,
        LAUNCHED_AGAIN | DELETION | {("DELETE", "openbaobackups", "")},
        (Site("prune", ("DELETE", "openbaobackups", ""), "finish"),),
        kind="retention",
    ),
    Scenario(
        "deleted-while-running",
        deleted_while_running,
        frozenset(
            {
                ("DELETE", "jobs", ""),
                ("POST", "events", ""),
                ("PATCH", "openbaobackups", "status"),
                ("PATCH", "openbaoclusters", "status"),
                ("PUT", "leases", ""),
                ("PATCH", "pods", ""),
                ("PATCH", "jobs", ""),
                ("PATCH", "openbaobackups", ""),
            }
        ),
        (
            Site("cancel", ("DELETE", "jobs", ""), "deletion"),
            Site("result", ("PATCH", "openbaobackups", "status"), "running", phase_is("Failed")),
            Site("finalizer", ("PATCH", "openbaobackups", ""), "deletion", json_patch),
        ),
    ),
    Scenario(
        "ca-configmap",
        ca_configmap,
        HAPPY_PATH | {("GET", "configmaps", "")},
        (Site("read-ca", ("GET", "configmaps", ""), "launch"),),
        kind="ca",
    ),
    Scenario(
        "foreign-lease-without-labels",
        foreign_free_lease,
        HAPPY_PATH | {("GET", "leases", ""), ("PATCH", "leases", "")},
        (
            Site("read-lease", ("GET", "leases", ""), "launch"),
            Site("label-lease", ("PATCH", "leases", ""), "launch"),
            Site("blocked", ("PATCH", "openbaobackups", "status"), "launch", phase_is("Pending")),
        ),
        kind="foreign-lease",
    ),
    Scenario(
        "event-series",
        event_series,
        frozenset({("POST", "events", ""), ("PATCH", "events", "")}),
        (Site("series", ("PATCH", "events", ""), "events"),),
    ),
    Scenario(
        "coalesced-trigger",
        coalesced_trigger,
        LAUNCHED_AGAIN,
        (Site("coalesce", ("PATCH", "openbaobackups", "status"), "trigger", coalesces),),
    ),
    Scenario(
        "lock-renewal",
        lock_renewal,
        frozenset(
            {
                ("PUT", "leases", ""),
                ("PATCH", "openbaobackups", "status"),
                ("PATCH", "openbaoclusters", "status"),
                ("PATCH", "pods", ""),
                ("PATCH", "jobs", ""),
            }
        ),
        (Site("renew", ("PUT", "leases", ""), "renewal", lease_taken),),
        settings={"operation_lock_seconds": 15},
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}

STUCK_DELETE_JOB = (
    "defect: deletion.handle, once SnapshotDeleted=True is written, only drops the record's "
    "finalizer on later passes (the `deleted` short-cut skips release_finalizers), so a failure "
    "after that write (its answer lost, or the result-finalizer PATCH of the delete pod/Job "
    "refused) leaves backup.openbao.org/result on the <record>-delete Job/pod forever"
)
RETENTION_NOT_RETRIED = (
    "defect: outcome.finish applies retention only while the record is not accounted, and "
    "writes status.accounted=True before re-raising the retention error, so a failed retention "
    "DELETE is never retried: the expired record stays until the next success"
)
FINISH_AFTER_LET_GO = (
    "defect: a deleted record whose result was written (answer lost) is let go by the deletion "
    "step (finalizer removed) before its finish step ran; finish then fails with 404 on the "
    "accounted write and never releases the lock (held until the 60 s lease expires) or the "
    "Job/pod result finalizers"
)
CANCEL_EVENT_LOST = (
    "defect (minor): when the cancel DELETE of the Job times out after being applied, the "
    "documented BackupCancelled Warning event is never emitted (the next pass sees the Job's "
    "deletionTimestamp and skips it)"
)
KNOWN_DEFECTS: dict[tuple[str, str, FaultStatus], str] = {}
"""(scenario, site, fault) -> the defect that makes the row disagree with the contract."""
RACY_DEFECTS: frozenset[tuple[str, str, FaultStatus]] = frozenset()
"""Rows whose defect shows only when the watch event of the lost write wakes the next pass
before the retry does (most runs): xfail, not strict."""


def faults_for(site: Site) -> tuple[FaultStatus, ...]:
    return READ_FAULTS if site.key[0] == "GET" else FAULTS


def rows() -> list[Any]:
    out = []
    for scenario in SCENARIOS:
        for site in scenario.sites:
            for fault in faults_for(site):
                marks = []
                defect = KNOWN_DEFECTS.get((scenario.name, site.id, fault))
                if defect:
                    strict = (scenario.name, site.id, fault) not in RACY_DEFECTS
                    marks.append(pytest.mark.xfail(strict=strict, reason=defect))
                out.append(
                    pytest.param(
                        scenario.name,
                        site.id,
                        fault,
                        id=f"{scenario.name}-{site.id}-{fault}",
                        marks=marks,
                    )
                )
    return out


# -- running a row ---------------------------------------------------------------------------------


def backup_manager(ctl: Running) -> BackupManager:
    for runner in ctl.app.runners:
        manager = runner._reconciler
        if isinstance(manager, BackupManager):
            return manager
    raise AssertionError("no backup-manager runner")


def _next_minute(at: dt.datetime, *, ahead: float) -> dt.datetime:
    t = at + dt.timedelta(seconds=ahead)
    return t.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


async def setup_cluster(kube: Kube, cluster: Cluster, scenario: Scenario) -> dict[str, Any]:
    body = cluster.body()
    extra: dict[str, Any] = {}
    if scenario.kind == "scheduled":
        window = _next_minute(utcnow(), ahead=60)
        body["spec"]["backup"]["schedule"] = f"{window.minute} {window.hour} * * *"
        extra["window"] = window
    elif scenario.kind == "retention":
        body["spec"]["backup"]["retention"] = {"maxCount": 1}
    elif scenario.kind == "ca":
        await kube.api.create(
            path=f"/api/v1/namespaces/{cluster.namespace}/configmaps",
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "openbao-ca"},
                "data": {
                    "ca.crt": "-----BEGIN CERTIFICATE-----\nunused\n-----END CERTIFICATE-----\n"
                },
            },
        )
        body["spec"]["tls"] = {"caConfigMapRef": {"name": "openbao-ca"}}
    elif scenario.kind == "foreign-lease":
        await kube.api.create(
            path=cluster.lease_path.rsplit("/", 1)[0],
            body={
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": f"{cluster.name}-openbao-oplock"},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": 60},
            },
        )
    await kube.api.create(path=f"{cluster.base}/openbaoclusters", body=body)
    return extra


@dataclass
class Outcome:
    calls: list[Call]
    seconds: float

    @property
    def inventory(self) -> set[CallKey]:
        return {c.key for c in self.calls}


async def run_row(
    *,
    kube: Kube,
    kubeconfig: Path,
    openbao_addr: str,
    scenario: Scenario,
    site: Site | None,
    fault: FaultStatus | None,
) -> Outcome:
    start = time.monotonic()
    namespace = await kube.create_namespace()
    try:
        async with run_controller(
            kubeconfig=kubeconfig, namespace=namespace, **dict(scenario.settings)
        ) as ctl:
            cluster = Cluster(
                kube=kube, namespace=namespace, name="vault", openbao_addr=openbao_addr
            )
            extra = await setup_cluster(kube, cluster, scenario)
            await ctl.settle()
            kubelet = Kubelet(kube, namespace)
            task = asyncio.create_task(kubelet.run())
            try:
                ctx = Ctx(
                    kube=kube,
                    namespace=namespace,
                    ctl=ctl,
                    cluster=cluster,
                    kubelet=kubelet,
                    site=site,
                    fault=fault,
                    extra=extra,
                )
                await scenario.story(ctx)
                await ctl.settle()
                end = ctl.faults.mark()
                story_calls = list(ctl.faults.calls[ctx.mark : end])
                if ctx.armed is not None:
                    assert ctx.armed.fired, f"{ctx.context()}: the fault never fired"
                ctl.faults.clear()
                await check_nothing_stuck(ctx)
                await fresh_trigger_runs(ctx)
                assert not ctx.late, "\n".join(ctx.late)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            ctl.check_alive()
    finally:
        await kube.delete_namespace(namespace)
    return Outcome(calls=story_calls, seconds=time.monotonic() - start)


async def check_nothing_stuck(ctx: Ctx) -> None:
    assert (await ctx.cluster.lock_holder()) in (None, ""), ctx.context()
    await ctx.later(ctx.no_result_finalizers())

    async def settled() -> list[str]:
        bad = []
        for rec in await ctx.kube.items(ctx.records_path):
            meta, status = rec["metadata"], rec.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") not in TERMINAL:
                deleting = meta.get("deletionTimestamp")
                bad.append(f"{meta['name']}: {status.get('phase')} deleting={deleting}")
        return bad

    async def none_stuck() -> bool:
        return not await settled()

    try:
        await until(none_stuck, timeout=15, what="every record terminal, none deleting")
    except AssertionError:
        raise AssertionError(f"{ctx.context()}: stuck records {await settled()}") from None


async def fresh_trigger_runs(ctx: Ctx) -> None:
    """The invariant: the cluster's next backup still runs and succeeds."""
    ctx.kubelet.hold = False
    name = await ctx.trigger("fresh")
    final, backup = await ctx.settled_run(name)
    assert final["status"]["phase"] == "Succeeded", f"{ctx.context()}: fresh {final['status']}"
    assert backup.get("consecutiveFailures") == 0, f"{ctx.context()}: fresh {backup}"
    # A snapshot-delete Job (retention) may take the lock after the backup: it must end too.
    await ctx.lock_free()


class Table:
    """Runs the selected rows concurrently (each its own namespace, App and cluster), at most
    ``parallel`` at a time, in collection order; each test awaits its own row."""

    def __init__(self, *, kube: Kube, kubeconfig: Path, openbao_addr: str, parallel: int) -> None:
        self._kube = kube
        self._kubeconfig = kubeconfig
        self._addr = openbao_addr
        self._sem = asyncio.Semaphore(parallel)
        self._tasks: dict[tuple[str, str, FaultStatus | None], asyncio.Task[Outcome]] = {}
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    def start(self, scenario: str, site: str, fault: FaultStatus | None) -> None:
        key = (scenario, site, fault)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._row(*key), name=f"row {key}")

    async def _row(self, scenario: str, site_id: str, fault: FaultStatus | None) -> Outcome:
        s = BY_NAME[scenario]
        site = next((x for x in s.sites if x.id == site_id), None)
        async with self._sem:
            start = time.monotonic()
            try:
                return await run_row(
                    kube=self._kube,
                    kubeconfig=self._kubeconfig,
                    openbao_addr=self._addr,
                    scenario=s,
                    site=site,
                    fault=fault,
                )
            finally:
                self.seconds[f"{scenario}-{site_id or 'clean'}-{fault}"] = time.monotonic() - start

    async def result(self, scenario: str, site: str, fault: FaultStatus | None) -> Outcome:
        self.start(scenario, site, fault)
        return await self._tasks[(scenario, site, fault)]

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


@pytest.fixture(scope="module")
async def table(
    request: pytest.FixtureRequest, kube: Kube, control_plane: ControlPlane, openbao: OpenBao
) -> AsyncIterator[Table]:
    parallel = int(os.environ.get("OBB_INPROCESS_PARALLEL", "8"))
    t = Table(
        kube=kube,
        kubeconfig=control_plane.kubeconfig,
        openbao_addr=openbao.addr,
        parallel=parallel,
    )
    for item in request.session.items:  # only the selected rows, in collection order
        callspec = getattr(item, "callspec", None)
        if callspec is None or getattr(item, "module", None) is not request.module:
            continue
        params = callspec.params
        if getattr(item, "originalname", "") == "test_scenario_inventory":
            t.start(params["scenario"], "", None)
        elif getattr(item, "originalname", "") == "test_scenario_fault_row":
            t.start(params["scenario"], params["site"], params["fault"])
    try:
        yield t
    finally:
        await t.close()
        print(
            f"\nfault scenarios: {time.monotonic() - t.started:.1f}s wall, {parallel} in parallel"
        )
        slowest = sorted(t.seconds.items(), key=lambda kv: -kv[1])[:8]
        print("slowest rows:", ", ".join(f"{k} {v:.1f}s" for k, v in slowest))


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
async def test_scenario_inventory(table: Table, scenario: str) -> None:
    """The story's clean run: its documented outcome, and exactly its listed calls."""
    s = BY_NAME[scenario]
    outcome = await table.result(scenario, "", None)
    observed = outcome.inventory
    print(f"{scenario}: {outcome.seconds:.1f}s, inventory {sorted(observed)}")
    missing = s.inventory - observed
    extra = observed - s.inventory - MAY_APPEAR - s.may_appear
    assert not missing and not extra, (
        f"{scenario}: inventory changed: missing {sorted(missing)}, new {sorted(extra)}; "
        "update the scenario (a new call site needs a Site)"
    )
    for site in s.sites:
        assert site.key in s.inventory, (scenario, site)
        made = [c for c in outcome.calls if c.key == site.key]
        assert any(site.where is None or site.where(c) for c in made), (
            f"{scenario}: site {site.id} matches no call of the clean run"
        )


@pytest.mark.parametrize(("scenario", "site", "fault"), rows())
async def test_scenario_fault_row(
    table: Table, scenario: str, site: str, fault: FaultStatus
) -> None:
    await table.result(scenario, site, fault)


def test_every_site_has_a_step() -> None:
    steps = {
        "deletion",
        "running",
        "finish",
        "schedule",
        "trigger",
        "launch",
        "bookkeeping",
        "renewal",
    }
    for s in SCENARIOS:
        for site in s.sites:
            assert site.step in steps | {"events"}, site
        assert len({site.id for site in s.sites}) == len(s.sites), s.name


@pytest.fixture(scope="module", autouse=True)
def _wall_time() -> Any:
    start = time.monotonic()
    yield
    print(f"\ntests/inprocess/test_fault_scenarios.py wall time: {time.monotonic() - start:.1f}s")
