"""Backup runs: launch a Pending record's executor Job, watch it, record its outcome.

Guarantees:

* a Job is launched only after the preflight passed (OpenBao reachable, initialised,
  unsealed, active node) AND this run holds the cluster's operation lock; blocked work stays
  Pending with a ``Blocked`` condition, a ``PreflightBlocked`` cluster condition, an event and
  a backoff (:func:`blocked_backoff`), and is never launched while blocked;
* the Job name is derived from the record, so a crash or failover between any two steps
  re-finds the same Job (AlreadyExists = adopt), never starts a second one;
* the outcome is read from the executor's report (the pod's termination message) and recorded
  on the record first, then counted ONCE on the cluster: the cluster's
  ``status.backup.lastAttemptRecord`` names the last counted run and the write is a
  compare-and-swap, so ``consecutiveFailures`` grows by exactly one per failed run and resets
  on success, whatever crashes in between;
* ``status.backup`` timing/outcome fields change only when a Job reached a terminal result;
* the result finalizer is removed from the Job and its pods only after the record holds the
  result, and the lock is released only once the record is terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup import conditions as cond
from controller.backup import names, oplock
from controller.backup.deps import Deps, job_terminal
from controller.backup.jobresult import JobPhase, JobResult, interpret
from controller.backup.jobspec import RESULT_FINALIZER, build_job
from controller.backup.preflight import Verdict, assess
from controller.backup.records import FAILED, RUNNING, SUCCEEDED, name_of, scheduled_time
from controller.backup.spec import ClusterSpec
from controller.cache.store import JSONObject, thaw
from controller.errors import AlreadyExists, NotFound
from controller.kube.finalizers import remove_finalizer
from controller.kube.resources import JOB, POD

JSON = dict[str, Any]
BACKUP = names.JobPurpose.BACKUP


def blocked_backoff(attempt: int) -> float:
    """Seconds before re-checking blocked work: 5, 10, 20, ... capped at 5 minutes."""
    return float(min(5 * 2 ** max(attempt, 0), 300))


def me(record: str) -> str:
    return oplock.holder_identity("backup", record)


async def launch(
    deps: Deps,
    *,
    cluster: ClusterSpec,
    cluster_obj: Mapping[str, Any],
    record: JSONObject,
    ca_pem: str | None,
) -> tuple[JSONObject | None, str | None]:
    """Try to start ``record``. Returns (updated record, None) when it runs, or
    (None, "<Reason>: <message>") when blocked."""
    now = deps.now()
    ns, rec = cluster.namespace, name_of(record)
    job_name = names.job_name(record=rec, purpose=BACKUP)
    existing = deps.job_of(namespace=ns, record=rec, purpose=BACKUP)
    if existing is None:
        probe = await deps.probe(address=cluster.address, ca_pem=ca_pem)
        verdict = assess(probe)
        if verdict.verdict is not Verdict.READY:
            return None, f"{verdict.reason}: {verdict.message}"
        decision = deps.lock.decide(
            namespace=ns,
            cluster=cluster.name,
            me=me(rec),
            now=now,
            holder_finished=lambda h: _holder_finished(deps, ns, h),
        )
        if decision.action in (oplock.LockAction.BLOCKED, oplock.LockAction.WAIT_CONFIRM):
            return None, f"LockHeld: {decision.message or 'another operation holds the lock'}"
        if not await deps.lock.apply(
            namespace=ns, cluster=cluster.name, me=me(rec), now=now, decision=decision
        ):
            return None, "LockHeld: lost the race for the operation lock"
        body = build_job(
            cluster=cluster,
            record=record,
            job_name=job_name,
            purpose="backup",
            image=deps.executor_image,
            ttl_seconds_after_finished=deps.job_ttl_seconds,
        )
        with contextlib.suppress(AlreadyExists):
            await deps.api.create(path=JOB.path(namespace=ns), body=body)
    raw_target = thaw(((cluster_obj.get("spec") or {}).get("backup") or {}).get("target") or {})
    window = scheduled_time(record)
    status: JSON = {
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
    return updated, None


def _holder_finished(deps: Deps, namespace: str, holder: oplock.Holder) -> bool:
    if holder.op == "backup":
        return job_terminal(deps.job_of(namespace=namespace, record=holder.run, purpose=BACKUP))
    if holder.op == "restore":
        return job_terminal(
            deps.jobs.get(
                f"{namespace}/{names.job_name(record=holder.run, purpose=names.JobPurpose.RESTORE)}"
            )
        )
    return False


async def observe(deps: Deps, *, namespace: str, record: JSONObject) -> JobResult:
    """What the record's Job says now (LOST only once the API confirms the Job is gone)."""
    rec = name_of(record)
    job_name = names.job_name(record=rec, purpose=BACKUP)
    job = deps.job_of(namespace=namespace, record=rec, purpose=BACKUP)
    if job is None:
        try:  # the cache may simply lag our own create
            job = await deps.api.get(path=JOB.path(namespace=namespace, name=job_name))
        except NotFound:
            job = None
    pods = deps.pods_of(namespace=namespace, job=job_name)
    if job is not None and job["metadata"].get("deletionTimestamp"):
        job = _cancelled(job, pods)
    return interpret(job=job, pods=pods, expected_mode="backup")


