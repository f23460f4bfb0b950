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
    bookkeeping,
    deletion,
    drilling,
    launch_step,
    metric_state,
    outcome,
    planning,
    restoring,
    running,
)
from controller.backup.act.deps import CLUSTER_KEY_MAPPERS, INDEXERS, Deps
from controller.backup.act.guard import Guard, Pass
from controller.backup.act.lock import me
from controller.backup.decide.failures import Failure, Kind, Step
from controller.backup.decide.jobresult import JobPhase
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
        cluster, spec_error = _parse(run.cluster_obj)
        if run.cluster_obj is not None:  # every step finds the series, restored after a restart
            metric_state.cluster_metrics(d, run)

        active = False
        for rec in running_records(run.records.values()):
            still = await self._guard.step(
                run, Step.RUNNING, partial(self._drive, run, rec), record=rec
            )
            active = active or bool(still) or phase_of(run.records[name_of(rec)]) == RUNNING
        for rec in list(run.records.values()):
            if phase_of(rec) in TERMINAL:
                await self._guard.step(run, Step.FINISH, partial(self._finish, run, rec))

        for rec in list(self._records(run).values()):
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
                records=self._records(run),
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
            return _result(self._guard.requeue_after(run))

        cluster_obj = run.cluster_obj
        metric_state.cluster_metrics(d, run).in_progress(active)

        if cluster is None or cluster.backup is None:
            message = spec_error or "spec.backup is not set: nothing to back up"
            for rec in list(run.records.values()):
                if phase_of(rec) == PENDING and not is_deleting(rec):
                    await self._guard.fail(run, rec, Failure(Kind.TERMINAL, "InvalidSpec", message))
            await self._bookkeep(
                run, config_error=message, planned=planning.Planned(), suspended=False, blocked=None
            )
            return _result(self._guard.requeue_after(run))

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
                d, cluster=cluster, cluster_obj=cluster_obj, records=self._records(run)
            ),
        )
        if triggered is not None:
            run.backup_status.update(triggered.backup_status)
        run.backup_status.update(planned.backup_status)
        drilled = await self._drills(run, cluster)
        untrusted = "; ".join(d.executor_image.problems(cluster.backup))
        config_error = "; ".join(e for e in (planned.invalid, drilled.invalid, untrusted) if e)

        blocked: str | None = None
        if not active:
            blocked = await launch_step.launch_next(
                d, self._guard, run, cluster, self._records(run)
            )
        else:
            records = self._records(run)
            ahead = next(iter(running_records(records.values())), None)
            if ahead is not None:
                await launch_step.queue_behind(d, self._guard, run, records, behind=name_of(ahead))
        await self._bookkeep(
            run,
            config_error=config_error,
            planned=planned,
            suspended=cluster.backup.suspend,
            blocked=blocked,
        )
        return _result(self._guard.requeue_after(run))

    async def background(self) -> None:
        """What runs beside the workers while this process reconciles: the lock renewals."""
        if self.deps.renewer is not None:
            await self.deps.renewer.run()

    # -- steps ---------------------------------------------------------------------------------

    def _records(self, run: Pass) -> dict[str, JSONObject]:
        """The cluster's records as they are now (our own writes of this pass included)."""
        run.records = {
            name_of(r): r for r in self.deps.records_of(namespace=run.namespace, cluster=run.name)
        }
        return run.records

    async def _drive(self, run: Pass, record: JSONObject) -> bool:
        """Renew or finish a running record; True while its Job runs."""
        d = self.deps
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

    async def _finish(self, run: Pass, record: JSONObject) -> None:
        run.cluster_obj = await outcome.finish(
            self.deps, record=record, cluster_obj=run.cluster_obj
        )

    async def _drills(self, run: Pass, cluster: ClusterSpec) -> planning.Planned:
        """Record finished restore drills, then start the one a due window asks for."""
        d = self.deps
        assert cluster.backup is not None
        metrics = d.metrics.get(run.key)
        if metrics is not None:
            metrics.verify_enabled(cluster.backup.verify is not None)
        for rec in drilling.running(self._records(run)):
            assert run.cluster_obj is not None
            step = partial(drilling.observe, d, cluster_obj=run.cluster_obj, record=rec)
            updated = await self._guard.step(run, Step.DRILL, step)
            if updated is not None:
                run.cluster_obj = updated
        assert run.cluster_obj is not None
        step2 = partial(
            drilling.plan,
            d,
            cluster=cluster,
            cluster_obj=run.cluster_obj,
            records=self._records(run),
        )
        drilled = await self._guard.step(run, Step.DRILL, step2) or planning.Planned()
        if drilled.next_window is not None:
            run.wait((drilled.next_window - d.now()).total_seconds())
        run.backup_status.update(drilled.backup_status)
        return drilled

    async def _bookkeep(
        self,
        run: Pass,
        *,
        config_error: str,
        planned: planning.Planned,
        suspended: bool,
        blocked: str | None,
    ) -> None:
        assert run.cluster_obj is not None
        stalled = self._guard.stalled(run)
        cluster_obj = run.cluster_obj
        await self._guard.step(
            run,
            Step.BOOKKEEPING,
            lambda: bookkeeping.write_bookkeeping(
                self.deps,
                cluster_obj,
                config_error=config_error,
                next_window=planned.next_window,
                suspended=suspended,
                blocked=blocked,
                extra=run.backup_status,
                stalled=stalled,
            ),
        )


def _result(seconds: float | None) -> Result:
    return Result(requeue_after=seconds) if seconds is not None else Result()


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
