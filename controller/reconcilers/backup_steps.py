"""The steps of one backup-manager pass that carry the pass's state (:class:`~..act.guard.Pass`)
between an ``act/`` module and the reconcile loop, and the pass's end (:func:`result`).

Guarantees:

* :func:`fresh_records` is the only way the loop re-reads a cluster's records mid-pass: from
  the read-your-writes view, so a step sees what an earlier step of the pass wrote;
* :func:`drive` hands a record whose Job still runs to the renewal path at once (after a
  restart or failover the Lease is renewed without waiting), or records its outcome;
* :func:`drills` and :func:`bookkeep` run under the guard, so their failure never stops a
  later step and counts in the cluster's failure streak;
* :func:`result` ends every pass the same way: the earliest timed requeue the steps asked for,
  and, with executor-Job caps, the cluster keys of the waiting launches a slot is free for now
  (:meth:`~controller.backup.act.slots.LaunchSlots.wake`), which the runner enqueues at once
  (:attr:`~controller.runner.Result.wake`): a Job that finished, a record failed or deleted,
  or an admitted launch that gave up, starts the next waiting backup within a reconcile.
"""

from __future__ import annotations

from functools import partial

from controller.backup.act import bookkeeping, drilling, outcome, planning, running
from controller.backup.act.deps import Deps
from controller.backup.act.guard import Guard, Pass
from controller.backup.act.lock import me
from controller.backup.decide.failures import Step
from controller.backup.decide.jobresult import JobPhase
from controller.backup.decide.records import name_of
from controller.backup.decide.spec import ClusterSpec
from controller.cache.store import JSONObject
from controller.runner import Result


def fresh_records(d: Deps, run: Pass) -> dict[str, JSONObject]:
    """The cluster's records as they are now (our own writes of this pass included)."""
    run.records = {name_of(r): r for r in d.records_of(namespace=run.namespace, cluster=run.name)}
    return run.records


async def drive(d: Deps, run: Pass, record: JSONObject) -> bool:
    """Renew or finish a running record; True while its Job runs."""
    ns, rec = run.namespace, name_of(record)
    result = await running.observe(d, namespace=ns, record=record)
    if result.phase is JobPhase.RUNNING:
        if d.renewer is not None:  # after a restart or failover: renew at once
            d.renewer.hold(namespace=ns, cluster=run.name, me=me(rec), after=0.0)
        else:
            run.wait(await running.renew(d, namespace=ns, cluster=run.name, record=rec))
        return True
    run.records[rec] = await running.record_outcome(d, record=record, result=result)
    return False


async def finish(d: Deps, run: Pass, record: JSONObject) -> None:
    run.cluster_obj = await outcome.finish(d, record=record, cluster_obj=run.cluster_obj)


async def drills(d: Deps, guard: Guard, run: Pass, cluster: ClusterSpec) -> planning.Planned:
    """Record finished restore drills, then start the one a due window asks for."""
    assert cluster.backup is not None
    metrics = d.metrics.get(run.key)
    if metrics is not None:
        metrics.verify_enabled(cluster.backup.verify is not None)
    for rec in drilling.running(fresh_records(d, run)):
        assert run.cluster_obj is not None
        step = partial(drilling.observe, d, cluster_obj=run.cluster_obj, record=rec)
        updated = await guard.step(run, Step.DRILL, step)
        if updated is not None:
            run.cluster_obj = updated
    assert run.cluster_obj is not None
    step2 = partial(
        drilling.plan,
        d,
        cluster=cluster,
        cluster_obj=run.cluster_obj,
        records=fresh_records(d, run),
    )
    drilled = await guard.step(run, Step.DRILL, step2) or planning.Planned()
    if drilled.next_window is not None:
        run.wait((drilled.next_window - d.now()).total_seconds())
    run.backup_status.update(drilled.backup_status)
    return drilled


async def bookkeep(
    d: Deps,
    guard: Guard,
    run: Pass,
    *,
    config_error: str,
    planned: planning.Planned,
    suspended: bool,
    blocked: str | None,
) -> None:
    assert run.cluster_obj is not None
    stalled = guard.stalled(run)
    cluster_obj = run.cluster_obj
    await guard.step(
        run,
        Step.BOOKKEEPING,
        lambda: bookkeeping.write_bookkeeping(
            d,
            cluster_obj,
            config_error=config_error,
            next_window=planned.next_window,
            suspended=suspended,
            blocked=blocked,
            extra=run.backup_status,
            stalled=stalled,
        ),
    )


def result(d: Deps, guard: Guard, run: Pass, *, slots_mark: int) -> Result:
    """The end of a pass begun at ``slots_mark`` (:meth:`LaunchSlots.mark`): its timed
    requeue, and the waiting clusters a freed executor slot wakes."""
    wake = d.slots.wake(cluster=run.key, mark=slots_mark, now=d.now())
    return Result(requeue_after=guard.requeue_after(run), wake=wake)
