"""The backup manager's dependencies, built from the runtime's :class:`Context`.

Guarantees: every cache the backup manager reads is wrapped in a read-your-writes
:class:`~controller.backup.act.fresh.FreshView` (clusters, records, restores, Leases, Jobs,
pods); every write goes through the one throttled client, except lock renewals, which have a
lane of their own (``--lock-renew-qps``) and a renewal task beside the workers
(:class:`~controller.backup.act.renewer.Renewer`) that renews only Leases of ``Running``
records; the executor-Job caps exist only when a cap is set.
"""

from __future__ import annotations

import math

from controller.backup.act.deps import BY_PHASE, INDEXERS, Deps
from controller.backup.act.fresh import FreshView
from controller.backup.act.lock import OperationLock
from controller.backup.act.probe import probe_openbao
from controller.backup.act.renewer import Renewer
from controller.backup.act.slots import LaunchSlots
from controller.backup.act.status import StatusWriter
from controller.backup.decide import oplock
from controller.backup.decide.images import ImagePolicy
from controller.backup.decide.records import RUNNING, phase_of
from controller.kube.client import TokenBucket
from controller.kube.events import EventRecorder
from controller.kube.resources import (
    JOB,
    LEASE,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    POD,
)
from controller.reconcilers.base import Context


def build_deps(ctx: Context) -> Deps:
    s = ctx.settings
    clusters = FreshView(cache=ctx.caches[OPENBAO_CLUSTER])
    backups = FreshView(cache=ctx.caches[OPENBAO_BACKUP], indexers=INDEXERS[OPENBAO_BACKUP])
    restores = FreshView(cache=ctx.caches[OPENBAO_RESTORE], indexers=INDEXERS[OPENBAO_RESTORE])
    leases = FreshView(cache=ctx.caches[LEASE])
    jobs = FreshView(cache=ctx.caches[JOB], indexers=INDEXERS[JOB])
    deps = Deps(
        api=ctx.api,
        clusters=clusters,
        backups=backups,
        restores=restores,
        jobs=jobs,
        pods=FreshView(cache=ctx.caches[POD], indexers=INDEXERS[POD]),
        status=StatusWriter(
            api=ctx.api,
            views={OPENBAO_CLUSTER: clusters, OPENBAO_BACKUP: backups, OPENBAO_RESTORE: restores},
        ),
        events=EventRecorder(api=ctx.api, instance=s.identity),
        lock=OperationLock(
            api=ctx.api,
            leases=leases,
            jobs=jobs,
            duration_seconds=s.operation_lock_seconds,
            # the renewal lane: same connections, its own write budget
            renew_api=ctx.api.with_throttle(
                TokenBucket(qps=s.lock_renew_qps, burst=max(1, math.ceil(s.lock_renew_qps)))
            ),
        ),
        probe=probe_openbao,
        executor_image=ImagePolicy(default=s.executor_image, allowlist=s.executor_image_allowlist),
        job_ttl_seconds=s.job_ttl_seconds,
        spread_seconds=s.schedule_spread_seconds,
        slots=LaunchSlots(
            backups=backups,
            by_phase=BY_PHASE,
            max_total=s.backup_cap,
            max_per_target=s.max_concurrent_backups_per_target,
        ),
    )

    def still_running(namespace: str, holder: str) -> bool:
        run = oplock.parse_holder(holder)
        record = backups.get(f"{namespace}/{run.run}") if run is not None else None
        return record is not None and phase_of(record) == RUNNING

    deps.renewer = Renewer(lock=deps.lock, now=lambda: deps.now(), still_running=still_running)
    return deps
