"""The phases of an OpenBaoRestore after Pending, one function each (driven by
:func:`controller.backup.act.restoring.drive`, which documents the guarantees).

* :func:`validate`: the ``<restore>-verify`` Job; its report's sha256/size/Raft index go to
  status; a failure ends the restore before anything else happened;
* :func:`safety`: the ``<restore>-pre-restore`` OpenBaoBackup, run by the backup manager like
  any backup; its failure fails the restore with OpenBao untouched;
* :func:`restore`: the operation lock as ``restore/<name>``, then the ``<restore>-restore``
  Job, the lock renewed while it runs; its failure is final;
* :func:`verify`: OpenBao's health until it is back (or sealed, after ``force``), within
  ``verifyTimeoutSeconds``.

Each returns the updated restore when its phase is done (the caller goes on to the next), or
the seconds until it wants to look again (``None``: a watch event will wake it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.launch import openbao_ca
from controller.backup.act.lock import me
from controller.backup.act.restoring_base import (
    RESTORE,
    RESTORE_OP,
    VERIFY,
    fail,
    finish,
    safety_record_name,
    status_of,
    write,
)
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide import restore as rs
from controller.backup.decide.jobresult import JobPhase, interpret
from controller.backup.decide.jobspec import RestoreRun, build_job
from controller.backup.decide.records import FAILED, SUCCEEDED, phase_of
from controller.backup.decide.spec import ClusterSpec
from controller.backup.decide.timing import VERIFY_POLL_SECONDS
from controller.backup.decide.vocabulary import LABEL_CLUSTER, LABEL_RESTORE, SNAPSHOT_FINALIZER
from controller.cache.store import JSONObject
from controller.errors import AlreadyExists
from controller.kube.resources import JOB, OPENBAO_BACKUP, OPENBAO_RESTORE


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


async def validate(
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
        # named with the phase change, so status never shows SafetySnapshot without it
        "safetySnapshot": safety_record_name(spec.name) if spec.safety_snapshot else None,
    }
    message = f"{report.key}: {report.size} bytes, sha256 {report.sha256}, archive verified"
    updated = await write(
        deps,
        restore,
        phase=nxt,
        condition=(rs.VALIDATED, "True", "Verified", message),
        **{k: v for k, v in fields.items() if v is not None},
    )
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreValidated", note=message)
    return updated


async def safety(
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
        try:
            deps.backups.remember(
                await deps.api.create(
                    path=OPENBAO_BACKUP.path(namespace=spec.namespace), body=body
                ),
                created=True,
            )
        except AlreadyExists:
            return None
        else:
            await deps.events.emit(
                obj=restore,
                type="Normal",
                reason="SafetySnapshotStarted",
                note=f"backing up the current state first: OpenBaoBackup {name}",
            )
        return None
    if phase_of(record) == FAILED:
        message = f"the safety snapshot {name} failed: {status_of(record).get('message') or ''}"
        await fail(deps, restore=restore, reason="SafetySnapshotFailed", message=message.strip())
        return None
    if phase_of(record) != SUCCEEDED:
        return None
    message = f"OpenBaoBackup {name}: {status_of(record).get('key')}"
    updated = await write(
        deps,
        restore,
        phase=rs.RESTORING,
        safetySnapshot=name,
        condition=(rs.SAFETY_SNAPSHOT_TAKEN, "True", "Succeeded", message),
    )
    await deps.events.emit(obj=restore, type="Normal", reason="SafetySnapshotTaken", note=message)
    return updated


async def restore(
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
        if status_of(restore).get("restoreJob") != job:
            await write(
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
    updated = await write(
        deps,
        restore,
        phase=rs.VERIFYING,
        condition=(rs.RESTORED, "True", "Applied", message),
    )
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreApplied", note=message)
    return updated


async def _blocked(deps: Deps, *, restore: JSONObject, message: str) -> None:
    current = cond.get_condition(status_of(restore).get("conditions"), "Blocked")
    if (
        current is not None
        and current.get("status") == "True"
        and current.get("message") == message[:1024]
    ):
        return
    await write(deps, restore, condition=("Blocked", "True", "LockHeld", message))
    await deps.events.emit(obj=restore, type="Normal", reason="RestoreWaiting", note=message)


async def verify(
    deps: Deps, *, restore: JSONObject, spec: rs.RestoreSpec, cluster: ClusterSpec
) -> float | None:
    now = deps.now()
    await deps.lock.renew(
        namespace=spec.namespace, cluster=spec.cluster, me=me(spec.name, RESTORE_OP), now=now
    )
    status = status_of(restore)
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
    updated = await write(
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
