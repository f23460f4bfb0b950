"""The launch step: the oldest Pending record past the deadline check, then :func:`launch`.

Guarantees: see :mod:`controller.backup.act.launch` (this module only orders the records and
wires the step into the reconcile's guard and metrics): a scheduled record past its starting
deadline ends ``MissedSchedule`` and the next one is considered; a blocked launch asks to be
looked at again at its ``retry_at``; a started one hands its lock to the renewal path
(:mod:`.renewer`; without one, it asks for a timed requeue at the next renewal); every other
Pending record shows that it waits behind the one launched, blocked or running
(:func:`queue_behind`), so no waiting record has an empty phase.
"""

from __future__ import annotations

from functools import partial

from controller.backup.act import outcome
from controller.backup.act.deps import Deps
from controller.backup.act.guard import Guard, Pass
from controller.backup.act.launch import (
    CONCURRENCY_LIMIT,
    Blocked,
    launch,
    mark_blocked,
    mark_queued,
    past_deadline,
    spread_offset,
)
from controller.backup.act.lock import me
from controller.backup.decide.failures import Step
from controller.backup.decide.records import PENDING, is_deleting, name_of, next_pending, phase_of
from controller.backup.decide.spec import ClusterSpec
from controller.cache.store import JSONObject


async def launch_next(
    d: Deps, guard: Guard, run: Pass, cluster: ClusterSpec, records: dict[str, JSONObject]
) -> str | None:
    """Launch the oldest Pending record; the ``Reason: message`` it is blocked by, if any."""
    metrics = d.metrics.get(run.key)
    while (record := next_pending(records.values())) is not None:
        offset = spread_offset(d, cluster)
        missed = past_deadline(record, cluster=cluster, now=d.now(), offset=offset)
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
    if started is not None:  # launched or blocked: the others wait behind it
        await queue_behind(d, guard, run, records, behind=name_of(record))
    if isinstance(started, Blocked):
        if metrics is not None:  # waiting for a slot is throttling, not a failed preflight
            metrics.preflight_blocked(started.reason != CONCURRENCY_LIMIT)
        run.wait((started.retry_at - d.now()).total_seconds())
        return f"{started.reason}: {started.message}"
    if metrics is not None:
        metrics.preflight_blocked(False)
    if started is not None:
        if metrics is not None:
            metrics.in_progress(True)
            metrics.lock(held_since=d.now().timestamp())
        if d.renewer is not None:
            d.renewer.hold(
                namespace=run.namespace,
                cluster=run.name,
                me=me(name_of(started)),
                after=d.lock.renew_every,
            )
        else:
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


async def queue_behind(
    d: Deps, guard: Guard, run: Pass, records: dict[str, JSONObject], *, behind: str
) -> None:
    """Mark every other Pending record as queued behind ``behind`` (written once each)."""
    for name, record in sorted(records.items()):
        if name == behind or phase_of(record) != PENDING or is_deleting(record):
            continue
        await guard.step(run, Step.LAUNCH, partial(mark_queued, d, record=record, behind=behind))
