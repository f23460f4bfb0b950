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
  stays Pending with a ``Blocked`` condition and a ``PreflightBlocked`` event, and says when
  to look again (the lock's expiry, or a preflight retry);
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
from controller.backup.decide.records import RUNNING, name_of, scheduled_time
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.timing import PREFLIGHT_RETRY_SECONDS
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


def past_deadline(record: Mapping[str, Any], *, cluster: ClusterSpec, now: dt.datetime) -> str:
    """A message if ``record`` is a scheduled window past its starting deadline, else ``""``."""
    assert cluster.backup is not None
    window = scheduled_time(record)
    deadline = cluster.backup.starting_deadline_seconds
    if window is None or deadline is None:
        return ""
    if now <= window + dt.timedelta(seconds=deadline):
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
            await deps.api.create(path=JOB.path(namespace=ns), body=body)
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
    """The record waits: a ``Blocked`` condition and an event, both only when the reason or
    message changed (a long block costs no writes)."""
    conditions = (record.get("status") or {}).get("conditions")
    current = cond.get_condition(conditions, cond.BLOCKED)
    if (
        current is None
        or current.get("status") != "True"
        or current.get("reason") != blocked.reason
        or current.get("message") != blocked.message[:1024]
    ):
        await deps.status.backup(
            obj=record,
            status={
                "phase": "Pending",
                "conditions": cond.set_condition(
                    conditions,
                    type=cond.BLOCKED,
                    status="True",
                    reason=blocked.reason,
                    message=blocked.message,
                    observed_generation=None,
                    now=deps.now(),
                ),
            },
        )
        await deps.events.emit(
            obj=record,
            type="Warning",
            reason="PreflightBlocked",
            note=f"{blocked.reason}: {blocked.message}",
        )
