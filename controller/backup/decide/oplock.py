"""The per-cluster operation lock (a coordination.k8s.io/v1 Lease), as pure decisions.

The protocol is documented for other tools in ``docs/operation-lock.md``.

Guarantees:

* :func:`decide` is pure: it sees the Lease as last observed, the local time at which this
  process first saw that version of it, the holder we want to be, ``now`` and whether the
  previous holder's Job is known to be terminal or gone; it returns one :class:`LockAction`;
* expiry is judged from the *local* observation time (``observed_at + leaseDurationSeconds``),
  never from the remote ``renewTime`` alone, so clock skew between writers cannot make a live
  lease look expired. A process that has just started treats its first sight as ``now``;
* an empty (released) lease may be taken at once; an expired one held by a Job-backed
  operation (``backup/...``, ``restore/...``) only once that Job is confirmed terminal or
  gone (``WAIT_CONFIRM`` otherwise): expiry alone does not prove the old worker stopped;
* the holder identity is the operation and the run (``backup/<OpenBaoBackup name>``), not the
  process, so a restarted or failed-over controller recognises its own run's lease and keeps
  renewing it;
* renewal happens at most every ``duration / 3`` (``RENEW`` when due, ``HELD_BY_US`` before);
* the lock is not a fencing token: the work it guards must be safe to run twice.

Every write this module plans (:func:`acquire_spec`, :func:`renew_spec`,
:func:`release_spec`) is meant to be sent with the observed ``resourceVersion`` (a
compare-and-swap); a 409 answer means someone else won and is normal flow.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.backup.decide.timing import LOCK_DURATION_SECONDS, LOCK_RENEW_FRACTION
from controller.backup.decide.vocabulary import (
    LABEL_CLUSTER,
    LABEL_LOCK,
    LABEL_MANAGED_BY,
    LOCK_LABEL_VALUE,
    MANAGED_BY,
)
from controller.kube.resources import format_microtime

DEFAULT_DURATION_SECONDS = LOCK_DURATION_SECONDS


def lease_labels(*, cluster: str) -> dict[str, str]:
    """The labels of a cluster's operation-lock Lease (see docs/operation-lock.md)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_CLUSTER: cluster, LABEL_LOCK: LOCK_LABEL_VALUE}


JOB_BACKED_OPERATIONS = frozenset({"backup", "restore", "delete"})
"""Operations whose run is a Job we can look up (``<run>-<op>``, see :mod:`names`)."""

_OP_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")


@dataclass(frozen=True)
class Holder:
    """A parsed holder identity ``<op>/<run>``; ``op`` is empty for a foreign format."""

    op: str
    run: str

    def __str__(self) -> str:
        return f"{self.op}/{self.run}" if self.op else self.run


def holder_identity(op: str, run: str) -> str:
    """``<op>/<run>``, e.g. ``backup/prod-202601020300``; ``ValueError`` if either is bad."""
    if not _OP_RE.match(op):
        raise ValueError(f"operation {op!r} must match {_OP_RE.pattern}")
    if not _RUN_RE.match(run):
        raise ValueError(f"run {run!r} must match {_RUN_RE.pattern}")
    return f"{op}/{run}"


def parse_holder(identity: str | None) -> Holder | None:
    """The holder in ``identity``; ``None`` when empty (the lease is free).

    An identity not in ``<op>/<run>`` form (another tool's) parses as ``Holder("", raw)``.
    """
    if identity is None or identity == "":
        return None
    op, sep, run = identity.partition("/")
    if sep and _OP_RE.match(op) and _RUN_RE.match(run):
        return Holder(op, run)
    return Holder("", identity)


@dataclass(frozen=True)
class ObservedLease:
    """The Lease as read from the API server, plus when we first saw this version of it.

    ``observed_at`` must be the local time at which this process first saw the current
    (holderIdentity, renewTime) pair, or ``now`` on first sight after a start.
    """

    holder: str | None
    lease_duration_seconds: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    observed_at: datetime
    lease_transitions: int = 0


