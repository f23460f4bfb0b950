"""The launch step: the oldest Pending record past the deadline check, then :func:`launch`.

Guarantees: see :mod:`controller.backup.act.launch` (this module only orders the records and
wires the step into the reconcile's guard and metrics): a scheduled record past its starting
deadline ends ``MissedSchedule`` and the next one is considered; a blocked launch asks to be
looked at again at its ``retry_at``; a started one asks for the next lock renewal.
"""

from __future__ import annotations

from functools import partial

from controller.backup.act import outcome
from controller.backup.act.deps import Deps
from controller.backup.act.guard import Guard, Pass
from controller.backup.act.launch import Blocked, launch, mark_blocked, past_deadline
from controller.backup.decide.failures import Step
from controller.backup.decide.records import name_of, next_pending
from controller.backup.decide.spec import ClusterSpec
from controller.cache.store import JSONObject


async def launch_next(
    d: Deps, guard: Guard, run: Pass, cluster: ClusterSpec, records: dict[str, JSONObject]
) -> str | None:
    """Launch the oldest Pending record; the ``Reason: message`` it is blocked by, if any."""
    metrics = d.metrics.get(run.key)
    while (record := next_pending(records.values())) is not None:
        missed = past_deadline(record, cluster=cluster, now=d.now())
        if not missed:
            break
        await guard.step(
            run,
            Step.LAUNCH,
            partial(
                outcome.fail_record,
                d,
                record=record,
                reason="MissedSchedule",
                message=missed,
                counted=False,
            ),
        )
        if metrics is not None:
            metrics.missed(1)
        records = {k: v for k, v in records.items() if k != name_of(record)}
    if record is None:
        if metrics is not None:
            metrics.preflight_blocked(False)
        return None
    started = await guard.step(
        run, Step.LAUNCH, partial(_launch, d, run, cluster, record), record=record
    )
    if isinstance(started, Blocked):
        if metrics is not None:
            metrics.preflight_blocked(True)
        run.wait((started.retry_at - d.now()).total_seconds())
        return f"{started.reason}: {started.message}"
    if metrics is not None:
        metrics.preflight_blocked(False)
    if started is not None:
        if metrics is not None:
            metrics.in_progress(True)
            metrics.lock(held_since=d.now().timestamp())
        run.wait(d.lock.renew_every)
        run.backup_status["activeBackup"] = name_of(started)
    return None


async def _launch(
    d: Deps, run: Pass, cluster: ClusterSpec, record: JSONObject
) -> JSONObject | Blocked:
    assert run.cluster_obj is not None
    result = await launch(d, cluster=cluster, cluster_obj=run.cluster_obj, record=record)
    if isinstance(result, Blocked):
        await mark_blocked(d, record=record, blocked=result)
    return result
