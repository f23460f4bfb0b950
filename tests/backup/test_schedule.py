"""decide.cron, .windows and .schedule: the schedule language, DST, and the due/missed/skipped
rules."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.backup.decide.cron import (
    CRON_PATTERN,
    TIME_ZONE_PATTERN,
    ScheduleError,
    parse_schedule,
    parse_time_zone,
)
from controller.backup.decide.schedule import (
    MISSED_LIMIT,
    ScheduleAction,
    ScheduleDecision,
    decide,
)
from controller.backup.decide.windows import windows_after, windows_before


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def z(text: str) -> datetime:
    """``"2026-03-08T07:00Z"`` -> aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the language ------------------------------------------------------------------------

ACCEPTED = [
    ("* * * * *", "* * * * *", True),
    ("*/15 * * * *", "*/15 * * * *", True),
    ("0 0 * * 0", "0 0 * * 0", False),
    ("30 2 * * MON-FRI", "30 2 * * mon-fri", False),
    ("0 0 1 JAN *", "0 0 1 jan *", False),
    ("0 0 1 jan-mar,oct *", "0 0 1 jan-mar,oct *", False),
    ("5/15 * * * *", "5/15 * * * *", True),
    ("0 0-23/2 * * *", "0 0-23/2 * * *", False),
    ("0 */2 * * *", "0 */2 * * *", True),
    ("0,30 * * * *", "0,30 * * * *", True),
    ("0 9-17 * * 1-5", "0 9-17 * * 1-5", False),
    ("0 0 29 2 *", "0 0 29 2 *", False),
    ("0 0 * * 7", "0 0 * * 7", False),
    ("* * * * 0-7", "* * * * 0-7", True),
    ("59 23 31 12 6", "59 23 31 12 6", False),
    ("00 01 01 01 *", "00 01 01 01 *", False),
    ("0  3   *  * *", "0 3 * * *", False),
    ("  0 3 * * *  ", "0 3 * * *", False),
    ("0 0 */99 * *", "0 0 */99 * *", False),
    ("@hourly", "0 * * * *", True),
    ("@daily", "0 0 * * *", False),
    ("@DAILY", "0 0 * * *", False),
    ("@midnight", "0 0 * * *", False),
    ("@weekly", "0 0 * * 0", False),
    ("@monthly", "0 0 1 * *", False),
    ("@yearly", "0 0 1 1 *", False),
    ("@annually", "0 0 1 1 *", False),
]


@pytest.mark.parametrize(("text", "expression", "interval_like"), ACCEPTED)
def test_accepted_schedules(text: str, expression: str, interval_like: bool) -> None:
    cron = parse_schedule(text)
    assert cron.expression == expression
    assert cron.interval_like is interval_like
    assert re.fullmatch(CRON_PATTERN, text.strip()), "the CRD pattern must accept it too"


# (schedule, message fragment, does the CRD pattern already reject it?)
REJECTED = [
    ("", "5 cron fields", True),
    ("* * * *", "5 cron fields", True),
    ("* * * * * *", "5 cron fields", True),
    ("0 * * * * * 2026", "5 cron fields", True),
    ("@every 5m", "@every", True),
    ("@every", "5 cron fields", True),
    ("@reboot", "5 cron fields", True),
    ("@fortnightly", "5 cron fields", True),
    ("60 * * * *", "5 cron fields", True),
    ("* 24 * * *", "5 cron fields", True),
    ("* * 0 * *", "5 cron fields", True),
    ("* * 32 * *", "5 cron fields", True),
    ("* * * 0 *", "5 cron fields", True),
    ("* * * 13 *", "5 cron fields", True),
    ("* * * * 8", "5 cron fields", True),
    ("*/0 * * * *", "5 cron fields", True),
    ("*/100 * * * *", "5 cron fields", True),
    ("L * * * *", "5 cron fields", True),
    ("0 0 L * *", "5 cron fields", True),
    ("0 0 * * 1#2", "5 cron fields", True),
    ("0 0 * * 5L", "5 cron fields", True),
    ("0 0 15W * *", "5 cron fields", True),
    ("H * * * *", "5 cron fields", True),
    ("0 0 ? * *", "5 cron fields", True),
    ("0 0 * * mon-", "5 cron fields", True),
    ("0 0 * * monday", "5 cron fields", True),
    ("0 0 * jan-foo *", "5 cron fields", True),
    ("TZ=UTC 0 0 * * *", "5 cron fields", True),
    ("CRON_TZ=Europe/Berlin 0 0 * * *", "5 cron fields", True),
    ("0 0 * * *\n0 1 * * *", "5 cron fields", True),
    ("0\t0 * * *", "5 cron fields", True),
    ("5-1 * * * *", "runs backwards", False),
    ("0 0 * * mon-sun", "sun=0", False),
    ("0 0 * dec-jan *", "runs backwards", False),
    ("0 0 31 2 *", "never matches", False),
    ("0 0 30 2 *", "never matches", False),
    ("0 0 31 4,6,9,11 *", "never matches", False),
]


