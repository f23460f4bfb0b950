from __future__ import annotations

import asyncio
import copy
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from controller import errors
from controller.kube.client import KubeApi
from controller.kube.resources import format_microtime
from controller.leaderelection.elector import LeaderElector
from controller.leaderelection.lease import (
    Decision,
    LeaseRecord,
    Observation,
    decide,
    is_expired,
    next_record,
    observe,
    parse_microtime,
    release_record,
)
from controller.queue.clock import FakeClock
from tests.controller.helpers import settle

ME, OTHER = "me", "other"
T0 = datetime(2030, 1, 2, 3, 4, 5, 600, tzinfo=UTC)


def rec(holder: str = OTHER, duration: int = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(
        holder=holder, duration=duration, acquire_time=T0, renew_time=T0, transitions=transitions
    )


# -- MicroTime -----------------------------------------------------------------------------


def test_microtime_format_is_exact() -> None:
    assert format_microtime(T0) == "2030-01-02T03:04:05.000600Z"
    assert format_microtime(datetime(2030, 1, 1, tzinfo=UTC)) == "2030-01-01T00:00:00.000000Z"
    plus2 = timezone(timedelta(hours=2))
    assert format_microtime(datetime(2030, 1, 1, 2, tzinfo=plus2)) == (
        "2030-01-01T00:00:00.000000Z"
    )
    with pytest.raises(ValueError, match="naive"):
        format_microtime(datetime(2030, 1, 1))


def test_microtime_parse_round_trip() -> None:
    assert parse_microtime(format_microtime(T0)) == T0
    assert parse_microtime("2030-01-02T03:04:05Z") == T0.replace(microsecond=0)
    assert parse_microtime(None) is None
    assert parse_microtime("garbage") is None


def test_record_spec_round_trip() -> None:
    r = rec()
    spec = r.to_spec()
    assert spec == {
        "holderIdentity": OTHER,
        "leaseDurationSeconds": 15,
        "leaseTransitions": 3,
        "acquireTime": "2030-01-02T03:04:05.000600Z",
        "renewTime": "2030-01-02T03:04:05.000600Z",
    }
    assert LeaseRecord.from_spec(spec) == r
    assert LeaseRecord.from_spec(None) == LeaseRecord()
    assert isinstance(spec["leaseDurationSeconds"], int)


# -- observation and expiry ----------------------------------------------------------------


def test_first_sight_counts_as_now() -> None:
    obs = observe(None, rec(), now=100.0)
    assert obs.observed_at == 100.0
    assert not is_expired(obs, now=114.99)
    assert is_expired(obs, now=115.0)


def test_unchanged_record_keeps_its_observation_time() -> None:
    first = observe(None, rec(), now=100.0)
    again = observe(first, rec(), now=110.0)
    assert again.observed_at == 100.0
    assert is_expired(again, now=115.0)


def test_any_change_restarts_the_clock() -> None:
    first = observe(None, rec(), now=100.0)
    for changed in (
        rec(holder="x"),
        rec(duration=20),
        rec(transitions=4),
        LeaseRecord(
            holder=OTHER,
            duration=15,
            acquire_time=T0,
            renew_time=T0 + timedelta(seconds=1),
            transitions=3,
        ),
    ):
        obs = observe(first, changed, now=110.0)
        assert obs.observed_at == 110.0
        assert not is_expired(obs, now=124.0)


def test_remote_timestamps_do_not_matter() -> None:
    """A renewTime far in the past (skewed clock) does not make a lease look expired."""
    stale = LeaseRecord(holder=OTHER, duration=15, renew_time=T0 - timedelta(days=3))
    obs = observe(None, stale, now=100.0)
    assert decide(obs, identity=ME, now=101.0) is Decision.WAIT


# -- the decision table, exhaustively ------------------------------------------------------


@pytest.mark.parametrize(
    ("exists", "holder", "age", "expected"),
    [
        (exists, holder, age, expected)
        for exists, holder, age in itertools.product(
            (False, True), ("", ME, OTHER), (0.0, 14.999, 15.0, 1000.0)
        )
        for expected in [
            Decision.CREATE
            if not exists
            else Decision.RENEW
            if holder == ME
            else Decision.ACQUIRE
            if holder == "" or age >= 15.0
            else Decision.WAIT
        ]
    ],
)
def test_decide(exists: bool, holder: str, age: float, expected: Decision) -> None:
    obs = Observation(record=rec(holder=holder), observed_at=100.0) if exists else None
    assert decide(obs, identity=ME, now=100.0 + age) is expected


def test_zero_duration_record_is_expired_at_once() -> None:
    obs = observe(None, rec(duration=0), now=5.0)
    assert decide(obs, identity=ME, now=5.0) is Decision.ACQUIRE


# -- records we write ----------------------------------------------------------------------


def test_create_starts_at_zero_transitions() -> None:
    r = next_record(None, identity=ME, duration=15.0, now=T0)
    assert r == LeaseRecord(holder=ME, duration=15, acquire_time=T0, renew_time=T0, transitions=0)


@pytest.mark.parametrize("previous", ["", OTHER])
def test_taking_over_increments_transitions(previous: str) -> None:
    now = T0 + timedelta(seconds=30)
    r = next_record(rec(holder=previous, transitions=3), identity=ME, duration=15.0, now=now)
    assert (r.holder, r.transitions, r.acquire_time, r.renew_time) == (ME, 4, now, now)


def test_renewing_keeps_acquire_time_and_transitions() -> None:
    now = T0 + timedelta(seconds=2)
    r = next_record(rec(holder=ME, transitions=7), identity=ME, duration=15.4, now=now)
    assert (r.holder, r.transitions, r.acquire_time, r.renew_time, r.duration) == (
        ME,
        7,
        T0,
        now,
        15,
    )


def test_release_record() -> None:
    now = T0 + timedelta(seconds=5)
    r = release_record(rec(holder=ME, transitions=7), now=now)
    assert r == LeaseRecord(holder="", duration=1, acquire_time=now, renew_time=now, transitions=7)


# -- the elector against an in-memory API server (compare-and-swap semantics) ---------------


class FakeLeaseApi:
    """One Lease, with resourceVersion checks like the API server; can be made to fail."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.failing: set[str] = set()  # identities whose calls fail (partitioned)
        self.writes: list[dict[str, Any]] = []

    def for_identity(self, identity: str) -> KubeApi:
        api = self

        class View:
            async def get(self, *, path: str) -> dict[str, Any]:
                api.check(identity)
                if api.lease is None:
                    raise errors.NotFound("no lease", status=404)
                return copy.deepcopy(api.lease)

            async def create(self, *, path: str, body: dict[str, Any]) -> dict[str, Any]:
                api.check(identity)
                if api.lease is not None:
                    raise errors.AlreadyExists("exists", status=409, reason="AlreadyExists")
                return api.store(body)

            async def replace(self, *, path: str, body: dict[str, Any]) -> dict[str, Any]:
                api.check(identity)
                assert api.lease is not None
                if (
                    body["metadata"].get("resourceVersion")
                    != api.lease["metadata"]["resourceVersion"]
                ):
                    raise errors.Conflict("conflict", status=409, reason="Conflict")
                return api.store(body)

        return cast(KubeApi, View())

    def check(self, identity: str) -> None:
        if identity in self.failing:
            raise errors.Unavailable("partitioned")

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = stored
        self.writes.append(copy.deepcopy(stored["spec"]))
        return copy.deepcopy(stored)

    @property
    def holder(self) -> str:
        return str(self.lease["spec"]["holderIdentity"]) if self.lease else ""


def elector(api: FakeLeaseApi, identity: str, clock: FakeClock, events: list[str]) -> LeaderElector:
    return LeaderElector(
        api=api.for_identity(identity),
        namespace="ns",
        name="lock",
        identity=identity,
        clock=clock,
        on_started_leading=lambda: events.append(f"{identity}:start"),
        on_stopped_leading=lambda: events.append(f"{identity}:stop"),
    )


async def advance(clock: FakeClock, seconds: float, step: float = 0.25) -> None:
    for _ in range(int(seconds / step)):
        clock.step(step)
        await settle(20)


async def test_elector_failover_and_release() -> None:
    clock, api = FakeClock(), FakeLeaseApi()
    events: list[str] = []
    a, b = elector(api, "a", clock, events), elector(api, "b", clock, events)
    ta = asyncio.create_task(a.run())
    await settle(20)
    assert api.holder == "a"
    assert a.is_leader
    assert events == ["a:start"]
    assert api.writes[0]["leaseTransitions"] == 0
    tb = asyncio.create_task(b.run())
    await advance(clock, 20)
    assert not b.is_leader
    assert api.holder == "a"

    api.failing.add("a")  # a is partitioned from the API server
    partitioned_at = clock.monotonic()
    await advance(clock, 10.5)
    assert ta.done()
    assert isinstance(ta.exception(), errors.LeadershipLost)
    assert events == ["a:start", "a:stop"]
    a_stopped = clock.monotonic()
    assert a_stopped - partitioned_at <= 10.5
    assert not b.is_leader  # b judges expiry from its own observation: 15 s
    await advance(clock, 8)
    assert b.is_leader
    assert api.holder == "b"
    assert events[-1] == "b:start"
    assert api.writes[-1]["leaseTransitions"] == 1

    assert await b.release()
    assert api.holder == ""
    assert api.lease is not None
    assert api.lease["spec"]["leaseDurationSeconds"] == 1
    assert api.lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)

    api.failing.clear()
    c = elector(api, "c", clock, events)
    tc = asyncio.create_task(c.run())
    await settle(20)
    assert c.is_leader, "an empty holder is taken at once"
    assert api.writes[-1]["leaseTransitions"] == 2
    assert not await a.release()  # not the holder: writes nothing
    tc.cancel()
    await asyncio.gather(tc, return_exceptions=True)


async def test_elector_stops_when_another_holder_appears() -> None:
    clock, api = FakeClock(), FakeLeaseApi()
    events: list[str] = []
    a = elector(api, "a", clock, events)
    ta = asyncio.create_task(a.run())
    await settle(20)
    assert a.is_leader
    assert api.lease is not None
    api.store({**api.lease, "spec": {**api.lease["spec"], "holderIdentity": "intruder"}})
    await advance(clock, 2.5)
    assert ta.done()
    assert isinstance(ta.exception(), errors.LeadershipLost)


async def test_elector_rejects_bad_timings() -> None:
    with pytest.raises(errors.ConfigError):
        LeaderElector(
            api=FakeLeaseApi().for_identity("x"),
            namespace="n",
            name="l",
            identity="x",
            lease_duration=10,
            renew_deadline=10,
        )


async def test_holds_lease_now_goes_stale_without_the_renew_loop_running() -> None:
    """A paused process wakes with overdue timers: the guard is false before any renewal."""
    clock, api = FakeClock(), FakeLeaseApi()
    events: list[str] = []
    a = elector(api, "a", clock, events)
    assert not a.holds_lease_now()
    ta = asyncio.create_task(a.run())
    await settle(20)
    assert a.holds_lease_now()
    clock.step(9.9)  # no await: the renew loop has not had a chance to run
    assert a.holds_lease_now()
    clock.step(0.2)
    assert not a.holds_lease_now()
    assert a.is_leader  # the loop has not noticed yet, the guard has
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
