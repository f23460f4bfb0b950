"""OpenBaoBackup records as the backup manager sees them: pure views and new-record bodies.

Guarantees:

* :func:`new_record` builds the body of a record the controller creates (scheduled window or
  annotation trigger) with a deterministic name, so creating it twice answers AlreadyExists;
  it carries :data:`SNAPSHOT_FINALIZER` from birth, so it can never vanish with a snapshot
  still in the bucket;
* :func:`next_pending` picks the one record to launch next: the oldest Pending one (by
  creation time, then name), so triggers and windows are served first-come first-served and
  none is starved;
* :func:`phase_of` treats a record without status as Pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from controller.backup.decide import retention, trigger
from controller.backup.decide.conditions import parse_time, rfc3339
from controller.backup.decide.vocabulary import (
    FAILED,
    LABEL_CLUSTER,
    PENDING,
    RUNNING,
    SNAPSHOT_FINALIZER,
    SUCCEEDED,
    TERMINAL,
    TRIGGER_VALUE_ANNOTATION,
    WINDOW_ANNOTATION,
)
from controller.kube.resources import OPENBAO_BACKUP

__all__ = [
    "FAILED",
    "PENDING",
    "RUNNING",
    "SNAPSHOT_FINALIZER",
    "SUCCEEDED",
    "TERMINAL",
    "created_at",
    "has_finalizer",
    "is_deleting",
    "name_of",
    "new_record",
    "next_pending",
    "phase_of",
    "queued_trigger",
    "running",
    "scheduled_time",
    "to_retention",
]


def phase_of(record: Mapping[str, Any]) -> str:
    return str((record.get("status") or {}).get("phase") or PENDING)


def name_of(record: Mapping[str, Any]) -> str:
    return str(record["metadata"]["name"])


def is_deleting(record: Mapping[str, Any]) -> bool:
    return bool(record["metadata"].get("deletionTimestamp"))


def has_finalizer(obj: Mapping[str, Any], finalizer: str) -> bool:
    return finalizer in (obj["metadata"].get("finalizers") or ())


def created_at(obj: Mapping[str, Any]) -> datetime:
    """``metadata.creationTimestamp`` of any API object (records, clusters)."""
    when = parse_time(obj["metadata"].get("creationTimestamp"))
    assert when is not None, "API objects always have a creationTimestamp"
    return when


def scheduled_time(record: Mapping[str, Any]) -> datetime | None:
    status_time = parse_time((record.get("status") or {}).get("scheduledTime"))
    return status_time or parse_time(
        (record["metadata"].get("annotations") or {}).get(WINDOW_ANNOTATION)
    )


def next_pending(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    pending = [r for r in records if phase_of(r) == PENDING and not is_deleting(r)]
    pending.sort(key=lambda r: (created_at(r), name_of(r)))
    return pending[0] if pending else None


def queued_trigger(records: Iterable[Mapping[str, Any]]) -> trigger.Queued | None:
    """The newest trigger-annotation record that has not started (Pending), if any."""
    queued = [
        r
        for r in records
        if phase_of(r) == PENDING
        and not is_deleting(r)
        and TRIGGER_VALUE_ANNOTATION in (r["metadata"].get("annotations") or {})
    ]
    if not queued:
        return None
    newest = max(queued, key=lambda r: (created_at(r), name_of(r)))
    status = newest.get("status") or {}
    return trigger.Queued(
        name=name_of(newest),
        coalesced=tuple(str(v) for v in status.get("coalescedTriggers") or ()),
        trigger_value=str(newest["metadata"]["annotations"][TRIGGER_VALUE_ANNOTATION]),
    )


def running(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if phase_of(r) == RUNNING]


def to_retention(record: Mapping[str, Any]) -> retention.BackupRecord:
    status = record.get("status") or {}
    return retention.BackupRecord(
        name=name_of(record),
        phase=phase_of(record),
        created=created_at(record),
        completion_time=parse_time(status.get("completionTime")),
        key=status.get("key"),
        retain=(record.get("spec") or {}).get("deletionPolicy") == "Retain",
        deleting=is_deleting(record),
    )


def new_record(
    *,
    namespace: str,
    cluster: str,
    name: str,
    trigger: str,
    window: datetime | None = None,
    trigger_value: str | None = None,
) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if window is not None:
        annotations[WINDOW_ANNOTATION] = rfc3339(window)
    if trigger_value is not None:
        annotations[TRIGGER_VALUE_ANNOTATION] = trigger_value[:1024]
    return {
        "apiVersion": OPENBAO_BACKUP.api_version,
        "kind": OPENBAO_BACKUP.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_CLUSTER: cluster},
            "annotations": annotations,
            "finalizers": [SNAPSHOT_FINALIZER],
        },
        "spec": {"cluster": cluster, "trigger": trigger, "deletionPolicy": "Delete"},
    }