@pytest.mark.parametrize(("text", "fragment", "pattern_rejects"), REJECTED)
def test_rejected_schedules(text: str, fragment: str, pattern_rejects: bool) -> None:
    with pytest.raises(ScheduleError, match=re.escape(fragment)):
        parse_schedule(text)
    assert (re.fullmatch(CRON_PATTERN, text) is None) is pattern_rejects


ZONES_OK = ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "EST5EDT"]
ZONES_BAD = [
    ("", "invalid time zone"),
    ("utc", "invalid time zone"),
    ("localtime", "invalid time zone"),
    ("posixrules", "invalid time zone"),
    ("posix/Europe/Berlin", "invalid time zone"),
    ("right/UTC", "invalid time zone"),
    ("../etc/passwd", "invalid time zone"),
    ("Europe/../../etc/passwd", "invalid time zone"),
    ("/usr/share/zoneinfo/UTC", "invalid time zone"),
    ("Europe//Berlin", "invalid time zone"),
    ("Europe/Berlin ", "invalid time zone"),
    ("UTC\n", "invalid time zone"),
    ("Mars/Olympus_Mons", "unknown time zone"),
    ("Europe/Atlantis", "unknown time zone"),
]


@pytest.mark.parametrize("name", ZONES_OK)
def test_time_zones_accepted(name: str) -> None:
    assert parse_time_zone(name).key == name
    assert re.fullmatch(TIME_ZONE_PATTERN, name)


@pytest.mark.parametrize(("name", "fragment"), ZONES_BAD)
def test_time_zones_rejected(name: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=fragment):
        parse_time_zone(name)


# --- windows and DST ---------------------------------------------------------------------

