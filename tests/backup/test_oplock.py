"""controller.backup.decide.oplock: the operation-lock decisions and what they write."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.backup.decide.oplock import (
    Holder,
    LockAction,
    ObservedLease,
    acquire_spec,
    decide,
    duration_of,
    holder_identity,
    may_release,
    parse_holder,
    release_spec,
    renew_spec,
)
from controller.kube.resources import format_microtime

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ME = "backup/prod-202606011200"
OTHER_BACKUP = "backup/prod-manual-0123abcd"
RESTORE = "restore/prod-restore-1"
UPGRADE = "upgrade/2.4.0-to-2.5.0"


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lease(
    holder: str | None,
    *,
    duration: int | None = 60,
    renewed: float | None = 0,
    acquired: float | None = 0,
    observed: float = 0,
    transitions: int = 0,
) -> ObservedLease:
    return ObservedLease(
        holder=holder,
        lease_duration_seconds=duration,
        acquire_time=s(acquired) if acquired is not None else None,
        renew_time=s(renewed) if renewed is not None else None,
        observed_at=s(observed),
        lease_transitions=transitions,
    )


# (id, lease, now (s after T0), previous holder finished, action, until (s) or None)
CASES: list[tuple[str, ObservedLease | None, float, bool, LockAction, float | None]] = [
    ("no lease", None, 0, False, LockAction.ACQUIRE_CREATE, None),
    ("released (empty holder)", lease(""), 1, False, LockAction.ACQUIRE_TAKEOVER, None),
    ("released (no holder)", lease(None), 1, False, LockAction.ACQUIRE_TAKEOVER, None),
    (
        "released even if recently renewed",
        lease("", duration=1),
        0,
        False,
        LockAction.ACQUIRE_TAKEOVER,
        None,
    ),
    # ours
    ("ours, just renewed", lease(ME), 5, False, LockAction.HELD_BY_US, 20),
    ("ours, one tick before due", lease(ME), 19.999, False, LockAction.HELD_BY_US, 20),
    ("ours, due at duration/3", lease(ME), 20, False, LockAction.RENEW, None),
    ("ours, long overdue", lease(ME), 600, False, LockAction.RENEW, None),
    (
        "ours, renewTime missing: acquireTime counts",
        lease(ME, renewed=None, acquired=-30),
        0,
        False,
        LockAction.RENEW,
        None,
    ),
    (
        "ours, no timestamps: observation counts",
        lease(ME, renewed=None, acquired=None, observed=-10),
        0,
        False,
        LockAction.HELD_BY_US,
        10,
    ),
    (
        "ours, renewed in the future (skew)",
        lease(ME, renewed=100),
        0,
        False,
        LockAction.HELD_BY_US,
        120,
    ),
    # someone else, live
    ("restore holds it", lease(RESTORE), 30, False, LockAction.BLOCKED, 60),
    (
        "restore holds it, its job is done but lease live",
        lease(RESTORE),
        30,
        True,
        LockAction.BLOCKED,
        60,
    ),
    (
        "another backup holds it",
        lease(OTHER_BACKUP, observed=10),
        50,
        False,
        LockAction.BLOCKED,
        70,
    ),
    ("upgrade holds it", lease(UPGRADE), 59.9, False, LockAction.BLOCKED, 60),
    ("foreign identity format", lease("some-operator-pod-xyz"), 1, False, LockAction.BLOCKED, 60),
    # expiry is judged from OUR observation, not from the remote renewTime
    (
        "remote renewTime ancient, but first seen just now",
        lease(RESTORE, renewed=-3600, observed=100),
        120,
        False,
        LockAction.BLOCKED,
        160,
    ),
    (
        "remote renewTime in the future, observed long ago",
        lease(RESTORE, renewed=3600),
        61,
        False,
        LockAction.WAIT_CONFIRM,
        None,
    ),
    # expired
    (
        "expired restore, job not confirmed",
        lease(RESTORE),
        60,
        False,
        LockAction.WAIT_CONFIRM,
        None,
    ),
    ("expired restore, job gone", lease(RESTORE), 60, True, LockAction.ACQUIRE_TAKEOVER, None),
    (
        "expired backup, job still running",
        lease(OTHER_BACKUP),
        3600,
        False,
        LockAction.WAIT_CONFIRM,
        None,
    ),
    (
        "expired backup, job terminal",
        lease(OTHER_BACKUP),
        3600,
        True,
        LockAction.ACQUIRE_TAKEOVER,
        None,
    ),
    (
        "expired upgrade: no job to check, expiry releases",
        lease(UPGRADE),
        61,
        False,
        LockAction.ACQUIRE_TAKEOVER,
        None,
    ),
    ("expired foreign identity", lease("whatever"), 61, False, LockAction.ACQUIRE_TAKEOVER, None),
    # bad durations count as one second
    ("zero duration", lease(RESTORE, duration=0), 1, False, LockAction.WAIT_CONFIRM, None),
    ("missing duration", lease(RESTORE, duration=None), 0.5, False, LockAction.BLOCKED, 1),
    ("negative duration", lease(UPGRADE, duration=-5), 1, False, LockAction.ACQUIRE_TAKEOVER, None),
]


@pytest.mark.parametrize(
    ("observed", "now", "finished", "action", "until"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_decide(
    observed: ObservedLease | None,
    now: float,
    finished: bool,
    action: LockAction,
    until: float | None,
) -> None:
    decision = decide(lease=observed, me=ME, now=s(now), previous_holder_finished=finished)
    assert decision.action is action, decision.message
    assert decision.until == (s(until) if until is not None else None)
    if observed is not None and observed.holder:
        assert decision.holder == parse_holder(observed.holder)
    if action in (LockAction.BLOCKED, LockAction.WAIT_CONFIRM):
        assert observed is not None
        assert observed.holder
        assert observed.holder in decision.message


def test_a_restarted_controller_recognises_its_own_run() -> None:
    """The identity is the run, not the process: after a restart (first sight = now) the
    lease of our own backup run is ours, not someone else's."""
    observed = lease(ME, renewed=-45, observed=0)
    assert decide(lease=observed, me=ME, now=s(0), previous_holder_finished=False).action is (
        LockAction.RENEW
    )


