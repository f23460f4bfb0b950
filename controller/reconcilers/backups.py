"""The backup manager: one reconcile per OpenBaoCluster key drives everything of that cluster.

Keys are ``namespace/cluster``. OpenBaoBackup records (by ``spec.cluster``), Jobs, Pods and
Leases (by the ``backup.openbao.org/cluster`` label) all map to their cluster's key, so the
workqueue's guarantee (no key is processed by two workers at once) serialises everything
that touches one cluster, while different clusters proceed in parallel.

One reconcile runs these steps in order (:class:`~controller.backup.decide.failures.Step`);
each is idempotent, so a crash anywhere is repaired by the next reconcile:

=============  ===========================================================  ==================
step           what                                                         module
=============  ===========================================================  ==================
running        the running record: its lock to the renewer, or its result   act/running
finish         terminal records: count once, retention, release lock/Job    act/outcome
deletion       records being deleted: cancel a run, delete the snapshot     act/deletion
restore        each OpenBaoRestore of the cluster, one phase after another  act/restoring
schedule       a due cron window becomes a record                           act/planning
trigger        a trigger-annotation value becomes a record (or coalesces)   act/planning
drill          record finished restore drills, start a due one              act/drilling
launch         the oldest Pending record: preflight, lock, executor Job     act/launch_step
bookkeeping    conditions, next window, a timed requeue (no polling)        act/bookkeeping
(end)          the timed requeue, and the waiting clusters a freed executor  backup_steps
               slot wakes (enqueued by the runner at once)
=============  ===========================================================  ==================

Failure model (docs/backup-manager.md, "Failures"). Every exception a step raises is
classified once by :func:`~controller.backup.decide.failures.classify` and counted in
``openbao_backup_reconcile_errors_total{step,kind}``; each step is guarded on its own, so a
failing step never stops the steps after it:

* **terminal** (the API server refused an object we built, the spec cannot produce one) and
  **bug** (anything unexpected) in a per-record step (launch, running): the record ends
  ``Failed`` with reason ``<Kind>Rejected`` / ``InvalidSpec`` / ``InternalError`` and a
  message naming the field or the exception class, a Warning event of that reason, counted
  like any failed run; a Job of it that still runs is deleted; the lock is released in the
  same reconcile; the next record proceeds;
* **transient** (409, 429, 5xx, 403, timeouts) anywhere, and any failure of a cluster step:
  the record keeps its phase; the key is requeued after 1, 2, 4 ... 300 s
  (:func:`~controller.backup.decide.timing.retry_delay`); a launch refused definitely (not a
  timeout or 5xx, after which the Job may exist) releases the lock before waiting;
* a step failing :data:`~controller.backup.decide.timing.RETRY_SURFACE_AFTER` times in a row
  raises a ``ReconcileRetrying`` Warning event and the cluster condition ``Stalled=True``,
  cleared by the next reconcile in which every step succeeded.

Beside the workers (:meth:`BackupManager.background`, only while this process leads) the
renewal path (:mod:`controller.backup.act.renewer`) renews the Lease of every running backup on
its own clock and write budget, so renewals never wait behind other clusters' keys.

The invariant the in-process suite (tests/inprocess) checks for every API call and fault:
after any single failure, the cluster's next due backup still runs.
"""

from __future__ import annotations

from functools import partial

from controller.backup.act import (
    deletion,
    launch_step,
    metric_state,
    outcome,
    planning,
    restoring,
)
from controller.backup.act.deps import CLUSTER_KEY_MAPPERS, INDEXERS, Deps
from controller.backup.act.guard import Guard, Pass
from controller.backup.decide.failures import Failure, Kind, Step
from controller.backup.decide.records import (
    PENDING,
    RUNNING,
    SNAPSHOT_FINALIZER,
    TERMINAL,
    has_finalizer,
    is_deleting,
    name_of,
    phase_of,
)
from controller.backup.decide.records import (
    running as running_records,
)
from controller.backup.decide.spec import ClusterSpec, SpecError, parse_cluster
from controller.cache.store import JSONObject, split_key
from controller.kube.resources import (
    OPENBAO_CLUSTER,
)
from controller.logging import get_logger
from controller.reconcilers import backup_steps as steps
from controller.reconcilers.backup_deps import build_deps
from controller.reconcilers.base import Context, ReconcilerSpec, Watch
from controller.runner import Result

_log = get_logger(controller="backup-manager")