# (zone, schedule, start (exclusive), the next windows in UTC)
WINDOWS = [
    # New York spring forward 2026-03-08 02:00 EST -> 03:00 EDT.
    (  # wall-clock: the skipped 02:30 runs at the first instant after the gap (03:00 EDT)
        "America/New_York",
        "30 2 * * *",
        "2026-03-06T12:00Z",
        ["2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z"],
    ),
    (  # interval-like: hourly stays hourly in real time, 02:00 does not exist
        "America/New_York",
        "0 * * * *",
        "2026-03-08T05:30Z",
        ["2026-03-08T06:00Z", "2026-03-08T07:00Z", "2026-03-08T08:00Z"],
    ),
    (
        "America/New_York",
        "30 * * * *",
        "2026-03-08T05:45Z",
        ["2026-03-08T06:30Z", "2026-03-08T07:30Z", "2026-03-08T08:30Z"],
    ),
    (  # every 15 minutes through the gap: no window inside it, none doubled
        "America/New_York",
        "*/15 * * * *",
        "2026-03-08T06:30Z",
        ["2026-03-08T06:45Z", "2026-03-08T07:00Z", "2026-03-08T07:15Z"],
    ),
    (  # several wall-clock times inside the gap collapse into one window
        "America/New_York",
        "0,20,40 2 * * *",
        "2026-03-07T12:00Z",
        ["2026-03-08T07:00Z", "2026-03-09T06:00Z", "2026-03-09T06:20Z"],
    ),
    (  # a skipped time and the first time after the gap are the same window
        "America/New_York",
        "30 2,3 * * *",
        "2026-03-08T00:00Z",
        ["2026-03-08T07:00Z", "2026-03-08T07:30Z", "2026-03-09T06:30Z"],
    ),
    # New York fall back 2026-11-01 02:00 EDT -> 01:00 EST.
    (  # wall-clock: the repeated 01:30 runs once, at its first occurrence
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00Z",
        ["2026-11-01T05:30Z", "2026-11-02T06:30Z"],
    ),
    (  # interval-like: 01:00 happens twice, so two windows
        "America/New_York",
        "0 * * * *",
        "2026-11-01T04:30Z",
        ["2026-11-01T05:00Z", "2026-11-01T06:00Z", "2026-11-01T07:00Z"],
    ),
    (
        "America/New_York",
        "@hourly",
        "2026-11-01T03:30Z",
        ["2026-11-01T04:00Z", "2026-11-01T05:00Z", "2026-11-01T06:00Z", "2026-11-01T07:00Z"],
    ),
    (  # daily at midnight is unaffected
        "America/New_York",
        "@daily",
        "2026-10-31T12:00Z",
        ["2026-11-01T04:00Z", "2026-11-02T05:00Z"],
    ),
    # Berlin: spring forward 2026-03-29 02:00 CET -> 03:00 CEST; back 2026-10-25 03:00 -> 02:00.
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-27T12:00Z",
        ["2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"],
    ),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-23T12:00Z",
        ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"],
    ),
    (
        "Europe/Berlin",
        "15 * * * *",
        "2026-10-24T23:30Z",
        ["2026-10-25T00:15Z", "2026-10-25T01:15Z", "2026-10-25T02:15Z"],
    ),
    # Lord Howe Island shifts by 30 minutes: 2026-04-05 02:00 +11 -> 01:30 +10:30.
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-03T12:00Z",
        ["2026-04-03T14:45Z", "2026-04-04T14:45Z", "2026-04-05T15:15Z"],
    ),
    (
        "Australia/Lord_Howe",
        "45 * * * *",
        "2026-04-04T13:00Z",
        ["2026-04-04T13:45Z", "2026-04-04T14:45Z", "2026-04-04T15:15Z", "2026-04-04T16:15Z"],
    ),
    # Southern hemisphere, Sydney: spring forward 2026-10-04 02:00 +10 -> 03:00 +11.
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-10-02T12:00Z",
        ["2026-10-02T16:30Z", "2026-10-03T16:00Z", "2026-10-04T15:30Z"],
    ),
    # Antarctica/Casey moved back by 3 hours (+11 -> +08) on 2023-03-09 00:00 local.
    # Antarctica/Casey moved back by 3 hours (+11 -> +08) at 2023-03-08T16:00Z: local
    # 00:00-02:59 happens twice; naive order and instant order differ by up to 3 hours.
    (
        "Antarctica/Casey",
        "0 * * * *",
        "2023-03-08T14:30Z",
        [
            "2023-03-08T15:00Z",
            "2023-03-08T16:00Z",
            "2023-03-08T17:00Z",
            "2023-03-08T18:00Z",
            "2023-03-08T19:00Z",
        ],
    ),
    (
        "Antarctica/Casey",
        "30 1 * * *",
        "2023-03-07T12:00Z",
        ["2023-03-07T14:30Z", "2023-03-08T14:30Z", "2023-03-09T17:30Z"],
    ),
    # UTC and fixed offsets have no transitions.
    ("UTC", "0 0 29 2 *", "2026-01-01T00:00Z", ["2028-02-29T00:00Z", "2032-02-29T00:00Z"]),
    ("Etc/GMT-14", "0 0 1 1 *", "2026-06-01T00:00Z", ["2026-12-31T10:00Z"]),
]


@pytest.mark.parametrize(("zone", "schedule", "start", "expected"), WINDOWS)
def test_windows_across_transitions(
    zone: str, schedule: str, start: str, expected: list[str]
) -> None:
    cron = parse_schedule(schedule)
    tz = ZoneInfo(zone)
    got = list(
        itertools.islice(windows_after(schedule=cron, zone=tz, after=z(start)), len(expected))
    )
    assert got == [z(e) for e in expected]
    back = list(
        itertools.islice(windows_before(schedule=cron, zone=tz, at_or_before=got[-1]), len(got))
    )
    assert back == got[::-1]


