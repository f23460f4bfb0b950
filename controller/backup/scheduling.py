"""Turning schedules and trigger annotations into OpenBaoBackup records.

Guarantees:

* a due window becomes the record ``<cluster>-<yyyymmddhhmm>`` and a new trigger value the
  record ``<cluster>-manual-<hash>``: deterministic names, so a create answering
  AlreadyExists means "already done" — at most one backup per window or trigger value across
  restarts and failovers;
* the record is created BEFORE the cluster's status says the window/trigger was handled: a
  crash in between re-creates (AlreadyExists) rather than drops; records are the durable
  queue, so a trigger that arrives while a backup runs waits as a Pending record, never lost;
* missed windows (older than the one catch-up run allowed by ``startingDeadlineSeconds``, or
  passed while the controller was down) are reported once: a ``MissedSchedule`` event, the
  missed counter, and ``status.backup.missedWindows``/``lastMissedWindow``; never a burst;
* the next window is returned for a timed requeue: no polling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.backup import conditions as cond
from controller.backup import names, schedule, trigger
from controller.backup.deps import Deps
from controller.backup.records import TRIGGER_ANNOTATION, new_record
from controller.backup.spec import ClusterSpec
from controller.cache.store import JSONObject
from controller.errors import AlreadyExists
from controller.kube.resources import OPENBAO_BACKUP


@dataclass
class Outcome:
    """Status fields to write and when to look again."""

    backup_status: dict[str, Any] = field(default_factory=dict)
    next_window: Any = None
    suspended: bool = False
    invalid: str = ""


async def _create(deps: Deps, body: dict[str, Any]) -> bool:
    try:
        await deps.api.create(
            path=OPENBAO_BACKUP.path(namespace=body["metadata"]["namespace"]), body=body
        )
        return True
    except AlreadyExists:
        return False


async def run(deps: Deps, *, cluster: ClusterSpec, cluster_obj: JSONObject) -> Outcome:
    assert cluster.backup is not None
    bs = cluster.backup
    out = Outcome(suspended=bs.suspend)
    status = (cluster_obj.get("status") or {}).get("backup") or {}
    now = deps.now()
    created = cond.parse_time(cluster_obj["metadata"].get("creationTimestamp")) or now
    suspended_cond = cond.get_condition(
        (cluster_obj.get("status") or {}).get("conditions"), cond.SUSPENDED
    )
    resumed_at = None
    if suspended_cond is not None and suspended_cond.get("status") == "False":
        resumed_at = cond.parse_time(suspended_cond.get("lastTransitionTime"))
    decision = schedule.decide(
        schedule=bs.schedule,
        time_zone=bs.time_zone,
        suspend=bs.suspend,
        starting_deadline_seconds=bs.starting_deadline_seconds,
        now=now,
        last_handled_window=cond.parse_time(status.get("lastHandledWindow")),
        created_at=created,
        resumed_at=resumed_at,
    )
    out.next_window = decision.next_window
    if decision.action is schedule.ScheduleAction.INVALID:
        out.invalid = decision.message
    if decision.action is schedule.ScheduleAction.RUN and decision.due is not None:
        name = names.scheduled_record_name(cluster=cluster.name, window=decision.due)
        await _create(
            deps,
            new_record(
                namespace=cluster.namespace,
                cluster=cluster.name,
                name=name,
                trigger="scheduled",
                window=decision.due,
            ),
        )
    if decision.missed:
        count = decision.missed_count
        metrics = deps.metrics.get(f"{cluster.namespace}/{cluster.name}")
        if metrics is not None:
            metrics.missed(count)
        shown = ", ".join(cond.rfc3339(w) for w in decision.missed[-3:])
        more = " (list truncated)" if decision.missed_truncated else ""
        await deps.events.emit(
            obj=cluster_obj,
            type="Warning",
            reason="MissedSchedule",
            note=f"{count} schedule window(s) missed{more}, latest: {shown}",
        )
        out.backup_status["missedWindows"] = int(status.get("missedWindows") or 0) + count
        out.backup_status["lastMissedWindow"] = cond.rfc3339(decision.missed[-1])
    if decision.handled_through is not None:
        out.backup_status["lastHandledWindow"] = cond.rfc3339(decision.handled_through)

    annotations = dict(cluster_obj["metadata"].get("annotations") or {})
    trig = trigger.decide(
        cluster=cluster.name,
        annotations=annotations,
        last_handled=status.get("lastHandledTrigger"),
        backup_running=False,
    )
    if trig.action is trigger.TriggerAction.START and trig.record_name and trig.value:
        await _create(
            deps,
            new_record(
                namespace=cluster.namespace,
                cluster=cluster.name,
                name=trig.record_name,
                trigger="manual",
                trigger_value=trig.value,
            ),
        )
        out.backup_status["lastHandledTrigger"] = trig.value
        await deps.events.emit(
            obj=cluster_obj,
            type="Normal",
            reason="BackupQueued",
            note=f"manual trigger {TRIGGER_ANNOTATION} queued as {trig.record_name}",
        )
    elif trig.action is trigger.TriggerAction.INVALID:
        await deps.events.emit(
            obj=cluster_obj, type="Warning", reason="InvalidTrigger", note=trig.message
        )
    return out
