"""Every timing constant of the backup manager, each with its trade-off in one sentence.

Guarantees: nothing else in :mod:`controller.backup` hard-codes a duration; the values below
are defaults that settings may override where a flag exists (``--operation-lock-seconds``).
"""

from __future__ import annotations

LOCK_DURATION_SECONDS = 60
"""Operation-lock Lease duration: shorter frees a crashed foreign holder's lock sooner, longer
needs fewer renewal writes per running backup."""

LOCK_RENEW_FRACTION = 3
"""Renew when a third of the duration has passed: two renewals may fail before the lease
lapses, at the cost of three writes per duration per running backup."""

LOCK_TAKEOVER_MARGIN_SECONDS = 1.0
"""A blocked launch looks again this long after the holder's lease expires by our clock:
small enough to take over promptly, large enough not to wake just before expiry."""

MIN_REQUEUE_SECONDS = 0.5
"""No timed requeue is shorter: it bounds the reconcile rate of one key when a window or an
expiry is (nearly) now, at the cost of up to half a second of latency."""

RETRY_SURFACE_AFTER = 3
"""A step that failed this many times in a row for one cluster raises a Warning event and the
``Stalled`` condition: fewer would report blips that fix themselves, more would hide a stall."""

DELETE_RETRY_SECONDS = 30.0
"""A failed snapshot-delete Job is retried after this: frequent enough to clean up soon, rare
enough not to flood a broken bucket with Jobs."""

MAX_STARTING_DEADLINE_SECONDS = 31_536_000
"""One year: the largest ``startingDeadlineSeconds`` honoured (admission refuses more); a
larger deadline cannot change which window runs but overflows date arithmetic."""

PREFLIGHT_RETRY_SECONDS = 15.0
"""A backup blocked by an unhealthy OpenBao probes again after this: soon enough to start
within seconds of recovery, rare enough to cost nothing while OpenBao is down."""

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
"""A failed step is retried after 1, 2, 4 ... seconds, capped at five minutes: quick recovery
from a blip, and a persistent failure costs one attempt per five minutes (it is surfaced by
then, see RETRY_SURFACE_AFTER)."""


def retry_delay(streak: int) -> float:
    """Seconds before retrying a step that failed ``streak`` (>= 1) times in a row."""
    return float(min(RETRY_BASE_SECONDS * 2.0 ** max(streak - 1, 0), RETRY_MAX_SECONDS))


VERIFY_POLL_SECONDS = 2.0
"""After a restore Job, OpenBao's health is read this often until it is back: quick enough to
report a restore within seconds, cheap (two unauthenticated GETs)."""

CAP_RETRY_SECONDS = 30.0
"""How soon a launch waiting for an executor slot looks again on its own, per ten launches
ahead of it. Only the fallback: the reconcile that frees a slot wakes the launches that may
take it (``LaunchSlots.wake``), so a Job starts within a reconcile of the slot freeing; a
shorter timer would only recover sooner from a lost wake-up (a woken cluster whose reconcile
failed), at the cost of idle reconciles of every waiting cluster in a long queue."""
CAP_RETRY_MAX_SECONDS = 120.0
"""The longest a waiting launch goes without looking again (far back in a long queue): the
worst delay after a lost wake-up, one idle reconcile per two minutes per waiting cluster."""


def cap_retry_delay(position: int) -> float:
    """Seconds until a launch at ``position`` (1-based) in the slot queue looks again."""
    return min(CAP_RETRY_MAX_SECONDS, CAP_RETRY_SECONDS * (1 + (position - 1) // 10))


SLOT_WAIT_STALE_SECONDS = 180.0
"""A launch waiting for a slot that nobody refreshed for this long leaves the queue: longer than
:data:`CAP_RETRY_MAX_SECONDS` (a waiting launch refreshes its place at least that often), short
enough that a cluster that stopped waiting frees its place in the order soon."""

RENEW_RETRY_SECONDS = 5.0
"""A failed lock renewal is tried again this soon: at a 60 s lease renewed every 20 s, several
more attempts fit before it lapses, few enough not to hammer a struggling API server."""
