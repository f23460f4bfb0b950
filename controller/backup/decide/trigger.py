"""The manual trigger annotation ``backup.openbao.org/trigger``, as a pure decision.

The semantics (docs/backup-manager.md, "Manual triggers"): **every value written to the
annotation is satisfied by a backup that starts after it was written, and at most one
trigger-annotation backup of a cluster waits at a time.** Precisely:

* a value is *new* when the annotation is non-empty and differs from
  ``status.backup.lastHandledTrigger``; removing or emptying the annotation is no trigger;
* a new value while no trigger-annotation record of the cluster is queued (Pending, not yet
  started) -> ``START``: the record ``<cluster>-manual-<hash of value>`` (:mod:`.names`) is
  created, idempotently (AlreadyExists after a crash means "already done");
* a new value while such a record is queued -> ``COALESCE``: the queued record, which has not
  started yet and so starts after this value was written, satisfies it; the value is listed
  on that record (``status.coalescedTriggers``, the newest
  :data:`~.vocabulary.COALESCED_MAX`; ``status.coalescedCount`` is exact) and a
  ``BackupCoalesced`` event says so. A storm of values while a backup runs therefore gives
  exactly one more backup, whatever the timing of the watch;
* values overwritten before the controller saw them were also written before the queued
  record starts, so the same backup satisfies them: nothing is ever silently dropped, but
  only values the controller observed can be listed;
* the caller records ``lastHandledTrigger = value`` only after the record exists or lists the
  value, so a crash in between repeats the (idempotent) step instead of losing the value.

Consequence of the hash naming: re-using a value whose record still exists (``a``, then ``b``,
then ``a`` again while the first ``a`` record is kept) is treated as already done. Use a fresh
value each time (``kubectl annotate ... backup.openbao.org/trigger="$(date +%s)" --overwrite``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from controller.backup.decide.names import manual_record_name
from controller.backup.decide.vocabulary import TRIGGER_ANNOTATION

MAX_VALUE_LENGTH = 1024
"""Longer values are refused (reported, never handled), so status stays small."""


class TriggerAction(enum.Enum):
    NONE = "None"  # no new value
    START = "Start"  # create record_name (AlreadyExists is fine), then record value as handled
    COALESCE = "Coalesce"  # list value on the queued record_name, then record value as handled
    INVALID = "Invalid"  # the value cannot be handled (too long); report it


@dataclass(frozen=True)
class Queued:
    """The cluster's trigger-annotation record that has not started yet."""

    name: str
    coalesced: tuple[str, ...] = ()
    trigger_value: str = ""


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
    queued: Queued | None,
) -> TriggerDecision:
    """What the trigger annotation asks for, given the queued trigger record (if any)."""
    value = (annotations or {}).get(TRIGGER_ANNOTATION)
    if value is None or value == "" or value == last_handled:
        return TriggerDecision(TriggerAction.NONE)
    if len(value) > MAX_VALUE_LENGTH:
        return TriggerDecision(
            TriggerAction.INVALID,
            value=None,
            message=f"trigger value longer than {MAX_VALUE_LENGTH} characters; use a short "
            "value such as a timestamp",
        )
    if queued is not None:
        if value == queued.trigger_value or value in queued.coalesced:
            # Listed already (a crash before lastHandledTrigger was written): only mark it.
            return TriggerDecision(
                TriggerAction.COALESCE, value=value, record_name=queued.name, message="listed"
            )
        return TriggerDecision(
            TriggerAction.COALESCE,
            value=value,
            record_name=queued.name,
            message=f"satisfied by {queued.name}, which has not started yet",
        )
    return TriggerDecision(
        TriggerAction.START,
        value=value,
        record_name=manual_record_name(cluster=cluster, trigger_value=value),
    )
