"""Restore drills: on their own schedule, restore the newest unverified backup into a scratch
OpenBao inside the drill Job's pod, and record what came back.

The decisions are :mod:`controller.backup.decide.drill` and :mod:`..decide.schedule`.

Guarantees:

* a drill never touches the live cluster: its Job's pod runs its own OpenBao on the pod's
  loopback with an emptyDir for storage, and needs no operation lock;
* a new value of the annotation ``backup.openbao.org/verify`` asks for a drill now (like the
  backup trigger; recorded in ``status.backup.lastHandledVerifyTrigger``);
* one drill at a time per cluster: a window or request due while one runs waits for it,
  never dropped;
* at most one drill per due window (the Job is named after the record, ``<record>-drill``;
  AlreadyExists = already running), windows missed while the controller was down are not
  caught up beyond the newest (the schedule decider's rule);
* the result is written to the record (``status.verification``: time, duration, result,
  unsealed, markerMatched, reason, message) and, for a pass, to the cluster
  (``status.backup.lastVerifiedBackup``, condition ``RestoreVerified``); a failure is a
  Warning event ``RestoreDrillFailed`` and ``openbao_backup_verification_failures_total``;
* the drill Job's result finalizers are released once the result is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.planning import Planned
from controller.backup.act.running import release_finalizers
from controller.backup.decide import conditions as cond
from controller.backup.decide import drill, names, schedule
from controller.backup.decide.drilljob import build_drill_job
from controller.backup.decide.jobresult import interpret
from controller.backup.decide.records import created_at, name_of
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.vocabulary import VERIFY_TRIGGER_ANNOTATION
from controller.cache.store import JSONObject
from controller.errors import AlreadyExists
from controller.kube.resources import JOB

DRILL = names.JobPurpose.DRILL


async def plan(
    deps: Deps, *, cluster: ClusterSpec, cluster_obj: JSONObject, records: Mapping[str, JSONObject]
) -> Planned:
    """Start the drill a due window asks for; the status fields and the next window."""
    out = Planned()
    assert cluster.backup is not None
    verify = cluster.backup.verify
    if verify is None:
        return out
    status = (cluster_obj.get("status") or {}).get("backup") or {}
    now = deps.now()
    decision = schedule.decide(
        schedule=verify.schedule,
        time_zone=verify.time_zone,
        suspend=verify.suspend,
        starting_deadline_seconds=None,
        now=now,
        last_handled_window=cond.parse_time(status.get("lastHandledVerifyWindow")),
        created_at=created_at(cluster_obj),
    )
    out.next_window = decision.next_window
    if decision.action is schedule.ScheduleAction.INVALID:
        out.invalid = f"spec.backup.verify: {decision.message}"
        return out
    if running(records):
        # One drill at a time per cluster. A window or request that comes due meanwhile stays
        # unhandled and runs when this drill's Job ends (its watch event wakes the cluster).
        return out
    if decision.handled_through is not None:
        out.backup_status["lastHandledVerifyWindow"] = cond.rfc3339(decision.handled_through)
    asked = (cluster_obj["metadata"].get("annotations") or {}).get(VERIFY_TRIGGER_ANNOTATION)
    by_hand = bool(asked) and asked != status.get("lastHandledVerifyTrigger")
    if by_hand:
        out.backup_status["lastHandledVerifyTrigger"] = asked
    if decision.action is not schedule.ScheduleAction.RUN and not by_hand:
        return out
    record = drill.pick(records.values())
    if record is None:
        await deps.events.emit(
            obj=cluster_obj,
            type="Normal",
            reason="RestoreDrillSkipped",
            note="no successful backup waits for verification",
        )
        return out
    await start(deps, cluster=cluster, record=record)
    return out


async def start(deps: Deps, *, cluster: ClusterSpec, record: Mapping[str, Any]) -> None:
    rec = name_of(record)
    job_name = names.job_name(record=rec, purpose=DRILL)
    body = build_drill_job(
        cluster=cluster,
        record=record,
        job_name=job_name,
        image=deps.executor_image,
        ttl_seconds_after_finished=deps.job_ttl_seconds,
    )
    with contextlib.suppress(AlreadyExists):
        await deps.api.create(path=JOB.path(namespace=cluster.namespace), body=body)
    now = deps.now()
    await deps.status.backup(
        obj=record,
        status={
            "verification": {
                "result": drill.RUNNING,
                "jobName": job_name,
                "startTime": cond.rfc3339(now),
            }
        },
    )
    await deps.events.emit(
        obj=record,
        type="Normal",
        reason="RestoreDrillStarted",
        note=f"restoring {(record.get('status') or {}).get('key')} into a scratch OpenBao "
        f"(Job {job_name})",
    )


async def observe(deps: Deps, *, cluster_obj: JSONObject, record: JSONObject) -> JSONObject | None:
    """Record a finished drill of ``record``; the updated cluster when it passed."""
    meta = record["metadata"]
    ns, rec = str(meta["namespace"]), name_of(record)
    job_name = names.job_name(record=rec, purpose=DRILL)
    job = deps.jobs.get(f"{ns}/{job_name}")
    result = interpret(
        job=job, pods=deps.pods_of(namespace=ns, job=job_name), expected_mode="drill"
    )
    got = drill.outcome_of(result)
    if got is None:
        return None
    now = deps.now()
    current = drill.verification_of(record)
    started = cond.parse_time(current.get("startTime")) or now
    duration = round((now - started).total_seconds(), 1)
    verification: dict[str, Any] = {
        "result": got.result.value,
        "time": cond.rfc3339(now),
        "durationSeconds": duration,
        "reason": got.reason,
        "message": got.message,
        "jobName": job_name,
    }
    if got.unsealed is not None:
        verification["unsealed"] = got.unsealed
    if got.marker_matched is not None:
        verification["markerMatched"] = got.marker_matched
    await deps.status.backup(obj=record, status={"verification": verification})
    await release_finalizers(deps, namespace=ns, job_name=job_name)
    cluster = str((record.get("spec") or {}).get("cluster") or "")
    metrics = deps.metrics.get(f"{ns}/{cluster}")
    if got.result is drill.Result.FAILED:
        await deps.events.emit(
            obj=record,
            type="Warning",
            reason="RestoreDrillFailed",
            note=f"{got.reason}: {got.message}",
        )
        if metrics is not None:
            metrics.verification_failed(reason=got.reason)
        updated = await deps.status.cluster(
            obj=cluster_obj,
            status={
                "conditions": _condition(
                    cluster_obj,
                    ok=False,
                    reason=got.reason,
                    message=f"{rec}: {got.message}",
                    now=now,
                )
            },
        )
        return updated
    await deps.events.emit(obj=record, type="Normal", reason="RestoreDrillPassed", note=got.message)
    if metrics is not None:
        metrics.verified(at=now.timestamp())
    return await deps.status.cluster(
        obj=cluster_obj,
        status={
            "backup": {
                "lastVerifiedBackup": {
                    "name": rec,
                    "time": cond.rfc3339(now),
                    "durationSeconds": duration,
                    "result": got.result.value,
                }
            },
            "conditions": _condition(
                cluster_obj,
                ok=True,
                reason=got.result.value,
                message=f"{rec}: {got.message}",
                now=now,
            ),
        },
    )


def _condition(
    cluster_obj: JSONObject, *, ok: bool, reason: str, message: str, now: Any
) -> list[dict[str, Any]]:
    return cond.set_condition(
        (cluster_obj.get("status") or {}).get("conditions"),
        type=cond.RESTORE_VERIFIED,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        observed_generation=int(cluster_obj["metadata"].get("generation") or 0),
        now=now,
    )


def running(records: Mapping[str, JSONObject]) -> list[JSONObject]:
    """Records whose drill runs."""
    return [r for r in records.values() if drill.verification_of(r).get("result") == drill.RUNNING]
