"""Planning: due schedule windows and trigger-annotation values become OpenBaoBackup records.

Two steps, guarded separately by the reconciler so that a failure of one never blocks the
other (a broken schedule must not stop manual backups): :func:`plan_schedule` and
:func:`plan_trigger`.

Guarantees:

* a due window becomes the record ``<cluster>-<yyyymmddhhmm>`` and a new trigger value the
  record ``<cluster>-manual-<hash>``: deterministic names, so a create answering
  AlreadyExists means "already done": at most one backup per window or trigger value across
  restarts and failovers;
* the record is created (or the value listed on the queued record) BEFORE the cluster's
  status says the window/value was handled: a crash in between repeats the idempotent step
  rather than dropping it; records are the durable queue;
* trigger values coalesce as :mod:`controller.backup.decide.trigger` says: at most one
  trigger-annotation record waits per cluster, and every value is satisfied by a backup that
  starts after it was written;
* missed windows (older than the one catch-up run allowed by ``startingDeadlineSeconds``, or
  passed while the controller was down) are reported once: a ``MissedSchedule`` event, the
  missed counter, and ``status.backup.missedWindows``/``lastMissedWindow``; never a burst;
* with ``--schedule-spread-seconds`` each cluster's windows are due at a fixed per-cluster
  offset after the cron time (:func:`~controller.backup.decide.spread.offset_seconds`): the
  record keeps the window's name, ``nextScheduledBackup`` shows the actual start;
* each step returns the ``status.backup`` fields to write (by :mod:`.bookkeeping`) and the
  next window, for a timed requeue: no polling.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.decide import conditions as cond
from controller.backup.decide import names, schedule, spread, trigger
from controller.backup.decide.records import new_record, queued_trigger
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.vocabulary import COALESCED_MAX, TRIGGER_ANNOTATION
from controller.cache.store import JSONObject, thaw
from controller.errors import AlreadyExists
from controller.kube.resources import OPENBAO_BACKUP


@dataclass
class Planned:
    """Status fields to write and when to look again."""

    backup_status: dict[str, Any] = field(default_factory=dict)
    next_window: dt.datetime | None = None
    invalid: str = ""


async def _create(deps: Deps, body: dict[str, Any]) -> bool:
    try:
        created = await deps.api.create(
            path=OPENBAO_BACKUP.path(namespace=body["metadata"]["namespace"]), body=body
        )
    except AlreadyExists:
        return False
    deps.backups.remember(created, created=True)
    return True


async def plan_schedule(deps: Deps, *, cluster: ClusterSpec, cluster_obj: JSONObject) -> Planned:
    assert cluster.backup is not None
    bs = cluster.backup
    out = Planned()
    status = (cluster_obj.get("status") or {}).get("backup") or {}
    now = deps.now()
    created = cond.parse_time(cluster_obj["metadata"].get("creationTimestamp")) or now
    suspended_cond = cond.get_condition(
        (cluster_obj.get("status") or {}).get("conditions"), cond.SUSPENDED
    )
    resumed_at = None
    if suspended_cond is not None and suspended_cond.get("status") == "False":
        resumed_at = cond.parse_time(suspended_cond.get("lastTransitionTime"))
    # The opt-in spread: the cron schedule is read ``offset`` seconds late, so window W is due
    # at W + offset and still names its record after W (at most one backup per window).
    shift = dt.timedelta(
        seconds=spread.offset_seconds(
            namespace=cluster.namespace,
            name=cluster.name,
            spread_seconds=deps.spread_seconds,
            starting_deadline_seconds=bs.starting_deadline_seconds,
        )
    )
    decision = schedule.decide(
        schedule=bs.schedule,
        time_zone=bs.time_zone,
        suspend=bs.suspend,
        starting_deadline_seconds=bs.starting_deadline_seconds,
        now=now - shift,
        last_handled_window=cond.parse_time(status.get("lastHandledWindow")),
        created_at=created,
        resumed_at=resumed_at,
    )
    out.next_window = decision.next_window + shift if decision.next_window else None
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
    return out


async def plan_trigger(
    deps: Deps, *, cluster: ClusterSpec, cluster_obj: JSONObject, records: Mapping[str, JSONObject]
) -> Planned:
    out = Planned()
    status = (cluster_obj.get("status") or {}).get("backup") or {}
    annotations = cluster_obj["metadata"].get("annotations") or {}
    queued = queued_trigger(records.values())
    trig = trigger.decide(
        cluster=cluster.name,
        annotations=annotations,
        last_handled=status.get("lastHandledTrigger"),
        queued=queued,
    )
    if trig.action is trigger.TriggerAction.INVALID:
        await deps.events.emit(
            obj=cluster_obj, type="Warning", reason="InvalidTrigger", note=trig.message
        )
        return out
    if trig.action is trigger.TriggerAction.NONE or not trig.value or not trig.record_name:
        return out
    if trig.action is trigger.TriggerAction.START:
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
        note = f"manual trigger {TRIGGER_ANNOTATION} queued as {trig.record_name}"
        await deps.events.emit(obj=cluster_obj, type="Normal", reason="BackupQueued", note=note)
    elif queued is not None and trig.message != "listed":
        target = records[queued.name]
        st = target.get("status") or {}
        listed = [*thaw(st.get("coalescedTriggers") or ()), trig.value][-COALESCED_MAX:]
        await deps.status.backup(
            obj=target,
            status={
                "coalescedTriggers": listed,
                "coalescedCount": int(st.get("coalescedCount") or 0) + 1,
            },
        )
        note = f"trigger value satisfied by {queued.name}, which has not started yet"
        await deps.events.emit(obj=cluster_obj, type="Normal", reason="BackupCoalesced", note=note)
    out.backup_status["lastHandledTrigger"] = trig.value
    return out