class BackupManager:
    def __init__(self, *, deps: Deps) -> None:
        self.deps = deps
        self._guard = Guard(deps=deps)

    # -- the loop ------------------------------------------------------------------------------

    async def reconcile(self, *, key: str) -> Result:
        d = self.deps
        namespace, name = split_key(key)
        run = Pass(
            key=key,
            namespace=namespace,
            name=name,
            cluster_obj=d.clusters.get(key),
            records={name_of(r): r for r in d.records_of(namespace=namespace, cluster=name)},
        )
        mark = d.slots.mark()
        cluster, spec_error = _parse(run.cluster_obj)
        if run.cluster_obj is not None:  # every step finds the series, restored after a restart
            metric_state.cluster_metrics(d, run)

        active = False
        for rec in running_records(run.records.values()):
            still = await self._guard.step(
                run, Step.RUNNING, partial(steps.drive, d, run, rec), record=rec
            )
            active = active or bool(still) or phase_of(run.records[name_of(rec)]) == RUNNING
        for rec in list(run.records.values()):
            if phase_of(rec) in TERMINAL:
                await self._guard.step(run, Step.FINISH, partial(steps.finish, d, run, rec))

        for rec in list(steps.fresh_records(d, run).values()):
            if is_deleting(rec):
                run.wait(
                    await self._guard.step(
                        run,
                        Step.DELETION,
                        partial(deletion.handle, d, record=rec, cluster=cluster, cluster_name=name),
                    )
                )
            elif not has_finalizer(rec, SNAPSHOT_FINALIZER):
                await self._guard.step(run, Step.DELETION, partial(deletion.adopt, d, record=rec))

        for restore in d.restores_of(namespace=namespace, cluster=name):
            step = partial(
                restoring.drive,
                d,
                restore=restore,
                cluster=cluster,
                spec_error=spec_error,
                records=steps.fresh_records(d, run),
            )
            run.wait(await self._guard.step(run, Step.RESTORE, step, record=restore))

        if run.cluster_obj is None:
            d.drop_metrics(namespace=namespace, cluster=name)
            for rec in list(run.records.values()):
                if phase_of(rec) == PENDING and not is_deleting(rec):
                    await self._guard.step(
                        run,
                        Step.LAUNCH,
                        partial(
                            outcome.fail_record,
                            d,
                            record=rec,
                            reason="ClusterNotFound",
                            message=f"OpenBaoCluster {name} not found",
                            counted=False,
                        ),
                    )
            return steps.result(d, self._guard, run, slots_mark=mark)

        cluster_obj = run.cluster_obj
        metric_state.cluster_metrics(d, run).in_progress(active)

        if cluster is None or cluster.backup is None:
            message = spec_error or "spec.backup is not set: nothing to back up"
            for rec in list(run.records.values()):
                if phase_of(rec) == PENDING and not is_deleting(rec):
                    await self._guard.fail(run, rec, Failure(Kind.TERMINAL, "InvalidSpec", message))
            await steps.bookkeep(
                d,
                self._guard,
                run,
                config_error=message,
                planned=planning.Planned(),
                suspended=False,
                blocked=None,
            )
            return steps.result(d, self._guard, run, slots_mark=mark)

        planned = (
            await self._guard.step(
                run,
                Step.SCHEDULE,
                lambda: planning.plan_schedule(d, cluster=cluster, cluster_obj=cluster_obj),
            )
            or planning.Planned()
        )
        if planned.next_window is not None:
            run.wait((planned.next_window - d.now()).total_seconds())
        triggered = await self._guard.step(
            run,
            Step.TRIGGER,
            lambda: planning.plan_trigger(
                d, cluster=cluster, cluster_obj=cluster_obj, records=steps.fresh_records(d, run)
            ),
        )
        if triggered is not None:
            run.backup_status.update(triggered.backup_status)
        run.backup_status.update(planned.backup_status)
        drilled = await steps.drills(d, self._guard, run, cluster)
        untrusted = "; ".join(d.executor_image.problems(cluster.backup))
        config_error = "; ".join(e for e in (planned.invalid, drilled.invalid, untrusted) if e)

        blocked: str | None = None
        if not active:
            blocked = await launch_step.launch_next(
                d, self._guard, run, cluster, steps.fresh_records(d, run)
            )
        else:
            records = steps.fresh_records(d, run)
            ahead = next(iter(running_records(records.values())), None)
            if ahead is not None:
                await launch_step.queue_behind(d, self._guard, run, records, behind=name_of(ahead))
        await steps.bookkeep(
            d,
            self._guard,
            run,
            config_error=config_error,
            planned=planned,
            suspended=cluster.backup.suspend,
            blocked=blocked,
        )
        return steps.result(d, self._guard, run, slots_mark=mark)

    async def background(self) -> None:
        """What runs beside the workers while this process reconciles: the lock renewals."""
        if self.deps.renewer is not None:
            await self.deps.renewer.run()


def _parse(cluster_obj: JSONObject | None) -> tuple[ClusterSpec | None, str]:
    if cluster_obj is None:
        return None, ""
    try:
        return parse_cluster(cluster_obj), ""
    except SpecError as exc:
        return None, str(exc)


# -- registration -------------------------------------------------------------------------------


def build(ctx: Context) -> BackupManager:
    return BackupManager(deps=build_deps(ctx))


SPEC = ReconcilerSpec(
    name="backup-manager",
    primary=OPENBAO_CLUSTER,
    build=build,
    watches=tuple(Watch(resource=r, to_keys=m) for r, m in CLUSTER_KEY_MAPPERS.items()),
    indexers=INDEXERS,
)
