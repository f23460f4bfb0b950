"""Which successful backups retention deletes.

Guarantees (each one holds for *any* input, not only for the order the reconciler calls in):

* only records in phase ``Succeeded`` count toward ``maxCount`` and only they can be deleted;
  Pending, Running and Failed attempts are never counted, never deleted and never the reason a
  success is kept or evicted. So "every recent attempt failed" keeps the last good copies;
* the newest eligible success (by completion time) is never deleted, whatever ``maxAge`` says;
* a record whose key is not a snapshot key directly under the cluster's own prefix
  ``<pathPrefix>/<namespace>/<cluster>/`` (see :func:`executor.layout.cluster_prefix`) is
  never deleted and never counted; each such success is *reported* in ``skipped``;
* a record whose key is also referenced by a record that stays is not deleted (deleting it
  would delete a snapshot another record still names); it is reported in ``skipped``;
* records with ``deletionPolicy: Retain`` are pinned: not counted, never deleted. Records
  already being deleted are ignored;
* an unusable policy (``maxCount < 1``, ``maxAge <= 0``, a malformed ``maxAge``) deletes
  nothing and says why in ``problem``;
* the result is deterministic: ties in completion time are broken by name.

Age: a success is older than ``maxAge`` when ``now - completion_time > maxAge`` (strictly).
A success without a completion time is dated by its creation time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from executor.layout import SNAPSHOT_SUFFIX, cluster_prefix

MAX_AGE_PATTERN = "^([0-9]{1,5}d)?([0-9]{1,6}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$"
"""``maxAge`` syntax: days, hours, minutes, seconds in that order (``30d``, ``720h``,
``1d12h``, ``90m``); the CRD validates with this exact text and also requires a non-zero
value."""

_MAX_AGE_RE = re.compile(MAX_AGE_PATTERN)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

SUCCEEDED = "Succeeded"


def parse_max_age(text: str) -> timedelta:
    """``"30d"`` -> 30 days; ``ValueError`` if malformed or zero."""
    if not text or not _MAX_AGE_RE.fullmatch(text):
        raise ValueError(f"invalid maxAge {text!r}: use e.g. 30d, 720h, 1d12h or 90m")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall("([0-9]+)([dhms])", text))
    if seconds <= 0:
        raise ValueError(f"maxAge {text!r} must be greater than zero")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class BackupRecord:
    """What retention needs to know about one OpenBaoBackup of the cluster."""

    name: str
    phase: str
    created: datetime
    completion_time: datetime | None = None
    key: str | None = None
    retain: bool = False  # spec.deletionPolicy == Retain
    deleting: bool = False  # metadata.deletionTimestamp is set

    @property
    def when(self) -> datetime:
        return self.completion_time or self.created


class DeleteReason(enum.Enum):
    MAX_COUNT = "MaxCount"
    MAX_AGE = "MaxAge"


class SkipReason(enum.Enum):
    KEY_OUTSIDE_PREFIX = "KeyOutsidePrefix"  # reported, never deleted
    KEY_SHARED = "KeyShared"  # another record that stays names the same key
    NO_KEY = "NoKey"  # a success without a key: nothing to delete, nothing to count


@dataclass(frozen=True)
class Deletion:
    name: str
    key: str
    reason: DeleteReason


@dataclass(frozen=True)
class Skipped:
    name: str
    key: str | None
    reason: SkipReason


@dataclass(frozen=True)
class RetentionPlan:
    """``delete``: oldest first. ``kept``: eligible successes that stay, newest first.
    ``newest``: the protected newest eligible success. ``skipped``: reported, not deleted."""

    delete: tuple[Deletion, ...] = ()
    kept: tuple[str, ...] = ()
    newest: str | None = None
    skipped: tuple[Skipped, ...] = ()
    problem: str = ""

    @property
    def delete_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.delete)


def key_in_prefix(key: str | None, *, own_prefix: str) -> bool:
    """True if ``key`` is a snapshot key directly under ``own_prefix`` (no sub-folders)."""
    if not key or not key.startswith(own_prefix):
        return False
    rest = key[len(own_prefix) :]
    return (
        bool(rest)
        and "/" not in rest
        and rest not in (".", "..")
        and rest.endswith(SNAPSHOT_SUFFIX)
        and len(rest) > len(SNAPSHOT_SUFFIX)
    )


def plan(
    *,
    records: Iterable[BackupRecord],
    max_count: int | None,
    max_age: timedelta | str | None,
    now: datetime,
    path_prefix: str,
    namespace: str,
    cluster: str,
) -> RetentionPlan:
    """The retention plan for one cluster's records at ``now``."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    all_records = list(records)
    own = cluster_prefix(path_prefix=path_prefix, namespace=namespace, cluster=cluster)

    eligible: list[BackupRecord] = []
    skipped: list[Skipped] = []
    for record in all_records:
        if record.phase != SUCCEEDED or record.deleting or record.retain:
            continue
        if not record.key:
            skipped.append(Skipped(record.name, record.key, SkipReason.NO_KEY))
            continue
        if not key_in_prefix(record.key, own_prefix=own):
            skipped.append(Skipped(record.name, record.key, SkipReason.KEY_OUTSIDE_PREFIX))
            continue
        eligible.append(record)
    eligible.sort(key=lambda r: (r.when, r.name), reverse=True)
    newest = eligible[0].name if eligible else None

    problem = ""
    age: timedelta | None = None
    if isinstance(max_age, str):
        try:
            age = parse_max_age(max_age)
        except ValueError as err:
            problem = str(err)
    elif max_age is not None:
        age = max_age
        if age <= timedelta(0):
            problem = "maxAge must be greater than zero"
    if max_count is not None and max_count < 1:
        problem = problem or f"maxCount must be at least 1 (got {max_count})"
    if problem:
        return RetentionPlan(
            kept=tuple(r.name for r in eligible),
            newest=newest,
            skipped=tuple(skipped),
            problem=problem,
        )

    doomed: list[tuple[BackupRecord, DeleteReason]] = []
    kept: list[BackupRecord] = []
    for index, record in enumerate(eligible):
        if index == 0:
            kept.append(record)
        elif max_count is not None and index >= max_count:
            doomed.append((record, DeleteReason.MAX_COUNT))
        elif age is not None and now - record.when > age:
            doomed.append((record, DeleteReason.MAX_AGE))
        else:
            kept.append(record)

    doomed_names = {r.name for r, _ in doomed}
    staying_keys = {r.key for r in all_records if r.name not in doomed_names and r.key}
    deletions: list[Deletion] = []
    for record, reason in reversed(doomed):  # oldest first
        assert record.key is not None  # eligible records have keys
        if record.key in staying_keys:
            skipped.append(Skipped(record.name, record.key, SkipReason.KEY_SHARED))
            kept.append(record)
            continue
        deletions.append(Deletion(record.name, record.key, reason))
    kept.sort(key=lambda r: (r.when, r.name), reverse=True)
    return RetentionPlan(
        delete=tuple(deletions),
        kept=tuple(r.name for r in kept),
        newest=newest,
        skipped=tuple(skipped),
    )