SWEEP_ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/St_Johns",
    "Antarctica/Casey",
]
SWEEP_SCHEDULES = ["17 * * * *", "30 2 * * *", "0 1,2,3 * * *", "*/30 1-3 * * *", "0 0 * * 0"]
# Spans holding every 2026 transition of the zones above (and Casey's 3-hour one of 2023).
SWEEP_SPANS = [
    (utc(2026, 3, 1), utc(2026, 4, 12)),
    (utc(2026, 9, 26), utc(2026, 11, 8)),
    (utc(2023, 3, 5), utc(2023, 3, 12)),
]


@pytest.mark.parametrize("zone", SWEEP_ZONES)
@pytest.mark.parametrize("schedule", SWEEP_SCHEDULES)
def test_windows_forward_and_backward_agree_across_transitions(zone: str, schedule: str) -> None:
    """Strictly increasing, no duplicates, both directions identical, and every window is
    either a wall-clock match or the first instant after a DST gap."""
    from croniter import croniter

    cron = parse_schedule(schedule)
    tz = ZoneInfo(zone)
    for start, end in SWEEP_SPANS:
        forward = [
            w
            for w in itertools.takewhile(
                end.__ge__, windows_after(schedule=cron, zone=tz, after=start)
            )
        ]
        assert forward, "every span has windows"
        assert all(a < b for a, b in itertools.pairwise(forward))
        backward = list(
            itertools.takewhile(
                start.__lt__, windows_before(schedule=cron, zone=tz, at_or_before=end)
            )
        )
        assert backward == forward[::-1]
        for window in forward:
            local = window.astimezone(tz)
            if croniter.match(cron.expression, local.replace(tzinfo=None)):
                continue
            # not a wall-clock match: must be the end of a spring-forward gap
            before = (window - timedelta(seconds=1)).astimezone(tz)
            assert local.utcoffset() != before.utcoffset(), window
            assert not cron.interval_like


