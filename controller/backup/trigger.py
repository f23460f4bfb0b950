"""The manual trigger annotation ``backup.openbao.org/trigger``, as a pure decision.

Guarantees:

* a trigger is *new* when the annotation has a non-empty value different from
  ``status.backup.lastHandledTrigger``; removing the annotation or emptying it is no trigger;
* a new trigger is never dropped: while another backup of the cluster runs (or the launch is
  otherwise not possible yet) the decision is ``PENDING`` and stays so, because nothing here
  changes until the caller records the value as handled; the annotation itself is the queue,
  so a controller restart loses nothing;
* the record for a value is ``<cluster>-manual-<hash of value>`` (:mod:`names`), so creating
  it is idempotent: AlreadyExists after a crash means "already done". The caller records
  ``lastHandledTrigger = value`` only after the record exists;
* several new values arriving while a backup runs coalesce: the annotation holds only the
  latest, and one backup for it satisfies them all.

Consequence of the hash naming: re-using a value whose record still exists (e.g. ``a``, then
``b``, then ``a`` again while the first ``a`` record is kept) is treated as already done. Use
a fresh value each time (``kubectl annotate ... backup.openbao.org/trigger="$(date +%s)"
--overwrite``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from controller.backup.names import manual_record_name

ANNOTATION = "backup.openbao.org/trigger"
MAX_VALUE_LENGTH = 1024
"""Longer values are refused (reported, never handled), so status stays small."""


class TriggerAction(enum.Enum):
    NONE = "None"  # no new trigger
    START = "Start"  # create record_name (AlreadyExists is fine), then record value as handled
    PENDING = "Pending"  # a new trigger waits for the running backup to finish
    INVALID = "Invalid"  # the value cannot be handled (too long); report it


@dataclass(frozen=True)
class TriggerDecision:
    action: TriggerAction
    value: str | None = None
    record_name: str | None = None
    message: str = ""


def decide(
    *,
    cluster: str,
    annotations: Mapping[str, str] | None,
    last_handled: str | None,
    backup_running: bool,
) -> TriggerDecision:
    """What the trigger annotation asks for.

    ``backup_running``: a backup of this cluster is in progress (its record is Pending or
    Running, or the operation lock is held by a backup that is not this trigger's own).
    """
    value = (annotations or {}).get(ANNOTATION)
    if value is None or value == "" or value == last_handled:
        return TriggerDecision(TriggerAction.NONE)
    if len(value) > MAX_VALUE_LENGTH:
        return TriggerDecision(
            TriggerAction.INVALID,
            value=None,
            message=f"trigger value longer than {MAX_VALUE_LENGTH} characters; use a short "
            "value such as a timestamp",
        )
    record = manual_record_name(cluster=cluster, trigger_value=value)
    if backup_running:
        return TriggerDecision(
            TriggerAction.PENDING,
            value=value,
            record_name=record,
            message="queued: waits for the running backup to finish",
        )
    return TriggerDecision(TriggerAction.START, value=value, record_name=record)