def test_blocked_holder_says_which_operation() -> None:
    decision = decide(lease=lease(RESTORE), me=ME, now=s(1), previous_holder_finished=False)
    assert decision.holder == Holder("restore", "prod-restore-1")


@pytest.mark.parametrize(
    ("op", "run", "identity"),
    [
        ("backup", "prod-202606011200", "backup/prod-202606011200"),
        ("restore", "r1", "restore/r1"),
        ("upgrade", "2.4.0-to-2.5.0", "upgrade/2.4.0-to-2.5.0"),
        ("pre-upgrade-check", "a:b_c.d", "pre-upgrade-check/a:b_c.d"),
        ("backup", "x" * 253, "backup/" + "x" * 253),
    ],
)
def test_holder_identity_round_trips(op: str, run: str, identity: str) -> None:
    assert holder_identity(op, run) == identity
    assert parse_holder(identity) == Holder(op, run)
    assert str(Holder(op, run)) == identity


@pytest.mark.parametrize(
    ("op", "run"),
    [
        ("", "r"),
        ("Backup", "r"),
        ("back/up", "r"),
        ("1backup", "r"),
        ("x" * 33, "r"),
        ("backup", ""),
        ("backup", "a/b"),
        ("backup", "a b"),
        ("backup", "-r"),
        ("backup", "x" * 254),
    ],
)
def test_holder_identity_refuses_bad_parts(op: str, run: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        holder_identity(op, run)


@pytest.mark.parametrize(
    ("identity", "parsed"),
    [
        (None, None),
        ("", None),
        ("node-1_abcd1234", Holder("", "node-1_abcd1234")),
        ("backup/", Holder("", "backup/")),
        ("/run", Holder("", "/run")),
        ("Backup/run", Holder("", "Backup/run")),
        ("backup/a/b", Holder("", "backup/a/b")),
    ],
)
def test_parse_holder_of_foreign_identities(identity: str | None, parsed: Holder | None) -> None:
    assert parse_holder(identity) == parsed
    if parsed is not None:
        assert str(parsed) == identity


def test_may_release_only_our_own() -> None:
    assert may_release(lease=lease(ME), me=ME)
    assert not may_release(lease=lease(RESTORE), me=ME)
    assert not may_release(lease=lease(""), me=ME)
    assert not may_release(lease=None, me=ME)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 6, 1, 12, 0, tzinfo=UTC), "2026-06-01T12:00:00.000000Z"),
        (
            datetime(2026, 6, 1, 14, 0, 0, 123, tzinfo=timezone(timedelta(hours=2))),
            "2026-06-01T12:00:00.000123Z",
        ),
        (datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=UTC), "2026-06-01T12:00:00.999999Z"),
    ],
)
def test_microtime_has_six_digits_and_a_zone(value: datetime, text: str) -> None:
    assert format_microtime(value) == text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)


