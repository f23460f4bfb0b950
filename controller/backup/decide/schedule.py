"""Cron windows in the cluster's time zone, and which one (if any) is due now.

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
  handled mark (``handled_through``) so windows that pass while suspended stay skipped;
* the accepted schedule language is exactly :data:`CRON_PATTERN` (the CRD admits the same
  pattern): five fields of digits, ``*``, ``,``, ``-``, ``/`` and month/day names, or one of
  ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. ``@every``, ``@reboot``,
  seconds and year fields, ``L``, ``W``, ``#``, ``?`` and ``H`` are rejected.

Daylight-saving time (the rule of ISC/Vixie cron, decided per schedule):

* *interval-like* schedules (hour field ``*`` or ``*/n``, including ``@hourly``) follow real
  time: a wall-clock time skipped by a spring-forward transition has no window, and a time
  repeated by a fall-back transition has two windows (one per occurrence), so an hourly
  backup stays hourly;
* *wall-clock* schedules (a fixed hour, e.g. ``30 2 * * *`` or ``@daily``) run once per
  matching wall-clock time: a skipped time runs at the first instant after the gap (03:00
  local when 02:30 does not exist), a repeated time runs at its first occurrence only.

Windows are identified by their UTC instant; two wall-clock times that map to the same
instant are one window.
"""

from __future__ import annotations

import enum
import functools
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from controller.backup.decide.timing import MAX_STARTING_DEADLINE_SECONDS

# --- the schedule language ---------------------------------------------------------------

DESCRIPTORS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# Value alternatives per field. No backslashes anywhere, so the same text works as a Python
# regex, an RE2 regex and a CEL string literal.
_MINUTE = "[0-5]?[0-9]"
_HOUR = "[01]?[0-9]|2[0-3]"
_DOM = "0?[1-9]|[12][0-9]|3[01]"
_MONTH = "0?[1-9]|1[0-2]|" + "|".join(_MONTHS)
_DOW = "[0-7]|" + "|".join(_DAYS)
_STEP = "[1-9][0-9]?"


def _field(values: str) -> str:
    item = f"([*]|({values})(-({values}))?)(/({_STEP}))?"
    return f"{item}(,{item})*"


CRON_PATTERN = (
    "(?i)^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + "[ ]+".join(_field(v) for v in (_MINUTE, _HOUR, _DOM, _MONTH, _DOW))
    + ")$"
)
"""The accepted schedule syntax; the OpenBaoCluster CRD validates with this exact text."""

TIME_ZONE_PATTERN = "^[A-Z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
"""IANA zone names (``UTC``, ``Europe/Berlin``, ``Etc/GMT+5``); the CRD uses this exact text.

It refuses ``localtime``, ``posixrules``, ``posix/...``, ``right/...`` and anything with a
dot, so a zone can never name a file outside the zone database."""

_CRON_RE = re.compile(CRON_PATTERN)
_TZ_RE = re.compile(TIME_ZONE_PATTERN)
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")

MISSED_LIMIT = 1000
"""At most this many missed windows are enumerated per decision (``missed_truncated``)."""

_SCAN_FROM = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
_SCAN_TO = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())


@functools.cache
def _max_shift(key: str) -> timedelta:
    """The largest UTC-offset change of zone ``key`` between 1970 and 2100, plus a minute.

    Windows are generated in local wall-clock order and re-sorted by instant; a window is only
    released once the walk is this far past it, which makes the order exact. Usually 1 h
    (DST), but e.g. Antarctica/Casey moved by 3 h as late as 2023 and Pacific/Apia by a day in
    2011. Computed once per zone (tens of milliseconds).
    """
    zone = ZoneInfo(key)
    largest = timedelta(hours=1)
    previous = None
    for stamp in range(_SCAN_FROM, _SCAN_TO, 86400):
        offset = datetime.fromtimestamp(stamp, zone).utcoffset()
        if previous is not None and offset is not None and offset != previous:
            largest = max(largest, abs(offset - previous))
        previous = offset
    return largest + timedelta(minutes=1)


class ScheduleError(ValueError):
    """The schedule or the time zone is not acceptable; ``str(err)`` is a user message."""


@dataclass(frozen=True)
class CronSchedule:
    """A validated schedule: five normalised fields and the DST rule that applies."""

    expression: str
    interval_like: bool


def _value(text: str, names: tuple[str, ...], offset: int) -> int:
    if text.isdigit():
        return int(text)
    return names.index(text) + offset


