"""The schedule language: cron expressions and IANA time-zone names, validated.

Guarantees:

* pure: no I/O besides the read-only IANA time-zone database behind :mod:`zoneinfo`, no clock
  reads;
* the accepted schedule language is exactly :data:`CRON_PATTERN` (the CRD admits the same
  pattern): five fields of digits, ``*``, ``,``, ``-``, ``/`` and month/day names, or one of
  ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. ``@every``, ``@reboot``,
  seconds and year fields, ``L``, ``W``, ``#``, ``?`` and ``H`` are rejected;
* the accepted time-zone names are exactly :data:`TIME_ZONE_PATTERN` (the CRD admits the same
  pattern) that the zone database knows;
* every refusal is a :class:`ScheduleError` whose text is a user message.

:attr:`CronSchedule.interval_like` selects the daylight-saving rule that
:mod:`controller.backup.decide.windows` applies to the schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

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
