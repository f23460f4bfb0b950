"""What every phase of an OpenBaoRestore shares: status writes, failing, letting go.

Guarantees:

* :func:`write` is the one way a restore's status changes (a merge patch through the status
  writer, remembered for the next reconcile), optionally setting one condition;
* :func:`fail` ends a restore as Failed with a reason, a message, a ``RestoreFailed`` Warning
  event and the failure counted; nothing ever moves a Failed restore again;
* :func:`finish` releases the operation lock held as ``restore/<name>`` and the result
  finalizers of the restore's Jobs; it is idempotent and called for every terminal restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.act.lock import me
from controller.backup.act.running import release_finalizers
from controller.backup.decide import conditions as cond
from controller.backup.decide import names
from controller.backup.decide import restore as rs
from controller.backup.decide.records import FAILED
from controller.cache.store import JSONObject

RESTORE_OP = "restore"
VERIFY = names.JobPurpose.VERIFY
RESTORE = names.JobPurpose.RESTORE


def status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def safety_record_name(restore: str) -> str:
    return names.fit_label(f"{restore}-pre-restore")


async def write(
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
            status_of(obj).get("conditions"),
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
    started = cond.parse_time(status_of(restore).get("startTime")) or now
    updated = await write(
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