def _check_field(index: int, text: str) -> None:
    lo, hi = _FIELD_RANGES[index]
    names: tuple[str, ...] = ()
    offset = 0
    if index == 3:
        names, offset = _MONTHS, 1
    elif index == 4:
        names, offset = _DAYS, 0
    for item in text.split(","):
        rng, _, _step = item.partition("/")
        if rng == "*":
            continue
        first, _, last = rng.partition("-")
        a = _value(first, names, offset)
        b = _value(last, names, offset) if last else a
        if not (lo <= a <= hi and lo <= b <= hi):
            raise ScheduleError(f"{_FIELD_NAMES[index]} value out of range {lo}-{hi}: {item!r}")
        if a > b:
            hint = " (sun=0, mon=1 ... sat=6, 7=sun)" if index == 4 else ""
            raise ScheduleError(
                f"{_FIELD_NAMES[index]} range {rng!r} runs backwards: ranges go from low to "
                f"high{hint}"
            )


def parse_schedule(schedule: str) -> CronSchedule:
    """Validate ``schedule`` and return its normalised form; :class:`ScheduleError` if bad.

    Besides :data:`CRON_PATTERN` this rejects reversed ranges (``5-1``) and expressions that
    can never match (``0 0 31 2 *``).
    """
    text = schedule.strip().lower()
    if not _CRON_RE.fullmatch(text):
        raise ScheduleError(
            f"invalid schedule {schedule!r}: use 5 cron fields (minute hour day-of-month month "
            "day-of-week) or one of @yearly @annually @monthly @weekly @daily @midnight "
            "@hourly; @every, @reboot and 6/7-field forms are not supported"
        )
    expression = DESCRIPTORS.get(text) or " ".join(text.split())
    fields = expression.split(" ")
    for index, field_text in enumerate(fields):
        _check_field(index, field_text)
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError as err:
        raise ScheduleError(f"schedule {schedule!r} never matches a date") from err
    except (CroniterError, ValueError) as err:  # pragma: no cover - the pattern prevents it
        raise ScheduleError(f"invalid schedule {schedule!r}: {err}") from err
    return CronSchedule(expression=expression, interval_like=fields[1].startswith("*"))


def parse_time_zone(name: str) -> ZoneInfo:
    """The zone named ``name`` (IANA), or :class:`ScheduleError`."""
    if not _TZ_RE.fullmatch(name):
        raise ScheduleError(f"invalid time zone {name!r}: use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ScheduleError(f"unknown time zone {name!r}") from err


# --- windows -----------------------------------------------------------------------------


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _first_after_gap(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in ``(before, after]`` whose offset is the post-transition offset."""
    target = after.astimezone(zone).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _instants(naive: datetime, zone: ZoneInfo, interval_like: bool) -> tuple[datetime, ...]:
    """The UTC instants of one local wall-clock match, under the module's DST rule."""
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first < second:  # repeated wall-clock time (fall back)
        return (first, second) if interval_like else (first,)
    # skipped wall-clock time (spring forward): fold=0 uses the old offset -> later instant
    if interval_like:
        return ()
    return (_first_after_gap(second, first, zone),)


def _conversion_bounds(naive: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    a = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return min(a, b), max(a, b)


def _walk(
    schedule: CronSchedule, zone: ZoneInfo, limit: datetime, *, backwards: bool
) -> Iterator[datetime]:
    """Windows beyond ``limit`` (``<=`` backwards, ``>`` forwards), nearest first, once each.

    Wall-clock matches come from croniter in local order; their instants are buffered in a
    heap and released only once the walk is the zone's largest offset change
    (:func:`_max_shift`) past them, which makes the output exactly ordered even where DST
    makes local order and instant order disagree.
    """
    buffer = _max_shift(zone.key)
    local = limit.astimezone(zone).replace(tzinfo=None, fold=0)
    walk = croniter(schedule.expression, local + buffer if backwards else local - buffer)
    sign = -1.0 if backwards else 1.0
    heap: list[tuple[float, datetime]] = []
    pending: set[datetime] = set()
    while True:
        try:
            naive = walk.get_prev(datetime) if backwards else walk.get_next(datetime)
        except CroniterBadDateError:
            break
        for instant in _instants(naive, zone, schedule.interval_like):
            inside = instant <= limit if backwards else instant > limit
            if inside and instant not in pending:
                pending.add(instant)
                heapq.heappush(heap, (sign * instant.timestamp(), instant))
        low, high = _conversion_bounds(naive, zone)
        while heap and (heap[0][1] > low + buffer if backwards else heap[0][1] < high - buffer):
            instant = heapq.heappop(heap)[1]
            pending.discard(instant)
            yield instant
    while heap:
        yield heapq.heappop(heap)[1]


def windows_before(
    *, schedule: CronSchedule, zone: ZoneInfo, at_or_before: datetime
) -> Iterator[datetime]:
    """Windows ``<= at_or_before``, newest first, each exactly once (UTC)."""
    _require_aware("at_or_before", at_or_before)
    return _walk(schedule, zone, at_or_before.astimezone(UTC), backwards=True)


def windows_after(*, schedule: CronSchedule, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Windows ``> after``, oldest first, each exactly once (UTC)."""
    _require_aware("after", after)
    return _walk(schedule, zone, after.astimezone(UTC), backwards=False)


# --- the decision ------------------------------------------------------------------------


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
        _require_aware(name, value)
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
