"""Retention, applied: after a verified success, delete the records retention expires.

Guarantees:

* :func:`apply_retention` runs only after a verified success (the caller,
  :func:`controller.backup.act.outcome.finish`, sees to it) and only deletes what
  :func:`controller.backup.decide.retention.plan` selects: never the newest success, never a
  failed attempt's record, never a Retain record, never the newest record a restore drill
  verified, never a key outside the cluster's prefix;
* it deletes RECORDS; their snapshot finalizer then deletes the objects through executor Jobs
  (:mod:`controller.backup.act.deletion`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.backup.act.deps import Deps
from controller.backup.decide import drill, retention
from controller.backup.decide.records import name_of, to_retention
from controller.backup.decide.spec import parse_cluster
from controller.cache.store import JSONObject
from controller.errors import NotFound
from controller.kube.resources import OPENBAO_BACKUP


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
    # The newest backup a restore drill proved is kept whatever the policy says.
    keep = drill.newest_verified(recs.values())
    plan = retention.plan(
        records=[
            dataclasses.replace(b, retain=True) if b.name == keep else b
            for b in (to_retention(r) for r in recs.values())
        ],
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
