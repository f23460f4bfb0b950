"""A cluster's metric series, created and restored from the API's state before any step runs.

Guarantees:

* :func:`cluster_metrics` runs at the start of every reconcile of an existing cluster, so each
  step finds the cluster's :class:`~controller.metrics.BackupMetrics` (every series created at
  zero: backups, restores, drills);
* on the first reconcile of each cluster in this process (a start, a restart, a leader
  failover) the gauges that describe the past are restored from what the API server holds,
  never left at zero: the last success, failures and size (the cluster's ``status.backup``),
  the last passed restore drill (``status.backup.lastVerifiedBackup``), the last successful
  restore (the newest ``Succeeded`` OpenBaoRestore's ``completionTime``) and the time the
  operation lock has been held for a backup that still runs (the Lease's ``acquireTime``);
* the outcome gauges (last success, failures, size) are refreshed from status on every
  reconcile, as before, so another replica's accounting shows up after a failover.
"""

from __future__ import annotations

from controller.backup.act.deps import Deps
from controller.backup.act.guard import Pass
from controller.backup.act.lock import BACKUP_OP
from controller.backup.decide import conditions as cond
from controller.backup.decide import oplock
from controller.backup.decide import restore as rs
from controller.backup.decide.records import RUNNING, created_at, phase_of
from controller.metrics import BackupMetrics


def cluster_metrics(d: Deps, run: Pass) -> BackupMetrics:
    """The cluster's metrics (``run.cluster_obj`` must exist), restored from the API state."""
    cluster_obj = run.cluster_obj
    assert cluster_obj is not None
    fresh = run.key not in d.metrics
    metrics = d.metrics_for(
        namespace=run.namespace, cluster=run.name, created=created_at(cluster_obj).timestamp()
    )
    status = (cluster_obj.get("status") or {}).get("backup") or {}
    last_success = cond.parse_time(status.get("lastBackupTime"))
    metrics.restore_state(
        last_success=last_success.timestamp() if last_success else None,
        consecutive_failures=int(status.get("consecutiveFailures") or 0),
        last_size=status.get("lastBackupSize"),
    )
    if fresh:
        verified = cond.parse_time((status.get("lastVerifiedBackup") or {}).get("time"))
        metrics.restore_history(
            last_verified=verified.timestamp() if verified else None,
            last_restore=_last_restore(d, run),
            lock_held_since=_backup_lock_since(d, run),
        )
    return metrics


def _last_restore(d: Deps, run: Pass) -> float | None:
    done = [
        cond.parse_time((r.get("status") or {}).get("completionTime"))
        for r in d.restores_of(namespace=run.namespace, cluster=run.name)
        if (r.get("status") or {}).get("phase") == rs.SUCCEEDED_PHASE
    ]
    times = [t.timestamp() for t in done if t is not None]
    return max(times) if times else None


def _backup_lock_since(d: Deps, run: Pass) -> float | None:
    """When the Lease was taken, if it is held for a backup of this cluster that runs."""
    _, lease = d.lock.observe(namespace=run.namespace, cluster=run.name, now=d.now())
    holder = oplock.parse_holder(lease.holder) if lease is not None else None
    if lease is None or holder is None or holder.op != BACKUP_OP:
        return None
    record = run.records.get(holder.run)
    if record is None or phase_of(record) != RUNNING:
        return None
    since = lease.acquire_time or lease.renew_time
    return since.timestamp() if since is not None else None
