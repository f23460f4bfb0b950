"""A terminal record's consequences: counted once on the cluster, then lock and Job let go.

Guarantees:

* :func:`fail_record` is the one way the controller fails a record itself (a terminal or bug
  failure of a step, a missed window, a vanished cluster): phase ``Failed`` with a precise
  ``failureReason`` and message, and a Warning event whose reason is the failure reason;
  ``counted=False`` marks it accounted at once (missed windows are counted as missed, not as
  failed runs);
* :func:`account` counts a terminal record in the cluster's ``status.backup`` exactly once: the
  cluster's ``lastAttemptRecord`` names the last counted run and the write is a
  compare-and-swap, so ``consecutiveFailures`` grows by exactly one per failed run and resets
  on success, whatever crashes in between; metrics follow only a write that happened;
* :func:`finish` runs account -> retention (after a success only) -> the record's
  ``accounted`` mark -> lock release -> Job finalizers; each part is idempotent, and the
  ``accounted`` mark is written only once accounting and retention went through, so a failure
  anywhere is repaired by the next reconcile; the lock and the Job are let go even when an
  earlier part failed (its error is raised afterwards);
* ``status.backup`` timing/outcome fields change only when a run reached a terminal result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup.act import prune
from controller.backup.act.deps import Deps
from controller.backup.act.lock import me
from controller.backup.act.running import completion_epoch, release_finalizers
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide.records import FAILED, SUCCEEDED, created_at, name_of, phase_of
from controller.cache.store import JSONObject
from controller.errors import NotFound
from controller.logging import get_logger

JSON = dict[str, Any]
_log = get_logger(controller="backup-manager", component="outcome")


async def fail_record(
    deps: Deps, *, record: JSONObject, reason: str, message: str, counted: bool = True
) -> JSONObject:
    """End ``record`` as Failed for a reason of the controller's own."""
    now = deps.now()
    status: JSON = {
        "phase": FAILED,
        "completionTime": cond.rfc3339(now),
        "failureReason": reason[:64],
        "message": message,
        "conditions": cond.set_condition(
            (record.get("status") or {}).get("conditions"),
            type=cond.FAILED,
            status="True",
            reason=reason,
            message=message,
            observed_generation=None,
            now=now,
        ),
    }
    if not counted:
        status["accounted"] = True
    updated = await deps.status.backup(obj=record, status=status)
    await deps.events.emit(obj=record, type="Warning", reason=reason, note=message)
    return updated


async def finish(
    deps: Deps, *, record: JSONObject, cluster_obj: JSONObject | None
) -> JSONObject | None:
    """Count, prune, release. Returns the latest cluster object."""
    ns, rec = str(record["metadata"]["namespace"]), name_of(record)
    cluster_name = str(record["spec"]["cluster"])
    status = record.get("status") or {}
    error: Exception | None = None
    if not status.get("accounted"):
        try:
            if cluster_obj is not None and counts_as_run(record):
                updated = await account(deps, cluster_obj=cluster_obj, record=record)
                if updated is not None:
                    count_outcome(deps, cluster_obj=cluster_obj, record=record)
                    cluster_obj = updated
            if cluster_obj is not None and phase_of(record) == SUCCEEDED:
                # Idempotent; retried (the record stays unaccounted) until it went through.
                await prune.apply_retention(deps, cluster_obj=cluster_obj, record=record)
            with contextlib.suppress(NotFound):  # a record already gone is accounted for
                record = await deps.status.backup(obj=record, status={"accounted": True})
        except Exception as exc:  # raised below, after the lock and the Job are let go
            error = exc
    if deps.renewer is not None:
        deps.renewer.drop(namespace=ns, cluster=cluster_name, me=me(rec))
    released = await deps.lock.release(
        namespace=ns, cluster=cluster_name, me=me(rec), now=deps.now()
    )
    metrics = deps.metrics.get(f"{ns}/{cluster_name}")
    if released and metrics is not None:
        metrics.lock(held_since=None)
    # Always (a no-op without a Job): a run failed between its Job create and its Running
    # write has a Job but no jobName.
    await release_finalizers(
        deps, namespace=ns, job_name=names.job_name(record=rec, purpose=names.JobPurpose.BACKUP)
    )
    if error is not None:
        raise error
    return cluster_obj


NOT_A_RUN = frozenset({"MissedSchedule", "ClusterNotFound"})
"""Failure reasons of records that never ran: counted elsewhere (missed) or nowhere."""


def counts_as_run(record: Mapping[str, Any]) -> bool:
    """A terminal record counts as a run unless it never ran for one of :data:`NOT_A_RUN`."""
    status = record.get("status") or {}
    return bool(status.get("jobName")) or status.get("failureReason") not in NOT_A_RUN


def count_outcome(deps: Deps, *, cluster_obj: JSONObject, record: JSONObject) -> None:
    """Metrics and a log line for an outcome just counted on the cluster."""
    meta = cluster_obj["metadata"]
    metrics = deps.metrics_for(
        namespace=meta["namespace"],
        cluster=meta["name"],
        created=created_at(cluster_obj).timestamp(),
    )
    st = record.get("status") or {}
    duration = float(st["durationSeconds"]) if st.get("durationSeconds") else None
    if phase_of(record) == SUCCEEDED:
        metrics.succeeded(
            completed=completion_epoch(record),
            duration=duration or 0.0,
            size=int(st.get("size") or 0),
        )
        _log.info(
            "backup succeeded",
            namespace=meta["namespace"],
            name=meta["name"],
            record=name_of(record),
            key=st.get("key"),
            size=st.get("size"),
        )
    else:
        backup_status = (cluster_obj.get("status") or {}).get("backup") or {}
        failures = int(backup_status.get("consecutiveFailures") or 0) + 1
        metrics.failed(reason=failure_class(record), duration=duration, consecutive=failures)
        _log.warning(
            "backup failed",
            namespace=meta["namespace"],
            name=meta["name"],
            record=name_of(record),
            reason=st.get("failureReason"),
        )
    metrics.in_progress(False)


def failure_class(record: Mapping[str, Any]) -> str:
    reason = str((record.get("status") or {}).get("failureReason") or "internal")
    mapping = {
        "DeadlineExceeded": "deadline",
        "JobLost": "lost",
        "PodDeleted": "lost",
        "InternalError": "internal",
        "InvalidSpec": "configuration",
    }
    if reason.endswith("Rejected"):
        return "configuration"
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
    conds = cond.with_ready(conds, observed_generation=gen, now=now)
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
