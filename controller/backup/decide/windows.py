"""Cron windows in a time zone: every window before or after an instant, in exact order.

Guarantees:

* pure: no I/O besides the read-only IANA time-zone database behind :mod:`zoneinfo`, no clock
  reads; every instant in must be timezone-aware (``ValueError`` otherwise), and every
  instant out is in UTC;
* :func:`windows_before` and :func:`windows_after` yield each window exactly once, in exact
  instant order (newest first, respectively oldest first), also where daylight-saving time
  makes local wall-clock order and instant order disagree.

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

import functools
import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from controller.backup.decide.cron import CronSchedule

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


def require_aware(name: str, value: datetime | None) -> None:
    """Raise ``ValueError`` naming ``name`` if ``value`` is a naive datetime."""
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
    require_aware("at_or_before", at_or_before)
    return _walk(schedule, zone, at_or_before.astimezone(UTC), backwards=True)


def windows_after(*, schedule: CronSchedule, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Windows ``> after``, oldest first, each exactly once (UTC)."""
    require_aware("after", after)
    return _walk(schedule, zone, after.astimezone(UTC), backwards=False)
