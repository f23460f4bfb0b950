"""Deleting an OpenBaoBackup record deletes its snapshot (unless deletionPolicy is Retain).

Guarantees:

* a record carries :data:`~controller.backup.decide.records.SNAPSHOT_FINALIZER` from birth; it is
  removed only when the snapshot is confirmed gone (an executor ``delete`` Job succeeded),
  or there is nothing to delete (policy Retain, no key, the run never produced a snapshot);
* the controller never deletes objects itself (it holds no storage credentials): a
  ``<record>-delete`` executor Job does, against the target recorded on the record when it
  ran (``status.target``), so moving a cluster to a new bucket, or deleting the cluster, does
  not strand old snapshots; the executor refuses keys outside the cluster's own prefix;
* a record deleted while its backup runs first cancels the run (the Job is deleted; the
  executor aborts its upload) and then handles whatever the run left;
* a delete Job runs only while it holds the cluster's operation lock (``delete/<record>``),
  renewed while it runs and released when it ends: snapshots are never deleted while a
  restore (or a backup) of the cluster runs;
* a failed delete Job is reported (a ``SnapshotDeleteFailed`` event) and replaced by a fresh
  Job :data:`~..decide.timing.DELETE_RETRY_SECONDS` after it failed;
* the record's finalizer goes only after its outcome was counted and its lock released (the
  finish step runs first in every reconcile), and after the delete Job's result finalizers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.lock import DELETE_OP, me
from controller.backup.act.running import release_finalizers
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide.jobresult import JobPhase, interpret
from controller.backup.decide.jobspec import build_job
from controller.backup.decide.records import (
    RUNNING,
    SNAPSHOT_FINALIZER,
    SUCCEEDED,
    TERMINAL,
    has_finalizer,
    name_of,
    phase_of,
)
from controller.backup.decide.spec import (
    Auth,
    BackupSpec,
    ClusterSpec,
    ExecutorPod,
    Retention,
    Target,
    parse_target,
)
from controller.backup.decide.timing import DELETE_RETRY_SECONDS, MIN_REQUEUE_SECONDS
from controller.cache.store import JSONObject
from controller.errors import AlreadyExists, Forbidden, NotFound
from controller.kube.finalizers import remove_finalizer
from controller.kube.resources import JOB, OPENBAO_BACKUP
from controller.logging import get_logger

DELETE = names.JobPurpose.DELETE
_log = get_logger(controller="backup-manager", component="deletion")


def _target_for(record: Mapping[str, Any], cluster: ClusterSpec | None) -> Target | None:
    raw = (record.get("status") or {}).get("target")
    if raw:
        try:
            return parse_target(raw)
        except ValueError:
            pass
    if cluster is not None and cluster.backup is not None:
        return cluster.backup.target
    return None


def _carrier(namespace: str, name: str, cluster: ClusterSpec | None, target: Target) -> ClusterSpec:
    """A ClusterSpec able to build a delete Job even when the cluster is gone."""
    if cluster is not None and cluster.backup is not None:
        return cluster
    return ClusterSpec(
        namespace=namespace,
        name=name,
        uid="",
        generation=0,
        address="",
        ca_configmap=None,
        ca_secret=None,
        backup=BackupSpec(
            schedule=None,
            time_zone="UTC",
            suspend=True,
            starting_deadline_seconds=None,
            target=target,
            auth=Auth(method="token"),
            retention=Retention(),
            executor=ExecutorPod(),
        ),
    )


async def handle(
    deps: Deps, *, record: JSONObject, cluster: ClusterSpec | None, cluster_name: str
) -> float | None:
    """Progress the deletion of ``record``; seconds to requeue after, or None."""
    ns, rec = str(record["metadata"]["namespace"]), name_of(record)
    if not has_finalizer(record, SNAPSHOT_FINALIZER):
        return None
    phase = phase_of(record)
    if phase == RUNNING:
        job = deps.job_of(namespace=ns, record=rec, purpose=names.JobPurpose.BACKUP)
        if job is not None and not job["metadata"].get("deletionTimestamp"):
            # The event first: a delete that times out may still have happened, and the next
            # pass would then see the Job terminating and say nothing.
            await deps.events.emit(
                obj=record,
                type="Warning",
                reason="BackupCancelled",
                note="record deleted while its backup ran; its Job is deleted",
            )
            with contextlib.suppress(NotFound):
                await deps.api.delete(
                    path=JOB.path(namespace=ns, name=job["metadata"]["name"]),
                    propagation="Foreground",
                )
        return None  # the run's outcome is recorded first (running.observe), then we continue
    status = record.get("status") or {}
    if phase in TERMINAL and not status.get("accounted"):
        return None  # the finish step counts it and releases its lock first (same pass)
    key = status.get("key")
    policy = (record.get("spec") or {}).get("deletionPolicy") or "Delete"
    deleted = cond.is_true(status.get("conditions"), cond.SNAPSHOT_DELETED)
    if phase != SUCCEEDED or not key or policy == "Retain" or deleted:
        # A delete Job whose result is recorded lets go of its finalizers (a no-op without one).
        await release_finalizers(
            deps, namespace=ns, job_name=names.job_name(record=rec, purpose=DELETE)
        )
        await _remove_finalizer(deps, record)
        return None
    target = _target_for(record, cluster)
    if target is None:
        await deps.events.emit(
            obj=record,
            type="Warning",
            reason="SnapshotDeleteBlocked",
            note="no storage target is known for this record; its snapshot is kept",
        )
        await _remove_finalizer(deps, record)
        return None
    job_name = names.job_name(record=rec, purpose=DELETE)
    job = deps.job_of(namespace=ns, record=rec, purpose=DELETE)
    holder = me(rec, DELETE_OP)
    if job is None:
        attempt = await deps.lock.acquire(
            namespace=ns, cluster=cluster_name, me=holder, now=deps.now()
        )
        if not attempt.held:
            # A restore (or a backup) holds the cluster: deleting waits for it.
            assert attempt.retry_at is not None
            return max(MIN_REQUEUE_SECONDS, (attempt.retry_at - deps.now()).total_seconds())
        body = build_job(
            cluster=_carrier(ns, cluster_name, cluster, target),
            record=record,
            job_name=job_name,
            purpose="delete",
            image=deps.executor_image,
            ttl_seconds_after_finished=deps.job_ttl_seconds,
            delete_keys=[str(key)],
            target_override=target,
        )
        try:
            await deps.api.create(path=JOB.path(namespace=ns), body=body)
        except AlreadyExists:
            pass
        except Forbidden as exc:
            if "being terminated" not in exc.message:
                raise
            # The whole namespace is being deleted: no Job can run here any more. Keep the
            # snapshot (a backup tool errs on the side of data) and let the record go.
            _log.warning("namespace terminating: snapshot kept", namespace=ns, record=rec, key=key)
            await _remove_finalizer(deps, record)
        return None
    result = interpret(
        job=job, pods=deps.pods_of(namespace=ns, job=job_name), expected_mode="delete"
    )
    if result.phase is JobPhase.RUNNING:
        return await deps.lock.renew(namespace=ns, cluster=cluster_name, me=holder, now=deps.now())
    await deps.lock.release(namespace=ns, cluster=cluster_name, me=holder, now=deps.now())
    if result.phase is JobPhase.SUCCEEDED:
        now = deps.now()
        record = await deps.status.backup(
            obj=record,
            status={
                "conditions": cond.set_condition(
                    status.get("conditions"),
                    type=cond.SNAPSHOT_DELETED,
                    status="True",
                    reason="Deleted",
                    message=f"deleted {key}",
                    observed_generation=None,
                    now=now,
                )
            },
        )
        await deps.events.emit(
            obj=record, type="Normal", reason="SnapshotDeleted", note=f"deleted {key}"
        )
        await release_finalizers(deps, namespace=ns, job_name=job_name)
        await _remove_finalizer(deps, record)  # the status write's resourceVersion
        return None
    await deps.events.emit(
        obj=record,
        type="Warning",
        reason="SnapshotDeleteFailed",
        note=f"{result.reason}: {result.message}; retrying in {DELETE_RETRY_SECONDS:.0f}s",
    )
    # Pace the retries by the failed Job's own end: it is replaced only DELETE_RETRY_SECONDS
    # after it failed, however often the reconcile runs meanwhile.
    failed_at = _finished_at(job) or deps.now()
    wait = DELETE_RETRY_SECONDS - (deps.now() - failed_at).total_seconds()
    if wait > 0:
        return max(MIN_REQUEUE_SECONDS, wait)
    await release_finalizers(deps, namespace=ns, job_name=job_name)
    with contextlib.suppress(NotFound):
        await deps.api.delete(path=JOB.path(namespace=ns, name=job_name))
    return None


def _finished_at(job: Mapping[str, Any]) -> dt.datetime | None:
    """When a Job reached its terminal condition."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return cond.parse_time(c.get("lastTransitionTime"))
    return None


async def adopt(deps: Deps, *, record: JSONObject) -> None:
    """A record created with kubectl gets the snapshot finalizer on first sight."""
    meta = record["metadata"]
    finalizers = [*(meta.get("finalizers") or ()), SNAPSHOT_FINALIZER]
    adopted = await deps.api.merge_patch(
        path=OPENBAO_BACKUP.path(namespace=meta["namespace"], name=meta["name"]),
        body={"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}},
    )
    deps.backups.remember(adopted)


async def _remove_finalizer(deps: Deps, record: JSONObject) -> None:
    meta = record["metadata"]
    await remove_finalizer(
        deps.api,
        path=OPENBAO_BACKUP.path(namespace=meta["namespace"], name=meta["name"]),
        obj=record,
        finalizer=SNAPSHOT_FINALIZER,
    )
