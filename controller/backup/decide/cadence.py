"""How often a schedule fires: the longest gap between two consecutive windows.

Why it exists: "no successful backup for too long" depends on the schedule. A fixed threshold
(26 h) pages for weekly schedules, manual-only clusters and suspended clusters, and is far too
lax for hourly ones. The controller exports the gap as
``openbao_backup_schedule_interval_seconds`` (0: no schedule), so the alert can compare a
cluster's backup age with its own cadence.

Guarantees:

* :func:`longest_gap` is pure and deterministic for a given ``start``: the longest gap among
  the first :data:`SAMPLE_WINDOWS` windows after ``start`` that fall within
  :data:`HORIZON` of it (DST-aware, through :func:`.windows.windows_after`); a schedule that
  fires once a year or less often reports the horizon;
* an absent or invalid schedule or time zone gives 0.0 (the config-valid alert covers those);
* :func:`cached_gap` caches per (schedule, time zone, day): the walk costs milliseconds once
  per distinct schedule and day, not per reconcile.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools

from controller.backup.decide.cron import ScheduleError, parse_schedule, parse_time_zone
from controller.backup.decide.windows import windows_after

#: Windows sampled: enough to see a weekday-only or monthly pattern's longest gap (Friday to
#: Monday, a 31-day month), few enough that a per-minute schedule costs under a millisecond.
SAMPLE_WINDOWS = 400
#: The longest gap reported: a schedule rarer than yearly is treated as yearly.
HORIZON = dt.timedelta(days=366)


def longest_gap(*, schedule: str | None, time_zone: str, start: dt.datetime) -> float:
    """Seconds of the longest gap between consecutive windows after ``start`` (0: none)."""
    if not schedule:
        return 0.0
    try:
        cron = parse_schedule(schedule)
        zone = parse_time_zone(time_zone)
    except ScheduleError:
        return 0.0
    end = start + HORIZON
    previous: dt.datetime | None = None
    longest = 0.0
    for window in itertools.islice(
        windows_after(schedule=cron, zone=zone, after=start), SAMPLE_WINDOWS
    ):
        if window > end:
            break
        if previous is not None:
            longest = max(longest, (window - previous).total_seconds())
        previous = window
    if longest == 0.0:  # at most one window within the horizon
        return HORIZON.total_seconds()
    return longest


@functools.lru_cache(maxsize=4096)
def cached_gap(schedule: str | None, time_zone: str, day: dt.date) -> float:
    """:func:`longest_gap` from the start of ``day`` (UTC), computed once per day and pair."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return longest_gap(schedule=schedule, time_zone=time_zone, start=start)
