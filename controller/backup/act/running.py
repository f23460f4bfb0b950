"""A Running record: watch its Job, keep the lock, record the Job's terminal result.

Guarantees:

* the outcome is read from the executor's report (the pod's termination message,
  :func:`~..decide.jobresult.interpret`) and recorded on the record; a Job that vanished is
  read as LOST only once the API confirms it is gone (the cache may lag our own create);
* while the Job runs the lock is renewed (:meth:`~.lock.OperationLock.renew`), and the step
  says when the next renewal is due;
* a record deleted while its Job runs reads the Job as finished once its pods stopped
  (:func:`_cancelled`);
* the result finalizer is removed from the Job and its pods only after the record holds the
  result (:func:`release_finalizers`, called by :mod:`.outcome`), with one write each: a
  strategic merge patch that removes exactly that finalizer, remembered so a stale cache
  never causes a second write;
* :func:`cancel` deletes a run's Job (used when the record fails for a reason of ours);
* the result is announced as a ``BackupSucceeded`` or ``BackupFailed`` event on the record and
  on its cluster (events are best effort: they never fail the step);
* what the executor cleaned up before uploading (unfinished uploads of killed runs, see
  docs/storage-lifecycle.md) becomes a ``StaleUploadsCleaned`` event on the record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from controller.backup.act.deps import Deps
from controller.backup.act.fresh import FreshView
from controller.backup.act.lock import job_terminal
from controller.backup.act.lock import me as lock_identity
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide.jobresult import JobPhase, JobResult, interpret
from controller.backup.decide.records import FAILED, SUCCEEDED, name_of
from controller.backup.decide.vocabulary import RESULT_FINALIZER
from controller.cache.store import JSONObject, thaw
from controller.errors import NotFound
from controller.kube.resources import JOB, POD

JSON = dict[str, Any]
BACKUP = names.JobPurpose.BACKUP
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


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


async def cancel(deps: Deps, *, namespace: str, record: str) -> bool:
    """Delete the record's Job unless it is known to be finished; True if a delete was sent.

    A Job the cache does not hold yet (created in this very reconcile) is deleted by name."""
    job = deps.job_of(namespace=namespace, record=record, purpose=BACKUP)
    if job is not None and (job_terminal(job) or job["metadata"].get("deletionTimestamp")):
        return False
    name = names.job_name(record=record, purpose=BACKUP)
    try:
        await deps.api.delete(
            path=JOB.path(namespace=namespace, name=name), propagation="Foreground"
        )
    except NotFound:
        return False
    return True


async def renew(deps: Deps, *, namespace: str, cluster: str, record: str) -> float:
    """Renew the lock while the Job runs; seconds until the next renewal is due."""
    return await deps.lock.renew(
        namespace=namespace, cluster=cluster, me=lock_identity(record), now=deps.now()
    )


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
    updated = await deps.status.backup(obj=record, status=status)
    await _announce(deps, record=updated, ok=ok, status=status)
    cleaned = report.cleaned if report is not None else None
    if cleaned is not None and (cleaned.uploads or cleaned.error):
        shown = ", ".join(cleaned.keys)
        note = f"removed {cleaned.uploads} unfinished upload(s) left by killed runs: {shown}"
        if cleaned.error:
            note = f"{note}; cleanup incomplete: {cleaned.error}"
        kind: Literal["Normal", "Warning"] = "Warning" if cleaned.error else "Normal"
        await deps.events.emit(obj=record, type=kind, reason="StaleUploadsCleaned", note=note)
    return updated


async def _announce(deps: Deps, *, record: JSONObject, ok: bool, status: JSON) -> None:
    """``BackupSucceeded`` / ``BackupFailed`` on the record and on its cluster (best effort)."""
    rec = name_of(record)
    if ok:
        kind: Literal["Normal", "Warning"] = "Normal"
        reason = "BackupSucceeded"
        note = f"{rec}: {status.get('key')} ({status.get('size')} bytes) uploaded and verified"
    else:
        kind, reason = "Warning", "BackupFailed"
        note = f"{rec}: {status.get('failureReason')}: {status.get('message')}"
    await deps.events.emit(obj=record, type=kind, reason=reason, note=note)
    meta = record.get("metadata") or {}
    cluster = deps.clusters.get(
        f"{meta.get('namespace')}/{(record.get('spec') or {}).get('cluster')}"
    )
    if cluster is not None:
        await deps.events.emit(obj=cluster, type=kind, reason=reason, note=note)


async def release_finalizers(deps: Deps, *, namespace: str, job_name: str) -> None:
    """Let the Job and its pods go (their result is recorded)."""
    for pod in deps.pods_of(namespace=namespace, job=job_name):
        path = POD.path(namespace=namespace, name=pod["metadata"]["name"])
        await _drop_finalizer(deps, deps.pods, path, pod)
    job = deps.jobs.get(f"{namespace}/{job_name}")
    if job is not None:
        await _drop_finalizer(deps, deps.jobs, JOB.path(namespace=namespace, name=job_name), job)


async def _drop_finalizer(deps: Deps, view: FreshView, path: str, obj: Mapping[str, Any]) -> None:
    """Remove the result finalizer with one strategic merge patch (``$deleteFromPrimitiveList``
    removes exactly that entry, whatever else changed in the list meanwhile), and remember the
    answer, so a reconcile that still sees the old copy in the cache does not write again."""
    if RESULT_FINALIZER not in (obj["metadata"].get("finalizers") or ()):
        return
    try:
        written = await deps.api.request(
            method="PATCH",
            path=path,
            body={"metadata": {"$deleteFromPrimitiveList/finalizers": [RESULT_FINALIZER]}},
            content_type=STRATEGIC_MERGE_PATCH,
        )
    except NotFound:
        return
    view.remember(written)


def completion_epoch(record: Mapping[str, Any]) -> float:
    when = cond.parse_time((record.get("status") or {}).get("completionTime"))
    return (when or dt.datetime.now(dt.UTC)).timestamp()