def _cancelled(job: JSONObject, pods: list[JSONObject]) -> JSONObject:
    """A Job being deleted gets no terminal condition from the Job controller: once its pods
    have stopped, read it as finished (Complete only if the executor reported success)."""
    if job_terminal(job):
        return job
    states = [
        ((p.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}
        for p in pods
    ]
    if any("terminated" not in s for s in states):
        return job
    exit_codes = [s["terminated"].get("exitCode") for s in states]
    done = bool(exit_codes) and all(code == 0 for code in exit_codes)
    copy = thaw(job)
    copy.setdefault("status", {})["conditions"] = [
        {
            "type": "Complete" if done else "Failed",
            "status": "True",
            "reason": "Completed" if done else "Cancelled",
            "message": "the Job was deleted (its OpenBaoBackup was deleted)",
        }
    ]
    result: JSONObject = copy
    return result


async def renew(deps: Deps, *, namespace: str, cluster: str, record: str) -> float | None:
    """Renew the lock while the Job runs; seconds until the next renewal is due."""
    now = deps.now()
    decision = deps.lock.decide(
        namespace=namespace,
        cluster=cluster,
        me=me(record),
        now=now,
        holder_finished=lambda h: False,
    )
    if decision.action in (
        oplock.LockAction.RENEW,
        oplock.LockAction.ACQUIRE_TAKEOVER,
        oplock.LockAction.ACQUIRE_CREATE,
    ):
        await deps.lock.apply(
            namespace=namespace, cluster=cluster, me=me(record), now=now, decision=decision
        )
        return deps.lock.duration_seconds / 3
    if decision.until is not None:
        return max(1.0, (decision.until - now).total_seconds())
    return deps.lock.duration_seconds / 3


async def record_outcome(deps: Deps, *, record: JSONObject, result: JobResult) -> JSONObject:
    """Write the terminal result onto the OpenBaoBackup (idempotent: skips terminal records)."""
    status_now = record.get("status") or {}
    if status_now.get("phase") in (SUCCEEDED, FAILED):
        return record
    now = deps.now()
    report = result.report
    ok = result.phase is JobPhase.SUCCEEDED and report is not None
    status: JSON = {
        "phase": SUCCEEDED if ok else FAILED,
        "completionTime": cond.rfc3339(report.finished_at if report else now),
        "message": "snapshot uploaded and verified" if ok else result.message,
    }
    if report is not None:
        status.update(
            {
                "durationSeconds": report.duration_seconds,
                "openbaoVersion": report.openbao_version,
                "raftIndex": report.raft_index,
                "raftTerm": report.raft_term,
            }
        )
        if ok:
            status.update(
                {
                    "key": report.key,
                    "manifestKey": report.manifest_key,
                    "size": report.size,
                    "sha256": report.sha256,
                }
            )
    if not ok:
        status["failureReason"] = (result.reason or "Unknown")[:64]
    conds = cond.set_condition(
        status_now.get("conditions"),
        type=cond.COMPLETE if ok else cond.FAILED,
        status="True",
        reason="Verified" if ok else (result.reason or "Failed"),
        message=status["message"],
        observed_generation=None,
        now=now,
    )
    status["conditions"] = conds
    status = {k: v for k, v in status.items() if v is not None}
    return await deps.status.backup(obj=record, status=status)


def failure_class(record: Mapping[str, Any]) -> str:
    reason = str((record.get("status") or {}).get("failureReason") or "internal")
    mapping = {"DeadlineExceeded": "deadline", "JobLost": "lost", "PodDeleted": "lost"}
    return mapping.get(reason, reason)


async def account(deps: Deps, *, cluster_obj: JSONObject, record: JSONObject) -> JSONObject | None:
    """Count a terminal record in the cluster's status.backup exactly once (CAS).

    Returns the updated cluster, or None when it was already counted."""
    backup_status = (cluster_obj.get("status") or {}).get("backup") or {}
    rec = name_of(record)
    if backup_status.get("lastAttemptRecord") == rec:
        return None
    st = record.get("status") or {}
    now = deps.now()
    ok = st.get("phase") == SUCCEEDED
    new: JSON = {
        "lastAttemptRecord": rec,
        "lastAttemptTime": st.get("startTime") or st.get("completionTime"),
        "activeBackup": None,
    }
    if st.get("scheduledTime"):
        new["lastAttemptScheduledTime"] = st["scheduledTime"]
    conds = (cluster_obj.get("status") or {}).get("conditions")
    gen = int(cluster_obj["metadata"].get("generation") or 0)
    if ok:
        new.update(
            {
                "lastBackupTime": st.get("completionTime"),
                "lastBackupName": st.get("key"),
                "lastBackupRecord": rec,
                "lastBackupSize": st.get("size"),
                "lastBackupDuration": f"{float(st.get('durationSeconds') or 0):.1f}s",
                "consecutiveFailures": 0,
            }
        )
        conds = _outcome_conditions(
            conds,
            ok=True,
            ready_message=f"{rec}: {st.get('key')}",
            failing_message="",
            gen=gen,
            now=now,
        )
    else:
        failures = int(backup_status.get("consecutiveFailures") or 0) + 1
        reason = f"{failure_class(record)}: {st.get('message') or 'failed'}"
        new.update(
            {
                "consecutiveFailures": failures,
                "lastFailureReason": reason[:2048],
                "lastFailureTime": st.get("completionTime") or cond.rfc3339(now),
            }
        )
        conds = _outcome_conditions(
            conds,
            ok=False,
            ready_message=reason[:1024],
            failing_message=f"{failures} consecutive failure(s): {reason}"[:1024],
            gen=gen,
            now=now,
        )
    return await deps.status.cluster(
        obj=cluster_obj, status={"backup": new, "conditions": conds}, cas=True
    )


def _outcome_conditions(
    conds: Any,
    *,
    ok: bool,
    ready_message: str,
    failing_message: str,
    gen: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """BackupReady / BackupFailing after a counted outcome."""
    reason = "BackupSucceeded" if ok else "BackupFailed"
    conds = cond.set_condition(
        conds,
        type=cond.BACKUP_READY,
        status="True" if ok else "False",
        reason=reason,
        message=ready_message,
        observed_generation=gen,
        now=now,
    )
    return cond.set_condition(
        conds,
        type=cond.BACKUP_FAILING,
        status="False" if ok else "True",
        reason=reason,
        message=failing_message,
        observed_generation=gen,
        now=now,
    )


async def release_finalizers(deps: Deps, *, namespace: str, job_name: str) -> None:
    """Let the Job and its pods go (their result is recorded)."""
    for pod in deps.pods_of(namespace=namespace, job=job_name):
        await _drop_finalizer(
            deps, POD.path(namespace=namespace, name=pod["metadata"]["name"]), pod
        )
    job = deps.jobs.get(f"{namespace}/{job_name}")
    if job is not None:
        await _drop_finalizer(deps, JOB.path(namespace=namespace, name=job_name), job)


async def _drop_finalizer(deps: Deps, path: str, obj: Mapping[str, Any]) -> None:
    await remove_finalizer(deps.api, path=path, obj=obj, finalizer=RESULT_FINALIZER)


def completion_epoch(record: Mapping[str, Any]) -> float:
    when = cond.parse_time((record.get("status") or {}).get("completionTime"))
    return (when or dt.datetime.now(dt.UTC)).timestamp()