def test_specs() -> None:
    created = acquire_spec(me=ME, now=T0, previous=None)
    assert created == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 60,
        "acquireTime": "2026-06-01T12:00:00.000000Z",
        "renewTime": "2026-06-01T12:00:00.000000Z",
        "leaseTransitions": 0,
    }
    taken = acquire_spec(me=ME, now=T0, previous=lease(RESTORE, transitions=4), duration_seconds=30)
    assert taken["leaseTransitions"] == 5
    assert taken["leaseDurationSeconds"] == 30
    after_release = acquire_spec(me=ME, now=T0, previous=lease("", transitions=5))
    assert after_release["leaseTransitions"] == 5
    assert renew_spec(me=ME, now=s(20)) == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 60,
        "renewTime": "2026-06-01T12:00:20.000000Z",
    }
    assert release_spec(now=s(30)) == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "renewTime": "2026-06-01T12:00:30.000000Z",
    }


def test_duration_of() -> None:
    assert duration_of(lease(ME, duration=15)) == timedelta(seconds=15)
    assert duration_of(lease(ME, duration=0)) == timedelta(seconds=1)
    assert duration_of(lease(ME, duration=None)) == timedelta(seconds=1)


def test_naive_times_and_empty_identity_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(lease=None, me=ME, now=datetime(2026, 1, 1), previous_holder_finished=False)
    naive = ObservedLease(
        holder=RESTORE,
        lease_duration_seconds=60,
        acquire_time=None,
        renew_time=datetime(2026, 1, 1),
        observed_at=T0,
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(lease=naive, me=ME, now=T0, previous_holder_finished=False)
    with pytest.raises(ValueError, match="holder identity"):
        decide(lease=None, me="", now=T0, previous_holder_finished=False)


def test_two_contenders_never_both_acquire_a_live_lease() -> None:
    """Whatever the timing, at most one party sees ACQUIRE_* for a lease held live by the
    other; CAS on resourceVersion settles simultaneous acquisitions of a free lease."""
    for now in (0, 10, 19.9, 20, 40, 59.9):
        held = lease(ME)
        other = decide(lease=held, me=RESTORE, now=s(now), previous_holder_finished=True)
        ours = decide(lease=held, me=ME, now=s(now), previous_holder_finished=True)
        assert other.action is LockAction.BLOCKED
        assert ours.action in (LockAction.RENEW, LockAction.HELD_BY_US)


def test_lease_labels() -> None:
    from controller.backup.decide.oplock import lease_labels

    assert lease_labels(cluster="prod") == {
        "app.kubernetes.io/managed-by": "openbao-backup",
        "backup.openbao.org/cluster": "prod",
        "backup.openbao.org/lock": "operation",
    }
