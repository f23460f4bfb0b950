"""Status conditions (``metav1.Condition``), computed as pure values.

Guarantees:

* :func:`set_condition` returns a NEW list; the input (often a frozen cached object) is never
  mutated;
* ``lastTransitionTime`` changes only when ``status`` changes (as the API conventions say),
  while reason, message and ``observedGeneration`` are always refreshed;
* conditions keep a stable order: existing ones in place, new ones appended;
* messages are truncated to 1 KiB (callers never pass secrets);
* the cluster's summary condition ``Ready`` (what ``kubectl get openbaoclusters`` shows in its
  READY and REASON columns) is a pure function of the other conditions
  (:func:`with_ready`): every writer of the cluster's conditions applies it in the same
  write, so it never lags them and never costs a write of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types of OpenBaoCluster.status.backup
BACKUP_READY = "BackupReady"  # the last finished backup succeeded
BACKUP_FAILING = "BackupFailing"  # the last finished backup failed
SUSPENDED = "Suspended"
PREFLIGHT_BLOCKED = "PreflightBlocked"  # a due backup waits: unhealthy cluster or lock held
CONFIG_VALID = "ConfigValid"
RESTORE_VERIFIED = "RestoreVerified"  # the newest restore drill passed (False: it failed)
STALLED = "Stalled"  # a reconcile step keeps failing (the message says which and why)
READY = "Ready"  # summary: backups run as configured (False: the reason says why not)
# Condition types of OpenBaoBackup.status
COMPLETE = "Complete"
FAILED = "Failed"
BLOCKED = "Blocked"
SNAPSHOT_DELETED = "SnapshotDeleted"


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions or ():
        current = dict(cond)
        if current.get("type") == type:
            found = True
            if current.get("status") != status:
                current["lastTransitionTime"] = rfc3339(now)
            current.update(status=status, reason=reason, message=message[:1024])
            if observed_generation is not None:
                current["observedGeneration"] = observed_generation
        out.append(current)
    if not found:
        new: dict[str, Any] = {
            "type": type,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": rfc3339(now),
        }
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        out.append(new)
    return out


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type: str
) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type: str) -> bool:
    cond = get_condition(conditions, type)
    return cond is not None and cond.get("status") == "True"


def _ready_verdict(
    conditions: Iterable[Mapping[str, Any]] | None,
) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of ``Ready``: the first problem in the order an operator
    must act on them (the spec, a stalled step, a blocked preflight, failing backups), else
    the last outcome."""
    conds = list(conditions or ())

    def when(type: str, status: str) -> Mapping[str, Any] | None:
        found = get_condition(conds, type)
        return found if found is not None and found.get("status") == status else None

    if (c := when(CONFIG_VALID, "False")) is not None:
        return "False", "InvalidSpec", str(c.get("message") or "")
    if (c := when(STALLED, "True")) is not None:
        return "False", "Stalled", str(c.get("message") or "")
    if (c := when(PREFLIGHT_BLOCKED, "True")) is not None:
        return "False", str(c.get("reason") or "PreflightBlocked"), str(c.get("message") or "")
    if (c := when(BACKUP_FAILING, "True")) is not None:
        return "False", "BackupFailing", str(c.get("message") or "")
    if (c := when(SUSPENDED, "True")) is not None:
        ready = when(BACKUP_READY, "True")
        return ("True" if ready else "False"), "Suspended", str(c.get("message") or "")
    if (c := when(BACKUP_READY, "True")) is not None:
        return "True", "BackupSucceeded", str(c.get("message") or "")
    return "False", "NoBackupYet", "no backup of this cluster has finished yet"


def with_ready(
    conditions: Iterable[Mapping[str, Any]] | None,
    *,
    observed_generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """``conditions`` with the summary ``Ready`` condition set from the others."""
    status, reason, message = _ready_verdict(conditions)
    return set_condition(
        conditions,
        type=READY,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        now=now,
    )
