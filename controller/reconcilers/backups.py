"""The backup manager: one reconcile per OpenBaoCluster key drives everything of that cluster.

Keys are ``namespace/cluster``. OpenBaoBackup records (by ``spec.cluster``), Jobs, Pods and
Leases (by the ``backup.openbao.org/cluster`` label) all map to their cluster's key, so the
workqueue's guarantee — no key is processed by two workers at once — serialises everything
that touches one cluster, while different clusters proceed in parallel.

One reconcile, in order (each step idempotent, so a crash anywhere is repaired by the next):

1. records being deleted: cancel a running run, then delete the snapshot via an executor Job
   (:mod:`controller.backup.deletion`), then drop the record's finalizer;
2. the running record (at most one: it holds the lock): renew the lock, or record the Job's
   terminal result, count it once on the cluster, apply retention after a success, release
   the lock and the Job's finalizers (:mod:`controller.backup.runs`);
3. schedules and trigger annotations become records (:mod:`controller.backup.scheduling`);
4. if nothing runs, the oldest Pending record is launched — after preflight and the lock;
5. bookkeeping status (next window, conditions) and a timed requeue for the next event we
   are waiting for (window, lock renewal, blocked retry). No polling.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup import bookkeeping, deletion, names, outcome, runs, scheduling
from controller.backup import conditions as cond
from controller.backup.deps import CLUSTER_KEY_MAPPERS, INDEXERS, Deps
from controller.backup.jobresult import JobPhase
from controller.backup.lock import OperationLock
from controller.backup.preflight import probe_openbao
from controller.backup.records import (
    PENDING,
    SNAPSHOT_FINALIZER,
    TERMINAL,
    created_at,
    has_finalizer,
    is_deleting,
    name_of,
    next_pending,
    phase_of,
    running,
    scheduled_time,
)
from controller.backup.spec import ClusterSpec, SpecError, parse_cluster
from controller.backup.status import StatusWriter
from controller.cache.store import JSONObject, split_key
from controller.errors import NotFound
from controller.kube.events import EventRecorder
from controller.kube.resources import (
    JOB,
    LEASE,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    POD,
)
from controller.logging import get_logger
from controller.reconcilers.base import Context, ReconcilerSpec, Watch
from controller.runner import Result

_log = get_logger(controller="backup-manager")


class BackupManager:
    def __init__(self, *, deps: Deps) -> None:
        self.deps = deps
        self._blocked_attempts: dict[str, int] = {}

    async def reconcile(self, *, key: str) -> Result:
        d = self.deps
        namespace, name = split_key(key)
        cluster_obj = d.clusters.get(key)
        records = {name_of(r): r for r in d.records_of(namespace=namespace, cluster=name)}
        waits: list[float] = []
        cluster: ClusterSpec | None = None
        spec_error = ""
        if cluster_obj is not None:
            try:
                cluster = parse_cluster(cluster_obj)
            except SpecError as exc:
                spec_error = str(exc)

        # 1. deletions
        for rec in list(records.values()):
            if is_deleting(rec):
                wait = await deletion.handle(d, record=rec, cluster=cluster, cluster_name=name)
                if wait:
                    waits.append(wait)
            elif not has_finalizer(rec, SNAPSHOT_FINALIZER):
                await self._adopt(rec)

        # 2. running records
        active = False
        for rec in running(records.values()):
            still, cluster_obj = await self._drive_running(
                rec, cluster_obj=cluster_obj, waits=waits
            )
            active = active or still
        for rec in records.values():
            if phase_of(rec) in TERMINAL:
                cluster_obj = await self._finish_terminal(rec, cluster_obj=cluster_obj)

        if cluster_obj is None:
            d.drop_metrics(namespace=namespace, cluster=name)
            for rec in records.values():
                if phase_of(rec) == PENDING and not is_deleting(rec):
                    await self._fail_pending(
                        rec, reason="ClusterNotFound", message=f"OpenBaoCluster {name} not found"
                    )
            return _result(waits)

        metrics = d.metrics_for(
            namespace=namespace, cluster=name, created=created_at(cluster_obj).timestamp()
        )
        status = (cluster_obj.get("status") or {}).get("backup") or {}
        last_success = cond.parse_time(status.get("lastBackupTime"))
        metrics.restore_state(
            last_success=last_success.timestamp() if last_success else None,
            consecutive_failures=int(status.get("consecutiveFailures") or 0),
            last_size=status.get("lastBackupSize"),
        )
        metrics.in_progress(active)

        if cluster is None or cluster.backup is None:
            message = spec_error or "spec.backup is not set: nothing to back up"
            await bookkeeping.write_bookkeeping(
                d,
                cluster_obj,
                config_error=message,
                next_window=None,
                suspended=False,
                blocked=None,
                extra={},
            )
            if spec_error:
                await d.events.emit(
                    obj=cluster_obj, type="Warning", reason="InvalidSpec", note=spec_error
                )
            return _result(waits)

        # 3. schedules and triggers -> records
        planned = await scheduling.run(d, cluster=cluster, cluster_obj=cluster_obj)
        if planned.next_window is not None:
            waits.append(max(0.5, (planned.next_window - d.now()).total_seconds()))

        # 4. launch the next pending record
        blocked: str | None = None
        if not active:
            blocked = await self._launch_next(
                cluster, cluster_obj, records, waits, planned.backup_status
            )
        await bookkeeping.write_bookkeeping(
            d,
            cluster_obj,
            config_error=planned.invalid,
            next_window=planned.next_window,
            suspended=planned.suspended,
            blocked=blocked,
            extra=planned.backup_status,
        )
        return _result(waits)

    # -- steps ------------------------------------------------------------------------------

    async def _adopt(self, record: JSONObject) -> None:
        """Records created with kubectl get the snapshot finalizer on first sight."""
        meta = record["metadata"]
        finalizers = [*(meta.get("finalizers") or ()), SNAPSHOT_FINALIZER]
        await self.deps.api.merge_patch(
            path=OPENBAO_BACKUP.path(namespace=meta["namespace"], name=meta["name"]),
            body={
                "metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}
            },
        )

    async def _drive_running(
        self, record: JSONObject, *, cluster_obj: JSONObject | None, waits: list[float]
    ) -> tuple[bool, JSONObject | None]:
        """Renew or finish a running record: (still running, latest cluster object)."""
        d = self.deps
        ns, rec = str(record["metadata"]["namespace"]), name_of(record)
        cluster = str(record["spec"]["cluster"])
        result = await runs.observe(d, namespace=ns, record=record)
        if result.phase is JobPhase.RUNNING:
            wait = await runs.renew(d, namespace=ns, cluster=cluster, record=rec)
            if wait is not None:
                waits.append(wait)
            return True, cluster_obj
        updated = await runs.record_outcome(d, record=record, result=result)
        return False, await self._finish_terminal(updated, cluster_obj=cluster_obj)

    async def _finish_terminal(
        self, record: JSONObject, *, cluster_obj: JSONObject | None
    ) -> JSONObject | None:
        """Count the outcome once, retention after success, release lock and finalizers.

        Returns the latest cluster object (status writes return it before the cache has it).
        """
        d = self.deps
        ns, rec = str(record["metadata"]["namespace"]), name_of(record)
        cluster_name = str(record["spec"]["cluster"])
        status = record.get("status") or {}
        ran = bool(status.get("jobName"))
        if cluster_obj is not None and ran and not status.get("accounted"):
            updated = await runs.account(d, cluster_obj=cluster_obj, record=record)
            if updated is not None:
                outcome.count_outcome(d, cluster_obj=cluster_obj, record=record)
                if phase_of(record) == "Succeeded":
                    await outcome.apply_retention(d, cluster_obj=updated, record=record)
                cluster_obj = updated
            record = await d.status.backup(obj=record, status={"accounted": True})
        now = d.now()
        released = await d.lock.release(
            namespace=ns, cluster=cluster_name, me=runs.me(rec), now=now
        )
        metrics = d.metrics.get(f"{ns}/{cluster_name}")
        if released and metrics is not None:
            metrics.lock(held_since=None)
        if ran:
            await runs.release_finalizers(
                d, namespace=ns, job_name=names.job_name(record=rec, purpose=runs.BACKUP)
            )
        return cluster_obj

    async def _fail_pending(self, record: JSONObject, *, reason: str, message: str) -> None:
        d = self.deps
        now = d.now()
        await d.status.backup(
            obj=record,
            status={
                "phase": "Failed",
                "completionTime": cond.rfc3339(now),
                "failureReason": reason,
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
            },
        )
        await d.events.emit(obj=record, type="Warning", reason=reason, note=message)

    async def _launch_next(
        self,
        cluster: ClusterSpec,
        cluster_obj: JSONObject,
        records: Mapping[str, JSONObject],
        waits: list[float],
        backup_status: dict[str, Any],
    ) -> str | None:
        d = self.deps
        key = f"{cluster.namespace}/{cluster.name}"
        assert cluster.backup is not None
        while True:
            record = next_pending(records.values())
            if record is None:
                self._blocked_attempts.pop(key, None)
                return None
            window = scheduled_time(record)
            deadline = cluster.backup.starting_deadline_seconds
            if (
                window is not None
                and deadline is not None
                and d.now() > window + dt.timedelta(seconds=deadline)
            ):
                await self._fail_pending(
                    record,
                    reason="MissedSchedule",
                    message=f"window {cond.rfc3339(window)} could not start within "
                    f"startingDeadlineSeconds={deadline}",
                )
                metrics = d.metrics.get(key)
                if metrics is not None:
                    metrics.missed(1)
                records = {k: v for k, v in records.items() if k != name_of(record)}
                continue
            break
        ca_pem = await self._openbao_ca(cluster)
        updated, blocked = await runs.launch(
            d, cluster=cluster, cluster_obj=cluster_obj, record=record, ca_pem=ca_pem
        )
        metrics = d.metrics.get(key)
        if blocked is not None:
            attempt = self._blocked_attempts.get(key, 0)
            self._blocked_attempts[key] = attempt + 1
            waits.append(runs.blocked_backoff(attempt))
            reason, _, message = blocked.partition(": ")
            now = d.now()
            await d.status.backup(
                obj=record,
                status={
                    "conditions": cond.set_condition(
                        (record.get("status") or {}).get("conditions"),
                        type=cond.BLOCKED,
                        status="True",
                        reason=reason,
                        message=message,
                        observed_generation=None,
                        now=now,
                    )
                },
            )
            await d.events.emit(obj=record, type="Warning", reason="PreflightBlocked", note=blocked)
            if metrics is not None:
                metrics.preflight_blocked(True)
            return blocked
        self._blocked_attempts.pop(key, None)
        if metrics is not None:
            metrics.preflight_blocked(False)
            metrics.in_progress(True)
            metrics.lock(held_since=d.now().timestamp())
        if updated is not None:
            waits.append(d.lock.duration_seconds / 3)
            backup_status["activeBackup"] = name_of(updated)
        return None

    async def _openbao_ca(self, cluster: ClusterSpec) -> str | None:
        ref = cluster.ca_configmap
        if ref is None:
            return None
        try:
            cm = await self.deps.api.get(
                path=f"/api/v1/namespaces/{cluster.namespace}/configmaps/{ref.name}"
            )
        except NotFound:
            return None
        return str((cm.get("data") or {}).get(ref.key) or "") or None


def _result(waits: list[float]) -> Result:
    return Result(requeue_after=min(waits)) if waits else Result()


# -- registration -------------------------------------------------------------------------------


def build(ctx: Context) -> BackupManager:
    s = ctx.settings
    deps = Deps(
        api=ctx.api,
        clusters=ctx.caches[OPENBAO_CLUSTER],
        backups=ctx.caches[OPENBAO_BACKUP],
        jobs=ctx.caches[JOB],
        pods=ctx.caches[POD],
        status=StatusWriter(api=ctx.api),
        events=EventRecorder(api=ctx.api, instance=s.identity),
        lock=OperationLock(
            api=ctx.api, leases=ctx.caches[LEASE], duration_seconds=s.operation_lock_seconds
        ),
        probe=probe_openbao,
        executor_image=s.executor_image,
        job_ttl_seconds=s.job_ttl_seconds,
    )
    return BackupManager(deps=deps)


SPEC = ReconcilerSpec(
    name="backup-manager",
    primary=OPENBAO_CLUSTER,
    build=build,
    watches=tuple(Watch(resource=r, to_keys=m) for r, m in CLUSTER_KEY_MAPPERS.items()),
    indexers=INDEXERS,
)
