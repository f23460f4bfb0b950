"""controller.backup.decide.retention: what may be deleted, and what never is."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from controller.backup.decide.retention import (
    MAX_AGE_PATTERN,
    BackupRecord,
    DeleteReason,
    RetentionPlan,
    SkipReason,
    key_in_prefix,
    parse_max_age,
    plan,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PREFIX = "backups/ns/prod/"


def rec(
    name: str,
    days_ago: float,
    phase: str = "Succeeded",
    *,
    key: str | None = "auto",
    retain: bool = False,
    deleting: bool = False,
    completion: bool = True,
) -> BackupRecord:
    when = NOW - timedelta(days=days_ago)
    return BackupRecord(
        name=name,
        phase=phase,
        created=when - timedelta(minutes=1),
        completion_time=when if completion else None,
        key=f"{PREFIX}{name}.snap" if key == "auto" else key,
        retain=retain,
        deleting=deleting,
    )


def run(
    records: list[BackupRecord],
    max_count: int | None = None,
    max_age: timedelta | str | None = None,
) -> RetentionPlan:
    return plan(
        records=records,
        max_count=max_count,
        max_age=max_age,
        now=NOW,
        path_prefix="backups",
        namespace="ns",
        cluster="prod",
    )


def deleted(p: RetentionPlan) -> list[tuple[str, DeleteReason]]:
    return [(d.name, d.reason) for d in p.delete]


# --- maxAge syntax -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("720h", 720 * 3600),
        ("90m", 5400),
        ("45s", 45),
        ("1d12h", 36 * 3600),
        ("1d0h30m", 86400 + 1800),
        ("0d1h", 3600),
        ("99999d", 99999 * 86400),
    ],
)
def test_parse_max_age(text: str, seconds: int) -> None:
    assert parse_max_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0d",
        "0h0m",
        "00s",
        "-1h",
        "1w",
        "1y",
        "1.5h",
        "12h1d",
        "1 d",
        "d",
        "1D",
        "30d\n",
        "100000d",
        "720h0m0s0",
    ],
)
def test_parse_max_age_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="maxAge"):
        parse_max_age(text)


def test_max_age_pattern_is_what_the_parser_accepts() -> None:
    import re

    assert re.fullmatch(MAX_AGE_PATTERN, "1d12h")
    assert not re.fullmatch(MAX_AGE_PATTERN, "12h1d")


# --- key scope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "inside"),
    [
        ("backups/ns/prod/20260101T000000Z-0123abcd.snap", True),
        ("backups/ns/prod/x.snap", True),
        ("backups/ns/prod/.snap", False),
        ("backups/ns/prod/", False),
        ("backups/ns/prod", False),
        ("backups/ns/prod-2/x.snap", False),
        ("backups/ns/production/x.snap", False),
        ("backups/ns/prod/sub/x.snap", False),
        ("backups/ns/prod/../other/x.snap", False),
        ("backups/other/prod/x.snap", False),
        ("other/ns/prod/x.snap", False),
        ("/backups/ns/prod/x.snap", False),
        ("backups/ns/prod/x.snap.manifest.json", False),
        ("backups/ns/prod/x.txt", False),
        ("", False),
        (None, False),
    ],
)
def test_key_in_prefix(key: str | None, inside: bool) -> None:
    assert key_in_prefix(key, own_prefix=PREFIX) is inside


@pytest.mark.parametrize(
    ("path_prefix", "key"),
    [
        ("", "ns/prod/a.snap"),
        ("/", "ns/prod/a.snap"),
        ("backups/", "backups/ns/prod/a.snap"),
        ("/a/b/", "a/b/ns/prod/a.snap"),
    ],
)
def test_prefix_normalisation(path_prefix: str, key: str) -> None:
    result = plan(
        records=[rec("a", 10, key=key), rec("b", 1, key=key.replace("a.snap", "b.snap"))],
        max_count=1,
        max_age=None,
        now=NOW,
        path_prefix=path_prefix,
        namespace="ns",
        cluster="prod",
    )
    assert result.delete_names == {"a"}


# --- the rules ---------------------------------------------------------------------------

S = "Succeeded"
F = "Failed"

# (id, records, maxCount, maxAge, expected deletions oldest first, newest)
CASES: list[
    tuple[
        str, list[BackupRecord], int | None, str | None, list[tuple[str, DeleteReason]], str | None
    ]
] = [
    ("no policy", [rec("a", 100), rec("b", 50)], None, None, [], "b"),
    ("no records", [], 3, "1d", [], None),
    ("under the count", [rec("a", 3), rec("b", 2), rec("c", 1)], 3, None, [], "c"),
    (
        "over the count",
        [rec("a", 5), rec("b", 4), rec("c", 3), rec("d", 2), rec("e", 1)],
        2,
        None,
        [
            ("a", DeleteReason.MAX_COUNT),
            ("b", DeleteReason.MAX_COUNT),
            ("c", DeleteReason.MAX_COUNT),
        ],
        "e",
    ),
    (
        "maxCount 1 keeps only the newest",
        [rec("a", 2), rec("b", 1)],
        1,
        None,
        [("a", DeleteReason.MAX_COUNT)],
        "b",
    ),
    (
        "by age",
        [rec("a", 40), rec("b", 31), rec("c", 29), rec("d", 1)],
        None,
        "30d",
        [("a", DeleteReason.MAX_AGE), ("b", DeleteReason.MAX_AGE)],
        "d",
    ),
    ("exactly maxAge old is kept", [rec("a", 30), rec("b", 1)], None, "30d", [], "b"),
    (
        "age never deletes the newest success",
        [rec("a", 90), rec("b", 60), rec("c", 45)],
        None,
        "30d",
        [("a", DeleteReason.MAX_AGE), ("b", DeleteReason.MAX_AGE)],
        "c",
    ),
    (
        "count and age together",
        [rec("a", 50), rec("b", 40), rec("c", 10), rec("d", 5), rec("e", 1)],
        4,
        "30d",
        [("a", DeleteReason.MAX_COUNT), ("b", DeleteReason.MAX_AGE)],
        "e",
    ),
    (
        "every recent attempt failed: the last good copies stay",
        [rec("a", 10), rec("b", 9)] + [rec(f"f{i}", 8 - i * 0.5, F, key=None) for i in range(10)],
        2,
        "1d",
        [("a", DeleteReason.MAX_AGE)],
        "b",
    ),
    (
        "failed attempts do not count toward maxCount",
        [rec("a", 3), rec("f1", 2.5, F), rec("b", 2), rec("f2", 1.5, F), rec("c", 1)],
        3,
        None,
        [],
        "c",
    ),
    (
        "only failures: nothing to do",
        [rec("f1", 3, F), rec("f2", 2, F)],
        1,
        "1d",
        [],
        None,
    ),
    (
        "pending and running records are never touched",
        [rec("a", 40), rec("p", 35, "Pending"), rec("r", 35, "Running"), rec("b", 1)],
        1,
        "1d",
        [("a", DeleteReason.MAX_COUNT)],
        "b",
    ),
    (
        "Retain records are pinned: not counted, never deleted",
        [rec("pin", 400, retain=True), rec("a", 3), rec("b", 2), rec("pin2", 0.5, retain=True)],
        1,
        "1d",
        [("a", DeleteReason.MAX_COUNT)],
        "b",
    ),
    (
        "records being deleted are ignored",
        [rec("gone", 0.1, deleting=True), rec("a", 3), rec("b", 2)],
        1,
        None,
        [("a", DeleteReason.MAX_COUNT)],
        "b",
    ),
    (
        "ties are broken by name",
        [rec("b", 1), rec("a", 1), rec("c", 1)],
        1,
        None,
        [("a", DeleteReason.MAX_COUNT), ("b", DeleteReason.MAX_COUNT)],
        "c",
    ),
    (
        "no completion time: dated by creation",
        [rec("a", 5, completion=False), rec("b", 1)],
        1,
        None,
        [("a", DeleteReason.MAX_COUNT)],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("records", "max_count", "max_age", "expected", "newest"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_plan(
    records: list[BackupRecord],
    max_count: int | None,
    max_age: str | None,
    expected: list[tuple[str, DeleteReason]],
    newest: str | None,
) -> None:
    result = run(records, max_count, max_age)
    assert result.problem == ""
    assert deleted(result) == expected
    assert result.newest == newest
    by_name = {r.name: r for r in records}
    for name in result.delete_names:
        assert by_name[name].phase == S
        assert name != newest
    successes = {r.name for r in records if r.phase == S and not r.retain and not r.deleting}
    assert set(result.kept) | result.delete_names == successes
    assert not set(result.kept) & result.delete_names


def test_keys_outside_the_prefix_are_reported_not_deleted() -> None:
    records = [
        rec("old-prefix", 100, key="old/ns/prod/a.snap"),
        rec("other-cluster", 90, key="backups/ns/other/a.snap"),
        rec("nested", 80, key="backups/ns/prod/deeper/a.snap"),
        rec("escape", 70, key="backups/ns/prod/../../x.snap"),
        rec("nokey", 60, key=None),
        rec("a", 2),
        rec("b", 1),
    ]
    result = run(records, 1, "1d")
    assert deleted(result) == [("a", DeleteReason.MAX_COUNT)]
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("old-prefix", SkipReason.KEY_OUTSIDE_PREFIX),
        ("other-cluster", SkipReason.KEY_OUTSIDE_PREFIX),
        ("nested", SkipReason.KEY_OUTSIDE_PREFIX),
        ("escape", SkipReason.KEY_OUTSIDE_PREFIX),
        ("nokey", SkipReason.NO_KEY),
    ]


def test_newest_success_outside_the_prefix_does_not_expose_the_newest_inside() -> None:
    records = [rec("a", 50), rec("b", 40), rec("moved", 1, key="elsewhere/ns/prod/m.snap")]
    result = run(records, None, "1d")
    assert deleted(result) == [("a", DeleteReason.MAX_AGE)]
    assert result.newest == "b"


def test_a_key_shared_with_a_staying_record_is_not_deleted() -> None:
    shared = f"{PREFIX}shared.snap"
    records = [
        rec("old", 10, key=shared),
        rec("failed-reference", 9, F, key=shared),
        rec("mid", 5),
        rec("new", 1),
    ]
    result = run(records, 1)
    assert deleted(result) == [("mid", DeleteReason.MAX_COUNT)]
    assert [(s.name, s.reason) for s in result.skipped] == [("old", SkipReason.KEY_SHARED)]
    assert "old" in result.kept


def test_duplicate_keys_that_both_go_are_deleted() -> None:
    shared = f"{PREFIX}dup.snap"
    records = [rec("x", 10, key=shared), rec("y", 9, key=shared), rec("z", 1)]
    assert deleted(run(records, 1)) == [
        ("x", DeleteReason.MAX_COUNT),
        ("y", DeleteReason.MAX_COUNT),
    ]


@pytest.mark.parametrize(
    ("max_count", "max_age", "fragment"),
    [
        (0, None, "maxCount must be at least 1"),
        (-3, None, "maxCount must be at least 1"),
        (None, "0d", "greater than zero"),
        (None, "-1h", "invalid maxAge"),
        (None, timedelta(0), "greater than zero"),
        (None, timedelta(seconds=-5), "greater than zero"),
        (2, "soon", "invalid maxAge"),
    ],
)
def test_unusable_policy_deletes_nothing(
    max_count: int | None, max_age: str | timedelta | None, fragment: str
) -> None:
    records = [rec("a", 300), rec("b", 200), rec("c", 100)]
    result = run(records, max_count, max_age)
    assert result.delete == ()
    assert fragment in result.problem
    assert result.newest == "c"


def test_timedelta_max_age() -> None:
    records = [rec("a", 3), rec("b", 1)]
    assert deleted(run(records, None, timedelta(days=2))) == [("a", DeleteReason.MAX_AGE)]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(
            records=[],
            max_count=1,
            max_age=None,
            now=datetime(2026, 1, 1),
            path_prefix="",
            namespace="ns",
            cluster="c",
        )


def test_exhaustive_small_histories_keep_the_invariants() -> None:
    """Every sequence of up to 6 outcomes (S/F/Running) with every policy: never the newest
    success, never a non-success, and with maxCount N at most N successes stay (plus none
    extra), and the plan is stable when applied again."""
    phases = ["Succeeded", "Failed", "Running"]
    policies = [(c, a) for c in (None, 1, 2, 3) for a in (None, "1d", "3d", "10d")]
    for length in range(1, 7):
        for history in itertools.product(phases, repeat=length):
            records = [rec(f"r{i}", length - i, phase) for i, phase in enumerate(history)]
            successes = [r for r in records if r.phase == S]
            newest = successes[-1].name if successes else None
            for max_count, max_age in policies:
                result = run(records, max_count, max_age)
                names = result.delete_names
                assert newest not in names
                assert all(r.phase == S for r in records if r.name in names)
                if max_count is not None:
                    assert len(successes) - len(names) <= max(max_count, 1)
                if successes:
                    assert len(successes) - len(names) >= 1
                again = run([r for r in records if r.name not in names], max_count, max_age)
                assert again.delete == ()