def test_naive_times_are_refused() -> None:
    cron = parse_schedule("@daily")
    with pytest.raises(ValueError, match="timezone-aware"):
        next(windows_after(schedule=cron, zone=ZoneInfo("UTC"), after=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(
            schedule="@daily",
            time_zone="UTC",
            suspend=False,
            starting_deadline_seconds=None,
            now=datetime(2026, 1, 1),
            last_handled_window=None,
            created_at=utc(2025, 1, 1),
        )


# --- decide ------------------------------------------------------------------------------

CREATED = z("2026-01-01T00:00Z")


def run(
    *,
    schedule: str | None = "0 * * * *",
    tz: str = "UTC",
    suspend: bool = False,
    deadline: int | None = 600,
    now: str,
    last: str | None = None,
    created: str | None = None,
    resumed: str | None = None,
) -> ScheduleDecision:
    return decide(
        schedule=schedule,
        time_zone=tz,
        suspend=suspend,
        starting_deadline_seconds=deadline,
        now=z(now),
        last_handled_window=z(last) if last else None,
        created_at=z(created) if created else CREATED,
        resumed_at=z(resumed) if resumed else None,
    )


# (kwargs, action, due, missed, handled_through, next_window)
DECISIONS: list[
    tuple[str, dict[str, object], ScheduleAction, str | None, list[str], str | None, str | None]
] = [
    (
        "no schedule",
        {"schedule": None, "now": "2026-05-01T10:00Z"},
        ScheduleAction.UNSCHEDULED,
        None,
        [],
        None,
        None,
    ),
    (
        "empty schedule",
        {"schedule": "  ", "now": "2026-05-01T10:00Z"},
        ScheduleAction.UNSCHEDULED,
        None,
        [],
        None,
        None,
    ),
    (
        "bad schedule",
        {"schedule": "@every 1h", "now": "2026-05-01T10:00Z"},
        ScheduleAction.INVALID,
        None,
        [],
        None,
        None,
    ),
    (
        "reversed range",
        {"schedule": "0 5-1 * * *", "now": "2026-05-01T10:00Z"},
        ScheduleAction.INVALID,
        None,
        [],
        None,
        None,
    ),
    (
        "bad zone",
        {"tz": "Mars/Base", "now": "2026-05-01T10:00Z"},
        ScheduleAction.INVALID,
        None,
        [],
        None,
        None,
    ),
    (
        "negative deadline",
        {"deadline": -1, "now": "2026-05-01T10:00Z"},
        ScheduleAction.INVALID,
        None,
        [],
        None,
        None,
    ),
    # first sight of a new cluster: windows before creation are never backed up
    (
        "new cluster, mid-hour",
        {"created": "2026-05-01T10:07Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T11:00Z",
    ),
    (
        "new cluster, created exactly on a window",
        {"created": "2026-05-01T10:00Z", "now": "2026-05-01T10:00:30Z"},
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T11:00Z",
    ),
    (
        "new cluster, first window after creation is due",
        {"created": "2026-05-01T09:59:30Z", "now": "2026-05-01T10:00:05Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        [],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "controller installed long after creation: catch up once, report the rest",
        {"created": "2026-05-01T07:30Z", "now": "2026-05-01T10:00:05Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        ["2026-05-01T08:00Z", "2026-05-01T09:00Z"],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    # the steady state
    (
        "on time",
        {"last": "2026-05-01T09:00Z", "now": "2026-05-01T10:00:00.2Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        [],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "exactly at the window",
        {"last": "2026-05-01T09:00Z", "now": "2026-05-01T10:00Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        [],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "already handled",
        {"last": "2026-05-01T10:00Z", "now": "2026-05-01T10:00:01Z"},
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T11:00Z",
    ),
    (
        "late but within the deadline (inclusive)",
        {"last": "2026-05-01T09:00Z", "now": "2026-05-01T10:10Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        [],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "one microsecond past the deadline",
        {"last": "2026-05-01T09:00Z", "now": "2026-05-01T10:10:00.000001Z"},
        ScheduleAction.MISSED,
        None,
        ["2026-05-01T10:00Z"],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    # outages: one catch-up at most, never a burst
    (
        "outage, newest window still runnable",
        {"last": "2026-05-01T06:00Z", "now": "2026-05-01T10:05Z"},
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        ["2026-05-01T07:00Z", "2026-05-01T08:00Z", "2026-05-01T09:00Z"],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "outage, everything past the deadline",
        {"last": "2026-05-01T06:00Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.MISSED,
        None,
        ["2026-05-01T07:00Z", "2026-05-01T08:00Z", "2026-05-01T09:00Z", "2026-05-01T10:00Z"],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "no deadline: the newest window always runs once",
        {
            "schedule": "0 3 * * *",
            "deadline": None,
            "last": "2026-04-28T03:00Z",
            "now": "2026-05-01T17:00Z",
        },
        ScheduleAction.RUN,
        "2026-05-01T03:00Z",
        ["2026-04-29T03:00Z", "2026-04-30T03:00Z"],
        "2026-05-01T03:00Z",
        "2026-05-02T03:00Z",
    ),
    # suspend / resume
    (
        "suspended: nothing due, windows skipped",
        {"suspend": True, "last": "2026-05-01T06:00Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.SUSPENDED,
        None,
        [],
        "2026-05-01T10:00Z",
        None,
    ),
    (
        "suspended, already marked",
        {"suspend": True, "last": "2026-05-01T10:00Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.SUSPENDED,
        None,
        [],
        None,
        None,
    ),
    (
        "suspended, never handled anything",
        {"suspend": True, "now": "2026-05-01T10:30Z"},
        ScheduleAction.SUSPENDED,
        None,
        [],
        "2026-05-01T10:00Z",
        None,
    ),
    (
        "resumed: windows that passed while suspended are skipped, not missed",
        {
            "deadline": None,
            "last": "2026-05-01T06:00Z",
            "resumed": "2026-05-01T10:02Z",
            "now": "2026-05-01T10:03Z",
        },
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T11:00Z",
    ),
    (
        "resumed, then the next window runs normally",
        {
            "last": "2026-05-01T06:00Z",
            "resumed": "2026-05-01T10:02Z",
            "now": "2026-05-01T11:00:01Z",
        },
        ScheduleAction.RUN,
        "2026-05-01T11:00Z",
        [],
        "2026-05-01T11:00Z",
        "2026-05-01T12:00Z",
    ),
    # schedule changes take effect at once
    (
        "daily -> hourly: the newest hourly window runs now, earlier ones are reported",
        {
            "schedule": "0 * * * *",
            "deadline": 3600,
            "last": "2026-05-01T02:00Z",
            "now": "2026-05-01T10:30Z",
        },
        ScheduleAction.RUN,
        "2026-05-01T10:00Z",
        [f"2026-05-01T0{h}:00Z" for h in range(3, 10)],
        "2026-05-01T10:00Z",
        "2026-05-01T11:00Z",
    ),
    (
        "hourly -> daily: nothing until the first daily window",
        {"schedule": "0 2 * * *", "last": "2026-05-01T10:00Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-02T02:00Z",
    ),
    (
        "time-zone change moves the next window at once",
        {
            "schedule": "0 2 * * *",
            "tz": "Asia/Tokyo",
            "last": "2026-04-30T17:00Z",
            "now": "2026-05-01T10:30Z",
        },
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T17:00Z",
    ),
    (
        "clock behind the stored mark",
        {"last": "2026-05-01T12:00Z", "now": "2026-05-01T10:30Z"},
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-05-01T11:00Z",
    ),
    # DST through decide
    (
        "spring-forward gap window is due",
        {
            "schedule": "30 2 * * *",
            "tz": "America/New_York",
            "deadline": 60,
            "last": "2026-03-07T07:30Z",
            "now": "2026-03-08T07:00:30Z",
        },
        ScheduleAction.RUN,
        "2026-03-08T07:00Z",
        [],
        "2026-03-08T07:00Z",
        "2026-03-09T06:30Z",
    ),
    (
        "fall-back second 01:00 is its own window",
        {
            "schedule": "@hourly",
            "tz": "America/New_York",
            "deadline": 60,
            "last": "2026-11-01T05:00Z",
            "now": "2026-11-01T06:00:10Z",
        },
        ScheduleAction.RUN,
        "2026-11-01T06:00Z",
        [],
        "2026-11-01T06:00Z",
        "2026-11-01T07:00Z",
    ),
    (
        "fall-back repeated 01:30 of a daily schedule runs once",
        {
            "schedule": "30 1 * * *",
            "tz": "America/New_York",
            "deadline": 60,
            "last": "2026-11-01T05:30Z",
            "now": "2026-11-01T06:30:10Z",
        },
        ScheduleAction.IDLE,
        None,
        [],
        None,
        "2026-11-02T06:30Z",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "action", "due", "missed", "handled", "next_window"),
    [pytest.param(*row[1:], id=row[0]) for row in DECISIONS],
)
def test_decide(
    kwargs: dict[str, object],
    action: ScheduleAction,
    due: str | None,
    missed: list[str],
    handled: str | None,
    next_window: str | None,
) -> None:
    decision = run(**kwargs)  # type: ignore[arg-type]
    assert decision.action is action, decision.message
    assert decision.due == (z(due) if due else None)
    assert list(decision.missed) == [z(m) for m in missed]
    assert decision.missed_count == len(missed)
    assert not decision.missed_truncated
    assert decision.handled_through == (z(handled) if handled else None)
    assert decision.next_window == (z(next_window) if next_window else None)
    assert decision.message
    if action is ScheduleAction.RUN:
        deadline = kwargs.get("deadline", 600)
        expected = None if deadline is None else decision.due + timedelta(seconds=deadline)  # type: ignore[operator,arg-type]
        assert decision.deadline == expected


def test_outputs_are_utc() -> None:
    decision = decide(
        schedule="@hourly",
        time_zone="Europe/Berlin",
        suspend=False,
        starting_deadline_seconds=60,
        now=datetime(2026, 5, 1, 12, 0, 5, tzinfo=ZoneInfo("Europe/Berlin")),
        last_handled_window=utc(2026, 5, 1, 9),
        created_at=CREATED,
    )
    assert decision.due == utc(2026, 5, 1, 10)
    assert decision.due is not None
    assert decision.due.tzinfo is UTC
    assert decision.next_window is not None
    assert decision.next_window.tzinfo is UTC


@pytest.mark.parametrize(
    ("deadline", "action"), [(None, ScheduleAction.RUN), (30, ScheduleAction.MISSED)]
)
def test_missed_windows_are_capped(deadline: int | None, action: ScheduleAction) -> None:
    decision = run(
        schedule="* * * * *",
        deadline=deadline,
        created="2026-04-29T00:00Z",
        now="2026-05-01T00:00:45Z",
    )
    assert decision.action is action
    assert decision.missed_count == MISSED_LIMIT
    assert decision.missed_truncated
    assert list(decision.missed) == sorted(decision.missed)
    assert decision.missed[-1] == (
        z("2026-04-30T23:59Z") if deadline is None else z("2026-05-01T00:00Z")
    )
    assert decision.handled_through == z("2026-05-01T00:00Z")


def test_exactly_one_decision_per_window_over_a_day_of_irregular_reconciles() -> None:
    """A controller that wakes at irregular times (late, early, down for hours) and stores
    handled_through after acting: every window is run or missed exactly once, never both,
    and nothing runs later than the deadline."""
    wakeups = [z("2026-03-07T23:10Z")]
    offsets_minutes = [
        50,
        0.1,
        60,
        61,
        5,
        55,
        240,
        3,
        57,
        58,
        1,
        62,
        0.5,
        118,
        60,
        60,
        30,
        30,
        9,
        51,
        60,
        300,
        7,
        53,
    ]
    for minutes in offsets_minutes:
        wakeups.append(wakeups[-1] + timedelta(minutes=minutes))
    last: datetime | None = None
    seen: list[datetime] = []
    ran: list[datetime] = []
    for now in wakeups:
        decision = decide(
            schedule="0 * * * *",
            time_zone="America/New_York",
            suspend=False,
            starting_deadline_seconds=600,
            now=now,
            last_handled_window=last,
            created_at=z("2026-03-07T23:00Z"),
        )
        if decision.action is ScheduleAction.RUN:
            assert decision.due is not None
            assert now - decision.due <= timedelta(seconds=600)
            ran.append(decision.due)
            seen.append(decision.due)
        seen.extend(decision.missed)
        if decision.handled_through is not None:
            last = decision.handled_through
        assert decision.next_window is not None
        assert decision.next_window > now
    assert len(seen) == len(set(seen)), "a window was decided twice"
    cron = parse_schedule("0 * * * *")
    expected = list(
        itertools.takewhile(
            lambda w: w <= wakeups[-1],
            windows_after(
                schedule=cron, zone=ZoneInfo("America/New_York"), after=z("2026-03-07T23:00Z")
            ),
        )
    )
    assert sorted(seen) == expected
    assert ran, "some windows ran"


def test_deciding_again_after_acting_is_idle() -> None:
    first = run(last="2026-05-01T09:00Z", now="2026-05-01T10:00:03Z")
    assert first.action is ScheduleAction.RUN
    again = run(
        last=first.handled_through.isoformat() if first.handled_through else None,
        now="2026-05-01T10:00:04Z",
    )
    assert again.action is ScheduleAction.IDLE
    assert again.next_window == z("2026-05-01T11:00Z")


@pytest.mark.parametrize("deadline", [10**14, 2**63 - 1, 10**30])
def test_huge_starting_deadlines_run_the_due_window_instead_of_overflowing(deadline: int) -> None:
    """Regression (issue 8): 10^14 and 2^63-1 were accepted by the CRD and raised
    OverflowError on every reconcile once a window was due."""
    got = run(deadline=deadline, now="2026-03-01T10:00Z", last="2026-03-01T09:00Z")
    assert got.action is ScheduleAction.RUN
    assert got.due == z("2026-03-01T10:00Z")
    late = run(deadline=deadline, now="2026-03-01T12:30Z", last="2026-03-01T09:00Z")
    assert late.action is ScheduleAction.RUN
    assert late.due == z("2026-03-01T12:00Z")
    assert late.missed == (z("2026-03-01T10:00Z"), z("2026-03-01T11:00Z"))
