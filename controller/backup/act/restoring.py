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

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.launch import openbao_ca
from controller.backup.act.lock import me
from controller.backup.act.running import release_finalizers
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide import restore as rs
from controller.backup.decide.jobresult import JobPhase, interpret
from controller.backup.decide.jobspec import RestoreRun, build_job
from controller.backup.decide.records import FAILED, SUCCEEDED, phase_of
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.timing import VERIFY_POLL_SECONDS
from controller.backup.decide.vocabulary import (
    LABEL_CLUSTER,
    LABEL_RESTORE,
    SNAPSHOT_FINALIZER,
)
from controller.cache.store import JSONObject
from controller.errors import AlreadyExists
from controller.kube.resources import JOB, OPENBAO_BACKUP, OPENBAO_RESTORE

RESTORE_OP = "restore"
VERIFY = names.JobPurpose.VERIFY
RESTORE = names.JobPurpose.RESTORE


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def safety_record_name(restore: str) -> str:
    return names.fit_label(f"{restore}-pre-restore")


async def _write(
    deps: Deps,
    obj: JSONObject,
    *,
    phase: str | None = None,
    condition: tuple[str, str, str, str] | None = None,
    **fields: Any,
) -> JSONObject:
    status: dict[str, Any] = dict(fields)
    if phase is not None:
        status["phase"] = phase
    if condition is not None:
        kind, state, reason, message = condition
        status["conditions"] = cond.set_condition(
            _status(obj).get("conditions"),
            type=kind,
            status=state,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            observed_generation=None,
            now=deps.now(),
        )
    return await deps.status.restore(obj=obj, status=status)


async def fail(deps: Deps, *, restore: JSONObject, reason: str, message: str) -> JSONObject:
    """End the restore as Failed (never retried)."""
    now = deps.now()
    started = cond.parse_time(_status(restore).get("startTime")) or now
    updated = await _write(
        deps,
        restore,
        phase=rs.FAILED_PHASE,
        condition=(FAILED, "True", reason, message),
        failureReason=reason[:64],
        message=message,
        completionTime=cond.rfc3339(now),
        durationSeconds=round((now - started).total_seconds(), 1),
    )
    await deps.events.emit(
        obj=restore, type="Warning", reason="RestoreFailed", note=f"{reason}: {message}"
    )
    cluster = str((restore.get("spec") or {}).get("cluster") or "")
    metrics = deps.metrics.get(f"{restore['metadata']['namespace']}/{cluster}")
    if metrics is not None:
        metrics.restore_failed(reason=reason)
    return updated


async def finish(deps: Deps, *, restore: JSONObject) -> None:
    """A terminal restore lets go of the lock and of its Jobs' result finalizers."""
    meta = restore["metadata"]
    ns, name = str(meta["namespace"]), str(meta["name"])
    cluster = str((restore.get("spec") or {}).get("cluster") or "")
    await deps.lock.release(namespace=ns, cluster=cluster, me=me(name, RESTORE_OP), now=deps.now())
    for purpose in (VERIFY, RESTORE):
        await release_finalizers(
            deps, namespace=ns, job_name=names.job_name(record=name, purpose=purpose)
        )
    metrics = deps.metrics.get(f"{ns}/{cluster}")
    if metrics is not None:
        metrics.restore_in_progress(False)


