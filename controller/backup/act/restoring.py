"""Driving an OpenBaoRestore: validate, safety snapshot, restore under the lock, verify.

The decisions are :mod:`controller.backup.decide.restore`; the user's view is docs/restore.md.

Guarantees:

* phases only move forward: Pending -> Validating -> SafetySnapshot -> Restoring ->
  Verifying -> Succeeded | Failed, each transition written to status with a condition and an
  event; a Failed restore is never retried (a new OpenBaoRestore is the retry);
* nothing is posted to OpenBao before the ``verify`` Job proved the object complete and equal
  to its manifest (size, SHA-256, archive checksums), and, unless disabled, before a backup of
  the current state (the safety snapshot, an OpenBaoBackup with trigger ``pre-restore`` and
  deletionPolicy Retain) succeeded; if the safety snapshot fails, the restore fails and
  OpenBao was not touched;
* the restore Job runs only while this restore holds the cluster's operation lock
  (``restore/<name>``); the lock is renewed while the Job runs and while OpenBao is verified,
  and released once the restore is terminal, so backups and snapshot deletions of the cluster
  wait for it, and it waits for a running backup;
* every wait is a timed requeue or a watch event (Jobs, records and Leases of the cluster wake
  its key): no polling loop in a worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.backup.act import restore_phases as phases
from controller.backup.act.deps import Deps
from controller.backup.act.restoring_base import fail, finish, status_of, write
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide import restore as rs
from controller.backup.decide.spec import ClusterSpec
from controller.cache.store import JSONObject

__all__ = ["drive", "fail", "finish"]

VERIFY = names.JobPurpose.VERIFY


async def drive(
    deps: Deps,
    *,
    restore: JSONObject,
    cluster: ClusterSpec | None,
    spec_error: str,
    records: Mapping[str, JSONObject],
) -> float | None:
    """Advance one restore by as many phases as are ready; seconds until it looks again."""
    phase = str(status_of(restore).get("phase") or rs.PENDING)
    if phase in rs.TERMINAL_PHASES:
        await finish(deps, restore=restore)
        return None
    spec = rs.parse_restore(restore)
    if cluster is None or cluster.backup is None:
        reason = "ClusterNotFound" if not spec_error else "InvalidSpec"
        message = spec_error or f"OpenBaoCluster {spec.cluster} not found"
        if not spec_error and cluster is not None:
            reason, message = "InvalidSpec", "spec.backup is not set on the cluster"
        await fail(deps, restore=restore, reason=reason, message=message)
        return None
    source = rs.resolve_source(
        restore=spec,
        cluster_target=cluster.backup.target,
        record=records.get(spec.backup_name) if spec.backup_name else None,
        cluster_allows_link_local=cluster.allow_link_local,
    )
    if isinstance(source, rs.Refusal):
        await fail(deps, restore=restore, reason=source.reason, message=source.message)
        return None
    metrics = deps.metrics.get(f"{spec.namespace}/{spec.cluster}")
    if metrics is not None:
        metrics.restore_in_progress(True)
    if phase == rs.PENDING:
        restore = await write(
            deps,
            restore,
            phase=rs.VALIDATING,
            key=source.key,
            startTime=cond.rfc3339(deps.now()),
            validationJob=names.job_name(record=spec.name, purpose=VERIFY),
        )
        await deps.events.emit(
            obj=restore, type="Normal", reason="RestoreValidating", note=f"verifying {source.key}"
        )
        phase = rs.VALIDATING
    if phase == rs.VALIDATING:
        outcome = await phases.validate(
            deps, restore=restore, spec=spec, source=source, cluster=cluster
        )
        if not isinstance(outcome, Mapping):
            return outcome
        restore, phase = outcome, str(status_of(outcome).get("phase"))
    if phase == rs.SAFETY_SNAPSHOT:
        outcome = await phases.safety(deps, restore=restore, spec=spec, records=records)
        if not isinstance(outcome, Mapping):
            return outcome
        restore, phase = outcome, rs.RESTORING
    if phase == rs.RESTORING:
        outcome = await phases.restore(
            deps, restore=restore, spec=spec, source=source, cluster=cluster
        )
        if not isinstance(outcome, Mapping):
            return outcome
        restore = outcome
    return await phases.verify(deps, restore=restore, spec=spec, cluster=cluster)
