"""Which cron window (if any) is due now, which are missed, and when the next one comes.

Guarantees:

* pure: no I/O besides the read-only IANA time-zone database behind :mod:`zoneinfo`, no clock
  reads; every instant in and out is timezone-aware, and every instant out is in UTC;
* :func:`decide` depends only on the current spec (schedule, time zone, suspend, starting
  deadline), the last handled window, the creation time, the resume time and ``now``, so a
  schedule change takes effect at once and a restarted controller decides exactly as the
  one before it did;
* total for every integer ``startingDeadlineSeconds`` the CRD ever accepted: values above
  :data:`~controller.backup.decide.timing.MAX_STARTING_DEADLINE_SECONDS` are clamped to it;
* at most one window is ever due: the newest unhandled window ``<= now``. Older unhandled
  windows are *missed* (reported, never run): a backlog never becomes a burst of catch-ups;
* windows at or before ``created_at`` (first sight of a new cluster) and at or before
  ``resumed_at`` (the moment the controller saw ``suspend`` go false) are *skipped*: neither
  run nor reported. Un-suspending therefore never fires a backup for a window that passed
  while suspended;
* while suspended nothing is due and nothing is missed; the decision still advances the
  handled mark (``handled_through``) so windows that pass while suspended stay skipped.

The schedule language is :mod:`controller.backup.decide.cron`; the windows, and how
daylight-saving time shapes them, are :mod:`controller.backup.decide.windows`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.backup.decide.cron import ScheduleError, parse_schedule, parse_time_zone
from controller.backup.decide.timing import MAX_STARTING_DEADLINE_SECONDS
from controller.backup.decide.windows import require_aware, windows_after, windows_before

MISSED_LIMIT = 1000
"""At most this many missed windows are enumerated per decision (``missed_truncated``)."""


class ScheduleAction(enum.Enum):
    """What the reconciler does about the schedule now."""

    UNSCHEDULED = "Unscheduled"  # no schedule: manual backups only
    INVALID = "Invalid"  # schedule or zone unusable (admission should have refused it)
    SUSPENDED = "Suspended"  # nothing is due; store handled_through if set
    IDLE = "Idle"  # nothing is due; requeue at next_window
    RUN = "Run"  # create the record for `due`; then store handled_through
    MISSED = "Missed"  # report `missed`; store handled_through; requeue at next_window


@dataclass(frozen=True)
class ScheduleDecision:
    """The outcome of :func:`decide`.

    ``due``: the window to back up now (RUN only). ``deadline``: after this instant ``due``
    is no longer runnable (RUN with a starting deadline only): a blocked run should be
    retried before it, and is reported missed after it.
    ``missed``: unhandled windows that will never run, oldest first, at most
    :data:`MISSED_LIMIT` (``missed_truncated`` says more were cut off).
    ``handled_through``: the caller stores this as the last handled window once it has acted
    (for RUN: after the record for ``due`` exists); ``None`` leaves the stored value as is.
    ``next_window``: the first window after ``now`` (``None`` when suspended, unscheduled,
    invalid or never again), for the timed requeue.
    """

    action: ScheduleAction
    message: str = ""
    due: datetime | None = None
    deadline: datetime | None = None
    missed: tuple[datetime, ...] = ()
    missed_truncated: bool = False
    handled_through: datetime | None = None
    next_window: datetime | None = None

    @property
    def missed_count(self) -> int:
        """Number of missed windows (a lower bound when ``missed_truncated``)."""
        return len(self.missed)


def decide(
    *,
    schedule: str | None,
    time_zone: str,
    suspend: bool,
    starting_deadline_seconds: int | None,
    now: datetime,
    last_handled_window: datetime | None,
    created_at: datetime,
    resumed_at: datetime | None = None,
) -> ScheduleDecision:
    """Decide what the schedule asks for at ``now``.

    ``starting_deadline_seconds``: how late (``now - window``, inclusive) the newest window
    may still start; ``None`` means no limit (the newest unhandled window always runs, once).
    ``last_handled_window``: the stored ``handled_through`` of earlier decisions.
    ``created_at``: the cluster's creationTimestamp; ``resumed_at``: when the controller
    observed ``suspend`` turn false (e.g. the Suspended condition's lastTransitionTime), or
    ``None`` if never suspended.
    """
    for name, value in (
        ("now", now),
        ("last_handled_window", last_handled_window),
        ("created_at", created_at),
        ("resumed_at", resumed_at),
    ):
        require_aware(name, value)
    if schedule is None or not schedule.strip():
        return ScheduleDecision(ScheduleAction.UNSCHEDULED, "no schedule: manual backups only")
    try:
        cron = parse_schedule(schedule)
        zone = parse_time_zone(time_zone)
    except ScheduleError as err:
        return ScheduleDecision(ScheduleAction.INVALID, str(err))
    if starting_deadline_seconds is not None and starting_deadline_seconds < 0:
        return ScheduleDecision(ScheduleAction.INVALID, "startingDeadlineSeconds is negative")
    if starting_deadline_seconds is not None:
        # A deadline beyond a year cannot change which window runs (older ones are missed
        # anyway past MISSED_LIMIT) but overflows datetime arithmetic: clamp it.
        starting_deadline_seconds = min(starting_deadline_seconds, MAX_STARTING_DEADLINE_SECONDS)
    now = now.astimezone(UTC)

    newest_first = windows_before(schedule=cron, zone=zone, at_or_before=now)
    if suspend:
        latest = next(newest_first, None)
        advance = latest
        if latest is None or (last_handled_window is not None and latest <= last_handled_window):
            advance = None
        return ScheduleDecision(
            ScheduleAction.SUSPENDED, "suspended: windows are skipped", handled_through=advance
        )

    floor = max(x for x in (created_at, last_handled_window, resumed_at) if x is not None)
    unhandled: list[datetime] = []  # newest first, at most MISSED_LIMIT + 1
    truncated = False
    for window in newest_first:
        if window <= floor:
            break
        if len(unhandled) == MISSED_LIMIT + 1:
            truncated = True
            break
        unhandled.append(window)
    next_window = next(windows_after(schedule=cron, zone=zone, after=now), None)

    if not unhandled:
        return ScheduleDecision(ScheduleAction.IDLE, "nothing due", next_window=next_window)
    due = unhandled[0]
    older = tuple(reversed(unhandled[1:]))
    if starting_deadline_seconds is None or (now - due) <= timedelta(
        seconds=starting_deadline_seconds
    ):
        deadline = (
            None
            if starting_deadline_seconds is None
            else due + timedelta(seconds=starting_deadline_seconds)
        )
        return ScheduleDecision(
            ScheduleAction.RUN,
            f"window {due:%Y-%m-%dT%H:%MZ} is due",
            due=due,
            deadline=deadline,
            missed=older,
            missed_truncated=truncated,
            handled_through=due,
            next_window=next_window,
        )
    if len(unhandled) > MISSED_LIMIT:
        unhandled, truncated = unhandled[:MISSED_LIMIT], True
    missed = tuple(reversed(unhandled))
    return ScheduleDecision(
        ScheduleAction.MISSED,
        f"window {due:%Y-%m-%dT%H:%MZ} is past its starting deadline "
        f"({starting_deadline_seconds}s)",
        missed=missed,
        missed_truncated=truncated,
        handled_through=due,
        next_window=next_window,
    )
