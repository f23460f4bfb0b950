"""The backup manager's failure model (docs: /tmp/failure-contract.md, issue 8 item 3), tested
in process against the real local apiserver and Job controller, with injected API faults.

1. ``test_inventory``: one triggered backup, happy path; the distinct API calls the reconcile
   loop makes must equal :data:`INVENTORY` (a new call site fails here until it is added, and
   given its step in :data:`STEP`, so the fault table covers it).
2. ``test_fault_row``: every inventory entry x every fault (409, 422, 429, 500, timeout) on the
   first matching call after the trigger: the record reaches the contract's terminal phase, the
   Lease is released, the failure is counted 0 or 1 times, and the next trigger still runs.
3. ``test_stalled_after_three_failures``: the same step failing 3 times in a row raises the
   ``ReconcileRetrying`` event and the ``Stalled`` condition, cleared by a clean reconcile.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from tests.inprocess.conftest import World
from tests.inprocess.harness import (
    INJECTED_FIELD,
    KINDS,
    RESULT_FINALIZER,
    Call,
    CallKey,
    Cluster,
    FaultStatus,
    Kube,
    Running,
    auto_kubelet,
    run_controller,
    until,
)

pytestmark = pytest.mark.integration

# -- the table -------------------------------------------------------------------------------

INVENTORY: frozenset[CallKey] = frozenset(
    {
        ("POST", "openbaobackups", ""),  # trigger: the annotation becomes a record
        ("POST", "events", ""),  # BackupQueued, BackupStarted (best effort)
        ("PATCH", "openbaoclusters", "status"),  # bookkeeping (lastHandledTrigger), accounting
        ("POST", "leases", ""),  # launch: the operation lock (first use: create)
        ("POST", "jobs", ""),  # launch: the executor Job
        ("PATCH", "openbaobackups", "status"),  # launch (Running), result, accounted
        ("PUT", "leases", ""),  # finish: release
        ("PATCH", "pods", ""),  # finish: result finalizer off the pod
        ("PATCH", "jobs", ""),  # finish: result finalizer off the Job
    }
)
"""Distinct (verb, resource, subresource) of one triggered backup, trigger to finalizers."""

MAY_APPEAR: frozenset[CallKey] = frozenset(
    {
        ("GET", "jobs", ""),  # running: the Job is not in the informer cache yet (cache lag)
    }
)
"""Calls that happen or not depending on informer timing; allowed, not required."""

STEP: dict[CallKey, str] = {
    ("POST", "openbaobackups", ""): "trigger",
    ("POST", "events", ""): "events",
    ("PATCH", "openbaoclusters", "status"): "bookkeeping",
    ("POST", "leases", ""): "launch",
    ("POST", "jobs", ""): "launch",
    ("PATCH", "openbaobackups", "status"): "launch",
    ("PUT", "leases", ""): "finish",
    ("PATCH", "pods", ""): "finish",
    ("PATCH", "jobs", ""): "finish",
    ("GET", "jobs", ""): "running",
}
"""The contract step that makes the FIRST such call after a trigger."""

PER_RECORD_STEPS = frozenset({"launch", "running"})
FAULTS: tuple[FaultStatus, ...] = (409, 422, 429, 500, "timeout")
TRANSIENT: frozenset[FaultStatus] = frozenset({409, 429, 500, "timeout"})
DEFINITE_REFUSAL: frozenset[FaultStatus] = frozenset({409, 429})
READ_ONLY_IMPOSSIBLE: frozenset[FaultStatus] = frozenset({409, 422})
"""A GET never answers 409 or 422: those rows are not part of the table."""
# MAY_APPEAR calls are not rows: whether they happen at all depends on informer timing, so a
# row could not arm its fault reliably. A call that becomes regular belongs in INVENTORY.


@dataclass(frozen=True)
class Expect:
    phase: str
    failure_reason: str | None
    failures: int


def expected(key: CallKey, fault: FaultStatus) -> Expect:
    step = STEP[key]
    if step == "events" or fault in TRANSIENT or step not in PER_RECORD_STEPS:
        return Expect("Succeeded", None, 0)
    kind = KINDS[key[1]][0]
    return Expect("Failed", f"{kind}Rejected", 1)


def rows() -> list[Any]:
    out = []
    for key in sorted(INVENTORY):
        for fault in FAULTS:
            if key[0] == "GET" and fault in READ_ONLY_IMPOSSIBLE:
                continue
            label = f"{key[0]}-{key[1]}{'-' + key[2] if key[2] else ''}-{fault}"
            out.append(pytest.param(key, fault, id=label))
    return out


# -- helpers -------------------------------------------------------------------------------


@dataclass
class Run:
    record: str
    final: dict[str, Any]
    backup_status: dict[str, Any]


def _describe(calls: list[Call]) -> str:
    return "\n".join(f"  {c.verb} {c.resource}/{c.subresource} {c.name}" for c in calls)


async def one_backup(
    cluster: Cluster, ctl: Running, value: str, *, known: set[str], timeout: float = 60.0
) -> Run:
    """Trigger ``value``; wait for its record to end, the lock to be free and the outcome to be
    counted on the cluster."""
    await cluster.trigger(value)
    rec = await cluster.new_record(known, timeout=timeout)
    name = str(rec["metadata"]["name"])
    try:
        final = await cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout=timeout)
    except AssertionError as exc:
        ctl.check_alive()
        raise AssertionError(f"{exc}\ncalls so far:\n{_describe(ctl.faults.calls[-40:])}") from None
    await cluster.wait_lock_free(timeout=timeout)
    status = await cluster.wait_accounted(name, timeout=timeout)
    return Run(record=name, final=final, backup_status=status)


async def finalizers_released(
    cluster: Cluster, record: str, *, timeout: float = 30.0, context: str = ""
) -> None:
    async def probe() -> bool:
        for job in await cluster.jobs_of(record):
            if RESULT_FINALIZER in (job["metadata"].get("finalizers") or ()):
                return False
        pods = await cluster.kube.items(
            f"/api/v1/namespaces/{cluster.namespace}/pods",
            selector=f"backup.openbao.org/backup={record}",
        )
        return all(RESULT_FINALIZER not in (p["metadata"].get("finalizers") or ()) for p in pods)

    await until(probe, timeout=timeout, what=f"{context}: result finalizers of {record} released")


# -- 1. the inventory --------------------------------------------------------------------------


async def test_inventory(world: World, kubelet: None) -> None:
    ctl, cluster = world.controller, world.cluster
    mark = ctl.faults.mark()
    run = await one_backup(cluster, ctl, "inventory", known=set())
    assert run.final["status"]["phase"] == "Succeeded", run.final["status"]
    assert run.backup_status.get("consecutiveFailures") == 0
    await finalizers_released(cluster, run.record)
    await ctl.settle()
    observed = ctl.faults.inventory(mark)
    print("observed inventory:", sorted(observed))
    missing = INVENTORY - observed
    extra = observed - INVENTORY - MAY_APPEAR
    assert not missing and not extra, (
        f"inventory changed: missing {sorted(missing)}, new {sorted(extra)}; update INVENTORY "
        f"and STEP (new call sites need a row)\n{_describe(ctl.faults.calls[mark:])}"
    )
    assert set(STEP) == INVENTORY | MAY_APPEAR


# -- 2. the fault table --------------------------------------------------------------------------


def _lock_writes(calls: list[Call]) -> list[str | None]:
    return [c.lease_holder() for c in calls if c.resource == "leases" and c.verb != "GET"]


def _check_lock_on_job_create(calls: list[Call], fired: Call, fault: FaultStatus) -> None:
    """Contract: a definite refusal of the Job create releases the lock before the retry; an
    ambiguous one (timeout, 5xx) keeps it."""
    start = next(i for i, c in enumerate(calls) if c is fired)
    end = len(calls)
    for j in range(start + 1, len(calls)):
        c = calls[j]
        running = (
            c.key == ("PATCH", "openbaobackups", "status")
            and isinstance(c.body, dict)
            and (c.body.get("status") or {}).get("phase") == "Running"
        )
        if c.key == ("POST", "jobs", "") or running:
            end = j
            break
    between = calls[start + 1 : end]
    released = "" in _lock_writes(between)
    if fault in DEFINITE_REFUSAL:
        assert released, (
            f"a {fault} on the Job create must release the lock before retrying; calls:\n"
            f"{_describe(between)}"
        )
    else:
        assert not released, (
            f"a {fault} on the Job create is ambiguous (the Job may exist): the lock must be "
            f"kept; calls:\n{_describe(between)}"
        )


async def fault_row(world: World, key: CallKey, fault: FaultStatus) -> None:
    ctl, cluster = world.controller, world.cluster
    want = expected(key, fault)
    verb, resource, sub = key
    armed = ctl.faults.fail(verb=verb, resource=resource, subresource=sub, status=fault)

    first = await one_backup(cluster, ctl, "first", known=set())
    status = first.final.get("status") or {}
    context = (
        f"row {key} x {fault}: record {first.record} {status.get('phase')} "
        f"reason={status.get('failureReason')!r} message={status.get('message')!r}; "
        f"fault fired on {[(c.verb, c.resource, c.subresource, c.name) for c in armed.fired]}"
    )
    # The run is over once its Job and pods are let go (finish: finalizers released) and, for a
    # failed record, its Job deleted; only then has every call of the run been made.
    await finalizers_released(cluster, first.record, context=context)
    if want.phase == "Failed" or status.get("phase") == "Failed":

        async def no_live_job() -> bool:
            jobs = await cluster.jobs_of(first.record)
            return all(j["metadata"].get("deletionTimestamp") for j in jobs)

        await until(no_live_job, timeout=30, what=f"{context}: the failed record's Job deleted")
    assert armed.fired, f"{context}: the fault never fired (call site moved?)"
    ctl.faults.clear()

    assert status.get("phase") == want.phase, context
    if want.phase == "Failed":
        assert status.get("failureReason") == want.failure_reason, context
        assert INJECTED_FIELD in str(status.get("message") or ""), (
            f"{context}: status.message must carry the apiserver's message (naming the field)"
        )
        events = [
            e
            for e in await cluster.events(want.failure_reason)
            if (e.get("regarding") or {}).get("name") == first.record
        ]
        assert events and all(e.get("type") == "Warning" for e in events), (
            f"{context}: no Warning event {want.failure_reason} on the record"
        )

    assert (await cluster.lock_holder()) in (None, ""), context
    assert first.backup_status.get("consecutiveFailures") == want.failures, (
        f"{context}: status.backup={first.backup_status}"
    )
    if key == ("POST", "jobs", "") and fault != 422 and armed.fired:
        _check_lock_on_job_create(ctl.faults.calls, armed.fired[0], fault)

    # The cluster's next backup still runs.
    second = await one_backup(cluster, ctl, "second", known={first.record})
    assert (second.final.get("status") or {}).get("phase") == "Succeeded", (
        f"{context}; next record {second.record}: {second.final.get('status')}"
    )
    assert second.backup_status.get("consecutiveFailures") == 0, second.backup_status
    assert (await cluster.lock_holder()) == "", context
    ctl.check_alive()


class Table:
    """Runs the selected rows concurrently (each: its own namespace, App and cluster), at most
    ``parallel`` at a time, in table order; each parametrized test awaits its own row."""

    def __init__(self, *, kube: Kube, kubeconfig: Path, openbao_addr: str, parallel: int) -> None:
        self._kube = kube
        self._kubeconfig = kubeconfig
        self._addr = openbao_addr
        self._sem = asyncio.Semaphore(parallel)
        self._tasks: dict[tuple[CallKey, FaultStatus], asyncio.Task[float]] = {}
        self.started = time.monotonic()

    def start(self, key: CallKey, fault: FaultStatus) -> None:
        if (key, fault) not in self._tasks:
            self._tasks[(key, fault)] = asyncio.create_task(
                self._row(key, fault), name=f"row {key} x {fault}"
            )

    async def _row(self, key: CallKey, fault: FaultStatus) -> float:
        async with self._sem:
            start = time.monotonic()
            namespace = await self._kube.create_namespace()
            try:
                async with run_controller(kubeconfig=self._kubeconfig, namespace=namespace) as ctl:
                    cluster = Cluster(
                        kube=self._kube, namespace=namespace, name="vault", openbao_addr=self._addr
                    )
                    await cluster.create()
                    await ctl.settle()
                    kubelet = asyncio.create_task(auto_kubelet(self._kube, namespace))
                    try:
                        world = World(
                            kube=self._kube,
                            kubeconfig=self._kubeconfig,
                            openbao_addr=self._addr,
                            namespace=namespace,
                            controller=ctl,
                            cluster=cluster,
                        )
                        await fault_row(world, key, fault)
                    finally:
                        kubelet.cancel()
                        await asyncio.gather(kubelet, return_exceptions=True)
            finally:
                await self._kube.delete_namespace(namespace)
            return time.monotonic() - start

    async def result(self, key: CallKey, fault: FaultStatus) -> float:
        self.start(key, fault)
        return await self._tasks[(key, fault)]

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


@pytest.fixture(scope="module")
async def table(
    request: pytest.FixtureRequest, kube: Kube, control_plane: ControlPlane, openbao: OpenBao
) -> AsyncIterator[Table]:
    parallel = int(os.environ.get("OBB_INPROCESS_PARALLEL", "6"))
    t = Table(
        kube=kube,
        kubeconfig=control_plane.kubeconfig,
        openbao_addr=openbao.addr,
        parallel=parallel,
    )
    for item in request.session.items:  # only the selected rows, in collection order
        callspec = getattr(item, "callspec", None)
        if getattr(item, "originalname", "") == "test_fault_row" and callspec is not None:
            t.start(callspec.params["key"], callspec.params["fault"])
    try:
        yield t
    finally:
        await t.close()
        print(f"\nfault table: {time.monotonic() - t.started:.1f}s wall, {parallel} in parallel")


@pytest.mark.parametrize(("key", "fault"), rows())
async def test_fault_row(table: Table, key: CallKey, fault: FaultStatus) -> None:
    await table.result(key, fault)


# -- 3. stalled ------------------------------------------------------------------------------------


async def test_stalled_after_three_failures(world: World, kubelet: None) -> None:
    from controller.metrics import REGISTRY

    steps = ("deletion", "running", "finish", "schedule", "trigger", "launch", "bookkeeping")
    kinds = ("transient", "terminal", "bug")
    metric = "openbao_backup_reconcile_errors_total"
    for step in steps:
        for kind in kinds:
            value = REGISTRY.get_sample_value(metric, {"step": step, "kind": kind})
            assert value is not None, f"{metric}{{step={step},kind={kind}}} is not pre-created"
    before = REGISTRY.get_sample_value(metric, {"step": "trigger", "kind": "transient"}) or 0.0

    ctl, cluster = world.controller, world.cluster
    ctl.faults.fail(verb="POST", resource="openbaobackups", status=500, times=3)
    run = await one_backup(cluster, ctl, "stall", known=set())
    assert run.final["status"]["phase"] == "Succeeded"

    after = REGISTRY.get_sample_value(metric, {"step": "trigger", "kind": "transient"}) or 0.0
    assert after - before >= 3

    async def retrying() -> list[dict[str, Any]]:
        return [
            e
            for e in await cluster.events("ReconcileRetrying")
            if (e.get("regarding") or {}).get("kind") == "OpenBaoCluster"
        ]

    events = await until(retrying, timeout=10, what="a ReconcileRetrying event on the cluster")
    assert events[0]["type"] == "Warning"
    assert str(events[0].get("note") or "").startswith("trigger: "), events[0]
    stalled_writes = [
        c
        for c in ctl.faults.calls
        if c.key == ("PATCH", "openbaoclusters", "status")
        and any(
            cond.get("type") == "Stalled" and cond.get("status") == "True"
            for cond in ((c.body or {}).get("status") or {}).get("conditions") or ()
        )
    ]
    assert stalled_writes, "Stalled=True was never written"
    cond = next(
        c for c in stalled_writes[0].body["status"]["conditions"] if c.get("type") == "Stalled"
    )
    assert cond.get("reason") == "Trigger", cond

    async def cleared() -> bool:
        c = await cluster.condition("Stalled")
        return c is not None and c.get("status") == "False"

    await until(cleared, timeout=10, what="Stalled cleared after a clean reconcile")


# -- timing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _table_wall_time() -> Any:
    start = time.monotonic()
    yield
    print(f"\ntests/inprocess/test_fault_table.py wall time: {time.monotonic() - start:.1f}s")