class LockAction(enum.Enum):
    ACQUIRE_CREATE = "AcquireCreate"  # no Lease: create it (201 won, 409 lost: re-read)
    ACQUIRE_TAKEOVER = "AcquireTakeover"  # CAS-update the empty/expired Lease to us
    RENEW = "Renew"  # ours and due: CAS-update renewTime
    HELD_BY_US = "HeldByUs"  # ours, not due yet: nothing to write until `until`
    BLOCKED = "Blocked"  # someone else holds it until `until` (local estimate)
    WAIT_CONFIRM = "WaitConfirm"  # expired, but the holder's Job is not known to be done


@dataclass(frozen=True)
class LockDecision:
    """``holder``: the current holder (us or the other one), ``None`` if free/absent.
    ``until``: BLOCKED - when the lease expires by our clock; HELD_BY_US - when renewal is
    due; otherwise ``None``."""

    action: LockAction
    holder: Holder | None = None
    until: datetime | None = None
    message: str = ""


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def duration_of(lease: ObservedLease) -> timedelta:
    """The lease duration, at least one second (a missing or bad value counts as 1 s)."""
    seconds = lease.lease_duration_seconds
    return timedelta(seconds=seconds if seconds is not None and seconds >= 1 else 1)


def decide(
    *,
    lease: ObservedLease | None,
    me: str,
    now: datetime,
    previous_holder_finished: bool,
) -> LockDecision:
    """What to do about the lock. ``me`` is our holder identity (:func:`holder_identity`).

    ``previous_holder_finished``: the current holder's Job is terminal or absent (only
    consulted for an expired lease held by a Job-backed operation; other operations have no
    Job to check and expiry alone releases them).
    """
    _aware("now", now)
    if not me:
        raise ValueError("me must be a holder identity")
    if lease is None:
        return LockDecision(LockAction.ACQUIRE_CREATE, message="no lease: create it")
    for name in ("acquire_time", "renew_time", "observed_at"):
        _aware(name, getattr(lease, name))
    holder = parse_holder(lease.holder)
    duration = duration_of(lease)
    if holder is None:
        return LockDecision(LockAction.ACQUIRE_TAKEOVER, message="lease is free")
    if lease.holder == me:
        last = lease.renew_time or lease.acquire_time or lease.observed_at
        due = last + duration / LOCK_RENEW_FRACTION
        if now >= due:
            return LockDecision(LockAction.RENEW, holder, message="renewal due")
        return LockDecision(LockAction.HELD_BY_US, holder, until=due, message="held by us")
    expires = lease.observed_at + duration
    if now < expires:
        return LockDecision(
            LockAction.BLOCKED, holder, until=expires, message=f"held by {lease.holder}"
        )
    if holder.op in JOB_BACKED_OPERATIONS and not previous_holder_finished:
        return LockDecision(
            LockAction.WAIT_CONFIRM,
            holder,
            message=f"lease of {lease.holder} expired; waiting until its Job is terminal or gone",
        )
    return LockDecision(
        LockAction.ACQUIRE_TAKEOVER, holder, message=f"lease of {lease.holder} expired"
    )


def may_release(*, lease: ObservedLease | None, me: str) -> bool:
    """Release only what we hold."""
    return lease is not None and lease.holder == me


# --- what to write -----------------------------------------------------------------------


def acquire_spec(
    *,
    me: str,
    now: datetime,
    previous: ObservedLease | None,
    duration_seconds: int = DEFAULT_DURATION_SECONDS,
) -> dict[str, Any]:
    """The Lease ``spec`` for ACQUIRE_CREATE (``previous=None``) or ACQUIRE_TAKEOVER."""
    transitions = 0
    if previous is not None:
        transitions = previous.lease_transitions + (1 if previous.holder else 0)
    stamp = format_microtime(now)
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": int(duration_seconds),
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def renew_spec(
    *, me: str, now: datetime, duration_seconds: int = DEFAULT_DURATION_SECONDS
) -> dict[str, Any]:
    """The fields a RENEW changes (merge into the observed spec; keep acquireTime)."""
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": int(duration_seconds),
        "renewTime": format_microtime(now),
    }


def release_spec(*, now: datetime) -> dict[str, Any]:
    """The fields a release writes (client-go convention: empty holder, duration 1)."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "renewTime": format_microtime(now),
    }