async def drive(
    deps: Deps,
    *,
    restore: JSONObject,
    cluster: ClusterSpec | None,
    spec_error: str,
    records: Mapping[str, JSONObject],
) -> float | None:
    """Advance one restore by as many phases as are ready; seconds until it looks again."""
    phase = str(_status(restore).get("phase") or rs.PENDING)
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
    )
    if isinstance(source, rs.Refusal):
        await fail(deps, restore=restore, reason=source.reason, message=source.message)
        return None
    metrics = deps.metrics.get(f"{spec.namespace}/{spec.cluster}")
    if metrics is not None:
        metrics.restore_in_progress(True)
    if phase == rs.PENDING:
        restore = await _write(
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
        outcome = await _validate(deps, restore=restore, spec=spec, source=source, cluster=cluster)
        if not isinstance(outcome, Mapping):
            return outcome
        restore, phase = outcome, str(_status(outcome).get("phase"))
    if phase == rs.SAFETY_SNAPSHOT:
        outcome = await _safety(deps, restore=restore, spec=spec, records=records)
        if not isinstance(outcome, Mapping):
            return outcome
        restore, phase = outcome, rs.RESTORING
    if phase == rs.RESTORING:
        outcome = await _restore(deps, restore=restore, spec=spec, source=source, cluster=cluster)
        if not isinstance(outcome, Mapping):
            return outcome
        restore = outcome
    return await _verify(deps, restore=restore, spec=spec, cluster=cluster)


async def _job(
    deps: Deps,
    *,
    restore: JSONObject,
    spec: rs.RestoreSpec,
    source: rs.Source,
    cluster: ClusterSpec,
    purpose: names.JobPurpose,
) -> None:
    body = build_job(
        cluster=cluster,
        record=restore,
        job_name=names.job_name(record=spec.name, purpose=purpose),
        purpose="verify" if purpose is VERIFY else "restore",
        image=deps.executor_image,
        ttl_seconds_after_finished=deps.job_ttl_seconds,
        target_override=source.target,
        auth_override=spec.auth,
        restore=RestoreRun(key=source.key, force=spec.force),
        owner=OPENBAO_RESTORE,
    )
    with contextlib.suppress(AlreadyExists):
        await deps.api.create(path=JOB.path(namespace=spec.namespace), body=body)


def _result(deps: Deps, spec: rs.RestoreSpec, purpose: names.JobPurpose) -> Any:
    job_name = names.job_name(record=spec.name, purpose=purpose)
    job = deps.jobs.get(f"{spec.namespace}/{job_name}")
    if job is None:
        return None
    return interpret(
        job=job,
        pods=deps.pods_of(namespace=spec.namespace, job=job_name),
        expected_mode=purpose.value,
    )


async def _validate(
    deps: Deps,
    *,
    restore: JSONObject,
    spec: rs.RestoreSpec,
    source: rs.Source,
    cluster: ClusterSpec,
) -> JSONObject | float | None:
    result = _result(deps, spec, VERIFY)
    if result is None:
        await _job(deps, restore=restore, spec=spec, source=source, cluster=cluster, purpose=VERIFY)
        return None
    if result.phase is JobPhase.RUNNING:
        return None
    report = result.report
    if result.phase is not JobPhase.SUCCEEDED or report is None:
        await fail(
            deps,
            restore=restore,
            reason=result.reason or "ValidationFailed",
            message=result.message or "the snapshot did not verify",
        )
        return None
    nxt = rs.SAFETY_SNAPSHOT if spec.safety_snapshot else rs.RESTORING
    fields = {
        "key": report.key,
        "manifestKey": report.manifest_key,
        "sha256": report.sha256,
        "size": report.size,
        "raftIndex": report.raft_index,
        "raftTerm": report.raft_term,
        "openbaoVersion": report.openbao_version,
    }
    message = f"{report.key}: {report.size} bytes, sha256 {report.sha256}, archive verified"
    updated = await _write(
        deps,
        restore,
        phase=nxt,
        condition=(rs.VALIDATED, "True", "Verified", message),
        **{k: v for k, v in fields.items() if v is not None},
    )
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreValidated", note=message)
    return updated


async def _safety(
    deps: Deps, *, restore: JSONObject, spec: rs.RestoreSpec, records: Mapping[str, JSONObject]
) -> JSONObject | float | None:
    name = safety_record_name(spec.name)
    record = records.get(name) or deps.backups.get(f"{spec.namespace}/{name}")
    if record is None:
        body = {
            "apiVersion": OPENBAO_BACKUP.api_version,
            "kind": OPENBAO_BACKUP.kind,
            "metadata": {
                "name": name,
                "namespace": spec.namespace,
                "labels": {LABEL_CLUSTER: spec.cluster, LABEL_RESTORE: names.fit_label(spec.name)},
                "finalizers": [SNAPSHOT_FINALIZER],
            },
            "spec": {"cluster": spec.cluster, "trigger": "pre-restore", "deletionPolicy": "Retain"},
        }
        with contextlib.suppress(AlreadyExists):
            deps.backups.remember(
                await deps.api.create(
                    path=OPENBAO_BACKUP.path(namespace=spec.namespace), body=body
                ),
                created=True,
            )
        if _status(restore).get("safetySnapshot") != name:
            await _write(deps, restore, safetySnapshot=name)
            await deps.events.emit(
                obj=restore,
                type="Normal",
                reason="SafetySnapshotStarted",
                note=f"backing up the current state first: OpenBaoBackup {name}",
            )
        return None
    if phase_of(record) == FAILED:
        message = f"the safety snapshot {name} failed: {_status(record).get('message') or ''}"
        await fail(deps, restore=restore, reason="SafetySnapshotFailed", message=message.strip())
        return None
    if phase_of(record) != SUCCEEDED:
        return None
    message = f"OpenBaoBackup {name}: {_status(record).get('key')}"
    updated = await _write(
        deps,
        restore,
        phase=rs.RESTORING,
        safetySnapshot=name,
        condition=(rs.SAFETY_SNAPSHOT_TAKEN, "True", "Succeeded", message),
    )
    await deps.events.emit(obj=restore, type="Normal", reason="SafetySnapshotTaken", note=message)
    return updated


async def _restore(
    deps: Deps,
    *,
    restore: JSONObject,
    spec: rs.RestoreSpec,
    source: rs.Source,
    cluster: ClusterSpec,
) -> JSONObject | float | None:
    holder = me(spec.name, RESTORE_OP)
    result = _result(deps, spec, RESTORE)
    if result is None:
        attempt = await deps.lock.acquire(
            namespace=spec.namespace, cluster=spec.cluster, me=holder, now=deps.now()
        )
        if not attempt.held:
            assert attempt.retry_at is not None
            await _blocked(deps, restore=restore, message=attempt.message)
            return max(0.5, (attempt.retry_at - deps.now()).total_seconds())
        await _job(
            deps, restore=restore, spec=spec, source=source, cluster=cluster, purpose=RESTORE
        )
        job = names.job_name(record=spec.name, purpose=RESTORE)
        if _status(restore).get("restoreJob") != job:
            await _write(
                deps,
                restore,
                restoreJob=job,
                condition=("Blocked", "False", "Launched", f"Job {job} created"),
            )
            note = f"restoring {source.key}" + (" with snapshot-force" if spec.force else "")
            await deps.events.emit(obj=restore, type="Normal", reason="RestoreStarted", note=note)
        return deps.lock.renew_every
    if result.phase is JobPhase.RUNNING:
        return await deps.lock.renew(
            namespace=spec.namespace, cluster=spec.cluster, me=holder, now=deps.now()
        )
    if result.phase is not JobPhase.SUCCEEDED:
        await fail(
            deps,
            restore=restore,
            reason=result.reason or "RestoreFailed",
            message=result.message or "the restore Job failed",
        )
        return None
    message = "OpenBao accepted the verified snapshot"
    updated = await _write(
        deps,
        restore,
        phase=rs.VERIFYING,
        condition=(rs.RESTORED, "True", "Applied", message),
    )
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreApplied", note=message)
    return updated


async def _blocked(deps: Deps, *, restore: JSONObject, message: str) -> None:
    current = cond.get_condition(_status(restore).get("conditions"), "Blocked")
    if (
        current is not None
        and current.get("status") == "True"
        and current.get("message") == message[:1024]
    ):
        return
    await _write(deps, restore, condition=("Blocked", "True", "LockHeld", message))
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreWaiting", note=message)


async def _verify(
    deps: Deps, *, restore: JSONObject, spec: rs.RestoreSpec, cluster: ClusterSpec
) -> float | None:
    now = deps.now()
    await deps.lock.renew(
        namespace=spec.namespace, cluster=spec.cluster, me=me(spec.name, RESTORE_OP), now=now
    )
    status = _status(restore)
    probe = await deps.probe(address=cluster.address, ca_pem=await openbao_ca(deps, cluster))
    verdict = rs.assess_applied(probe=probe, force=spec.force, raft_index=status.get("raftIndex"))
    restored = cond.get_condition(status.get("conditions"), rs.RESTORED)
    since = cond.parse_time((restored or {}).get("lastTransitionTime")) or now
    if verdict.state is rs.Applied.WAITING:
        if now - since > dt.timedelta(seconds=spec.verify_timeout_seconds):
            await fail(
                deps,
                restore=restore,
                reason="VerifyTimeout",
                message=(
                    f"OpenBao did not come back within {spec.verify_timeout_seconds}s: "
                    f"{verdict.message}"
                ),
            )
            return None
        return VERIFY_POLL_SECONDS
    started = cond.parse_time(status.get("startTime")) or now
    duration = round((now - started).total_seconds(), 1)
    kind = rs.UNSEAL_REQUIRED if verdict.state is rs.Applied.SEALED else rs.VERIFIED
    updated = await _write(
        deps,
        restore,
        phase=rs.SUCCEEDED_PHASE,
        condition=(kind, "True", verdict.state.value, verdict.message),
        completionTime=cond.rfc3339(now),
        durationSeconds=duration,
        message=verdict.message,
    )
    if verdict.state is rs.Applied.SEALED:
        await deps.events.emit(
            obj=restore, type="Warning", reason="UnsealRequired", note=verdict.message
        )
    await deps.events.emit(
        obj=restore,
        type="Normal",
        reason="RestoreSucceeded",
        note=f"{status.get('key')} restored in {duration}s",
    )
    metrics = deps.metrics.get(f"{spec.namespace}/{spec.cluster}")
    if metrics is not None:
        metrics.restore_succeeded(completed=now.timestamp(), duration=duration)
    await finish(deps, restore=updated)
    return None
