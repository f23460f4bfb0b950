"""What follows a counted outcome: metrics, log lines and, after a success, retention.

Guarantees:

* :func:`count_outcome` runs once per counted run (the caller only calls it when
  :func:`controller.backup.runs.account` wrote the cluster status);
* :func:`apply_retention` runs only after a verified success and only deletes what
  :func:`controller.backup.retention.plan` selects: never the newest success, never a failed
  attempt's record, never a Retain record, never a key outside the cluster's prefix. It
  deletes RECORDS; their snapshot finalizer then deletes the objects through executor Jobs.
"""

from __future__ import annotations

import datetime as dt

from controller.backup import retention, runs
from controller.backup.deps import Deps
from controller.backup.records import created_at, name_of, phase_of, to_retention
from controller.backup.spec import parse_cluster
from controller.cache.store import JSONObject
from controller.errors import NotFound
from controller.kube.resources import OPENBAO_BACKUP
from controller.logging import get_logger

_log = get_logger(controller="backup-manager")


def count_outcome(deps: Deps, *, cluster_obj: JSONObject, record: JSONObject) -> None:
    """Metrics and a log line for an outcome just counted on the cluster."""
    d = deps
    meta = cluster_obj["metadata"]
    metrics = d.metrics_for(
        namespace=meta["namespace"],
        cluster=meta["name"],
        created=created_at(cluster_obj).timestamp(),
    )
    st = record.get("status") or {}
    duration = float(st["durationSeconds"]) if st.get("durationSeconds") else None
    if phase_of(record) == "Succeeded":
        metrics.succeeded(
            completed=runs.completion_epoch(record),
            duration=duration or 0.0,
            size=int(st.get("size") or 0),
        )
        _log.info(
            "backup succeeded",
            namespace=meta["namespace"],
            name=meta["name"],
            record=name_of(record),
            key=st.get("key"),
            size=st.get("size"),
        )
    else:
        failures = (
            int(
                ((cluster_obj.get("status") or {}).get("backup") or {}).get("consecutiveFailures")
                or 0
            )
            + 1
        )
        metrics.failed(reason=runs.failure_class(record), duration=duration, consecutive=failures)
        _log.warning(
            "backup failed",
            namespace=meta["namespace"],
            name=meta["name"],
            record=name_of(record),
            reason=st.get("failureReason"),
        )
    metrics.in_progress(False)


async def apply_retention(deps: Deps, *, cluster_obj: JSONObject, record: JSONObject) -> None:
    """After a verified success: delete the records retention expires (their finalizers
    delete the snapshots)."""
    d = deps
    cluster = parse_cluster(cluster_obj)
    if cluster.backup is None:
        return
    ret = cluster.backup.retention
    if ret.max_count is None and ret.max_age_seconds is None:
        return
    recs = {name_of(r): r for r in d.records_of(namespace=cluster.namespace, cluster=cluster.name)}
    recs[name_of(record)] = record  # the cache may not have our own write yet
    plan = retention.plan(
        records=[to_retention(r) for r in recs.values()],
        max_count=ret.max_count,
        max_age=dt.timedelta(seconds=ret.max_age_seconds) if ret.max_age_seconds else None,
        now=d.now(),
        path_prefix=cluster.backup.target.path_prefix,
        namespace=cluster.namespace,
        cluster=cluster.name,
    )
    for victim in plan.delete:
        try:
            await d.api.delete(
                path=OPENBAO_BACKUP.path(namespace=cluster.namespace, name=victim.name)
            )
        except NotFound:
            continue
        await d.events.emit(
            obj=cluster_obj,
            type="Normal",
            reason="RetentionDelete",
            note=f"{victim.name} ({victim.key}) deleted by retention ({victim.reason.value})",
        )
    metrics = d.metrics.get(f"{cluster.namespace}/{cluster.name}")
    if metrics is not None:
        metrics.retention_deleted(len(plan.delete))
    for skipped in plan.skipped:
        await d.events.emit(
            obj=cluster_obj,
            type="Warning",
            reason="RetentionSkipped",
            note=f"{skipped.name}: {skipped.reason.value}",
        )
