"""Launching the next Pending record: deadline check, preflight, the lock, the executor Job.

Guarantees:

* the record launched is the oldest Pending one (:func:`~..decide.records.next_pending`); a
  scheduled record past its ``startingDeadlineSeconds`` ends ``Failed``/``MissedSchedule``
  (counted as missed, not as a failed run) and the next one is considered;
* the Job manifest is built before anything else, so a spec that cannot produce one (e.g. an
  executor image the controller does not trust: ``ExecutorImageNotAllowed``) fails the record
  without a probe, a lock or a Job;
* a Job is created only after the preflight passed (OpenBao reachable, initialised,
  unsealed, with an active node) AND this run holds the cluster's operation lock; blocked work
  shows phase ``Pending`` with a ``Blocked`` condition naming the reason (and a
  ``PreflightBlocked`` event), and says when to look again (the lock's expiry, or a preflight
  retry); records waiting behind another backup of the cluster show phase ``Pending`` with
  ``Blocked`` reason ``Queued`` naming it (:func:`mark_queued`);
* with executor-Job caps (``--max-concurrent-backups``, ``--max-concurrent-backups-per-target``)
  a launch first takes a slot (:mod:`.slots`, oldest due first across all clusters); one that
  gets none waits Pending with ``Blocked`` reason ``ConcurrencyLimit``, without a probe, and
  is woken by the reconcile that frees a slot (:meth:`.slots.LaunchSlots.wake`), its timed
  requeue (:func:`~..decide.timing.cap_retry_delay`) being only the fallback;
* the Job name is derived from the record, so a crash or failover between any two steps
  re-finds the same Job (AlreadyExists = adopt), never starts a second one;
* the record becomes ``Running`` (``jobName``, ``startTime``, a copy of the target) only
  after its Job exists; the ``BackupStarted`` event is emitted once, with that write;
* errors are raised, never swallowed: the reconciler classifies them
  (:mod:`controller.backup.decide.failures`) and fails the record or retries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.lock import me
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide.jobspec import build_job
from controller.backup.decide.preflight import Verdict, assess
from controller.backup.decide.records import (
    PENDING,
    RUNNING,
    created_at,
    name_of,
    scheduled_time,
)
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.spread import offset_seconds
from controller.backup.decide.timing import PREFLIGHT_RETRY_SECONDS, cap_retry_delay
from controller.cache.store import JSONObject, thaw
from controller.errors import AlreadyExists, NotFound
from controller.kube.resources import JOB

BACKUP = names.JobPurpose.BACKUP


@dataclass(frozen=True)
class Blocked:
    """Why the record waits (``reason`` CamelCase) and when to look again."""

    reason: str
    message: str
    retry_at: dt.datetime


def past_deadline(
    record: Mapping[str, Any], *, cluster: ClusterSpec, now: dt.datetime, offset: int = 0
) -> str:
    """A message if ``record`` is a scheduled window past its starting deadline (counted from
    the window plus the cluster's spread ``offset``), else ``""``."""
    assert cluster.backup is not None
    window = scheduled_time(record)
    deadline = cluster.backup.starting_deadline_seconds
    if window is None or deadline is None:
        return ""
    if now <= window + dt.timedelta(seconds=offset + deadline):
        return ""
    return (
        f"window {cond.rfc3339(window)} could not start within startingDeadlineSeconds={deadline}"
    )


async def openbao_ca(deps: Deps, cluster: ClusterSpec) -> str | None:
    """The CA bundle the preflight trusts (the cluster's ConfigMap), if any."""
    ref = cluster.ca_configmap
    if ref is None:
        return None
    try:
        cm = await deps.api.get(
            path=f"/api/v1/namespaces/{cluster.namespace}/configmaps/{ref.name}"
        )
    except NotFound:
        return None
    return str((cm.get("data") or {}).get(ref.key) or "") or None


async def launch(
    deps: Deps, *, cluster: ClusterSpec, cluster_obj: Mapping[str, Any], record: JSONObject
) -> JSONObject | Blocked:
    """Start ``record``: the Running record, or why it is blocked."""
    ns, rec = cluster.namespace, name_of(record)
    if deps.job_of(namespace=ns, record=rec, purpose=BACKUP) is not None:  # adopting a launch
        return await _start(deps, cluster=cluster, cluster_obj=cluster_obj, record=record)
    now = deps.now()
    target = ((cluster_obj.get("spec") or {}).get("backup") or {}).get("target") or {}
    admission = deps.slots.try_admit(
        record=f"{ns}/{rec}",
        cluster=f"{ns}/{cluster.name}",
        due=due_at(deps, record, cluster=cluster),
        target=target,
        now=now,
    )
    if not admission.admitted:
        retry = now + dt.timedelta(seconds=cap_retry_delay(admission.position))
        message = (
            f"waiting for a free executor slot (at most {deps.slots.max_total} "
            f"Jobs at once, {deps.slots.max_per_target or 'unlimited'} per storage target); "
            "the oldest due backups start first"
        )
        return Blocked(CONCURRENCY_LIMIT, message, retry)
    with deps.slots.admitted(f"{ns}/{rec}"):
        return await _start(deps, cluster=cluster, cluster_obj=cluster_obj, record=record)


CONCURRENCY_LIMIT = "ConcurrencyLimit"
"""The ``Blocked`` (and ``PreflightBlocked``) reason of a launch waiting for an executor slot."""


def due_at(deps: Deps, record: Mapping[str, Any], *, cluster: ClusterSpec) -> dt.datetime:
    """When ``record`` became due: its window plus the cluster's spread offset, or its
    creation (triggers)."""
    window = scheduled_time(record)
    if window is None:
        return created_at(record)
    return window + dt.timedelta(seconds=spread_offset(deps, cluster))


def spread_offset(deps: Deps, cluster: ClusterSpec) -> int:
    assert cluster.backup is not None
    return offset_seconds(
        namespace=cluster.namespace,
        name=cluster.name,
        spread_seconds=deps.spread_seconds,
        starting_deadline_seconds=cluster.backup.starting_deadline_seconds,
    )


async def _start(
    deps: Deps, *, cluster: ClusterSpec, cluster_obj: Mapping[str, Any], record: JSONObject
) -> JSONObject | Blocked:
    """Preflight, lock, Job, Running: the launch once it may take an executor slot."""
    now = deps.now()
    ns, rec = cluster.namespace, name_of(record)
    job_name = names.job_name(record=rec, purpose=BACKUP)
    if deps.job_of(namespace=ns, record=rec, purpose=BACKUP) is None:
        # Built first: a spec that cannot produce a Job (an untrusted image, say) fails the
        # record before anything is probed or locked.
        body = build_job(
            cluster=cluster,
            record=record,
            job_name=job_name,
            purpose="backup",
            image=deps.executor_image,
            ttl_seconds_after_finished=deps.job_ttl_seconds,
        )
        probe = await deps.probe(address=cluster.address, ca_pem=await openbao_ca(deps, cluster))
        verdict = assess(probe)
        if verdict.verdict is not Verdict.READY:
            retry = now + dt.timedelta(seconds=PREFLIGHT_RETRY_SECONDS)
            return Blocked(verdict.reason, verdict.message, retry)
        attempt = await deps.lock.acquire(namespace=ns, cluster=cluster.name, me=me(rec), now=now)
        if not attempt.held:
            assert attempt.retry_at is not None
            return Blocked("LockHeld", attempt.message, attempt.retry_at)
        with contextlib.suppress(AlreadyExists):
            created = await deps.api.create(path=JOB.path(namespace=ns), body=body)
            deps.jobs.remember(created, created=True)  # seen before the watch delivers it
    raw_target = thaw(((cluster_obj.get("spec") or {}).get("backup") or {}).get("target") or {})
    window = scheduled_time(record)
    status: dict[str, Any] = {
        "phase": RUNNING,
        "jobName": job_name,
        "startTime": cond.rfc3339(now),
        "target": raw_target,
        "conditions": cond.set_condition(
            (record.get("status") or {}).get("conditions"),
            type=cond.BLOCKED,
            status="False",
            reason="Launched",
            message=f"executor Job {job_name} created",
            observed_generation=None,
            now=now,
        ),
    }
    if window is not None:
        status["scheduledTime"] = cond.rfc3339(window)
    updated = await deps.status.backup(obj=record, status=status)
    await deps.events.emit(
        obj=record, type="Normal", reason="BackupStarted", note=f"executor Job {job_name} started"
    )
    return updated


async def mark_blocked(deps: Deps, *, record: JSONObject, blocked: Blocked) -> None:
    """The record waits: phase ``Pending``, a ``Blocked`` condition and a Warning event, written
    only when the reason or message changed (a long block costs no writes). A wait for an
    executor slot (``ConcurrencyLimit``) gets no event: like a record queued behind its
    cluster's running backup it is normal flow under a cap, not a problem, and at a window
    shared by a thousand clusters an event per waiting backup would be hundreds of writes
    ahead of the Jobs (the condition and ``openbao_backup_queued`` show it)."""
    wrote = await _mark_waiting(deps, record=record, reason=blocked.reason, message=blocked.message)
    if wrote and blocked.reason != CONCURRENCY_LIMIT:
        await deps.events.emit(
            obj=record,
            type="Warning",
            reason="PreflightBlocked",
            note=f"{blocked.reason}: {blocked.message}",
        )


async def mark_queued(deps: Deps, *, record: JSONObject, behind: str) -> None:
    """The record waits its turn behind ``behind`` (a running or older blocked record): phase
    ``Pending`` and ``Blocked=True`` with reason ``Queued``, written once (no event: queueing
    is normal flow, not a problem)."""
    await _mark_waiting(
        deps, record=record, reason=QUEUED, message=f"waiting for {behind} (one backup at a time)"
    )


QUEUED = "Queued"
"""The ``Blocked`` reason of a record waiting behind another backup of its cluster."""


async def _mark_waiting(deps: Deps, *, record: JSONObject, reason: str, message: str) -> bool:
    """Write phase Pending and ``Blocked=True`` (reason, message) unless already there; True
    when it wrote."""
    status = record.get("status") or {}
    conditions = status.get("conditions")
    current = cond.get_condition(conditions, cond.BLOCKED)
    if (
        status.get("phase") == PENDING
        and current is not None
        and current.get("status") == "True"
        and current.get("reason") == reason
        and current.get("message") == message[:1024]
    ):
        return False
    await deps.status.backup(
        obj=record,
        status={
            "phase": PENDING,
            "conditions": cond.set_condition(
                conditions,
                type=cond.BLOCKED,
                status="True",
                reason=reason,
                message=message,
                observed_generation=None,
                now=deps.now(),
            ),
        },
    )
    return True
