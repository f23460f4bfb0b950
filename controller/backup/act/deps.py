"""What the backup manager's operations share: caches, writers, the lock, metrics, the clock.

Guarantees:

* the caches are read-only views (informer stores) that also show our own writes at once
  (:class:`~controller.backup.act.fresh.FreshView`); every write goes through ``api``, and
  every status write through ``status`` (:mod:`controller.backup.act.status`), which
  remembers what it wrote;
* ``now`` is the only clock the operations read, so tests can inject one;
* cluster-scoped lookups (records of a cluster, pods of a Job) use the informers' secondary
  indexes (:data:`INDEXERS`), not scans.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from controller.backup.act.fresh import FreshView
from controller.backup.act.lock import OperationLock
from controller.backup.act.renewer import Renewer
from controller.backup.act.slots import LaunchSlots
from controller.backup.act.status import StatusWriter
from controller.backup.decide import names
from controller.backup.decide.images import ImagePolicy
from controller.backup.decide.preflight import HealthProbe
from controller.backup.decide.vocabulary import (
    JOB_NAME_LABEL,
    LABEL_CLUSTER,
    LEGACY_JOB_NAME_LABEL,
)
from controller.cache.store import IndexFunc, JSONObject
from controller.kube.client import KubeApi
from controller.kube.events import EventRecorder
from controller.kube.resources import JOB, LEASE, OPENBAO_BACKUP, OPENBAO_RESTORE, POD, Resource
from controller.metrics import BackupMetrics

BY_CLUSTER = "cluster"
BY_JOB = "job"
BY_PHASE = "phase"

Probe = Callable[..., Awaitable[HealthProbe]]


def _record_cluster(obj: JSONObject) -> list[str]:
    cluster = (obj.get("spec") or {}).get("cluster")
    namespace = obj["metadata"].get("namespace")
    return [f"{namespace}/{cluster}"] if cluster and namespace else []


def _record_phase(obj: JSONObject) -> list[str]:
    return [str((obj.get("status") or {}).get("phase") or "Pending")]


def _labelled_cluster(obj: JSONObject) -> list[str]:
    cluster = (obj["metadata"].get("labels") or {}).get(LABEL_CLUSTER)
    namespace = obj["metadata"].get("namespace")
    return [f"{namespace}/{cluster}"] if cluster and namespace else []


def _pod_job(obj: JSONObject) -> list[str]:
    labels = obj["metadata"].get("labels") or {}
    job = labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)
    return [f"{obj['metadata'].get('namespace')}/{job}"] if job else []


INDEXERS: Mapping[Resource, Mapping[str, IndexFunc]] = {
    OPENBAO_BACKUP: {BY_CLUSTER: _record_cluster, BY_PHASE: _record_phase},
    OPENBAO_RESTORE: {BY_CLUSTER: _record_cluster},
    JOB: {BY_CLUSTER: _labelled_cluster},
    POD: {BY_JOB: _pod_job, BY_CLUSTER: _labelled_cluster},
    LEASE: {BY_CLUSTER: _labelled_cluster},
}
"""Secondary indexes; they also map each object to the cluster key it wakes up."""

CLUSTER_KEY_MAPPERS: Mapping[Resource, IndexFunc] = {
    resource: funcs[BY_CLUSTER] for resource, funcs in INDEXERS.items() if BY_CLUSTER in funcs
}
"""Which cluster key a change of each secondary resource wakes up (its ``cluster`` index)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Deps:
    api: KubeApi
    clusters: FreshView
    backups: FreshView
    restores: FreshView
    jobs: FreshView
    pods: FreshView
    status: StatusWriter
    events: EventRecorder
    lock: OperationLock
    probe: Probe
    executor_image: ImagePolicy  # the controller's executor image and the images it trusts
    job_ttl_seconds: int
    slots: LaunchSlots  # the executor-Job caps (there is always a global one)
    now: Callable[[], dt.datetime] = utcnow
    metrics: dict[str, BackupMetrics] = field(default_factory=dict)
    spread_seconds: int = 0  # opt-in jitter of scheduled windows (decide.spread)
    renewer: Renewer | None = None  # lock renewals off the workqueue; None: timed requeues

    def records_of(self, *, namespace: str, cluster: str) -> list[JSONObject]:
        return self.backups.by_index(BY_CLUSTER, f"{namespace}/{cluster}")

    def restores_of(self, *, namespace: str, cluster: str) -> list[JSONObject]:
        return self.restores.by_index(BY_CLUSTER, f"{namespace}/{cluster}")

    def job_of(
        self, *, namespace: str, record: str, purpose: names.JobPurpose
    ) -> JSONObject | None:
        return self.jobs.get(f"{namespace}/{names.job_name(record=record, purpose=purpose)}")

    def pods_of(self, *, namespace: str, job: str) -> list[JSONObject]:
        return self.pods.by_index(BY_JOB, f"{namespace}/{job}")

    def metrics_for(self, *, namespace: str, cluster: str, created: float) -> BackupMetrics:
        key = f"{namespace}/{cluster}"
        if key not in self.metrics:
            self.metrics[key] = BackupMetrics(
                namespace=namespace,
                cluster=cluster,
                created=created,
                now=lambda: self.now().timestamp(),
            )
        return self.metrics[key]

    def drop_metrics(self, *, namespace: str, cluster: str) -> None:
        found = self.metrics.pop(f"{namespace}/{cluster}", None)
        if found is not None:
            found.remove()
