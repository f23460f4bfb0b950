"""The schedule's cadence (longest gap between windows) that the backup-age alert uses."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.backup.decide.cadence import HORIZON, cached_gap, longest_gap

START = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
H = 3600.0


@pytest.mark.parametrize(
    ("schedule", "zone", "hours"),
    [
        ("* * * * *", "UTC", 1 / 60),
        ("@hourly", "UTC", 1),
        ("0 3 * * *", "UTC", 24),
        ("0 3 * * *", "Europe/Berlin", 25),  # the autumn DST change makes one day 25 h long
        ("0 3 * * 1-5", "UTC", 72),  # Friday to Monday
        ("0 3 * * 0", "UTC", 168),
        ("0 0 1 * *", "UTC", 31 * 24),
        ("0 0 1 1 *", "UTC", HORIZON.total_seconds() / H),  # yearly: the horizon
    ],
)
def test_longest_gap(schedule: str, zone: str, hours: float) -> None:
    assert longest_gap(schedule=schedule, time_zone=zone, start=START) == pytest.approx(hours * H)


@pytest.mark.parametrize(
    ("schedule", "zone"),
    [(None, "UTC"), ("", "UTC"), ("61 * * * *", "UTC"), ("@daily", "Mars/Base")],
)
def test_no_or_invalid_schedule_is_zero(schedule: str | None, zone: str) -> None:
    assert longest_gap(schedule=schedule, time_zone=zone, start=START) == 0.0


def test_cached_per_day() -> None:
    day = START.date()
    assert cached_gap("0 3 * * 0", "UTC", day) == 168 * H
    before = cached_gap.cache_info().hits
    assert cached_gap("0 3 * * 0", "UTC", day) == 168 * H
    assert cached_gap.cache_info().hits == before + 1
