"""decide.spread: the per-cluster jitter offset and launch admission under caps (issue 13)."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from controller.backup.decide.spread import Waiting, admit, offset_seconds

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def offset(name: str, spread: int = 600, deadline: int | None = None, ns: str = "ns") -> int:
    return offset_seconds(
        namespace=ns, name=name, spread_seconds=spread, starting_deadline_seconds=deadline
    )


@pytest.mark.parametrize(
    ("spread", "deadline", "bound"),
    [(0, None, 0), (600, None, 600), (600, 3600, 600), (600, 300, 150), (600, 1, 0), (1, None, 1)],
)
def test_offsets_stay_inside_the_window_and_half_the_deadline(
    spread: int, deadline: int | None, bound: int
) -> None:
    for i in range(200):
        got = offset(f"c{i}", spread, deadline)
        assert 0 <= got < max(bound, 1)
        assert got == offset(f"c{i}", spread, deadline)  # deterministic


def test_offsets_are_stable_values_not_draws() -> None:
    """The same cluster gets the same offset in every process and release (a SHA-256 of
    ``namespace/name``, not a seeded RNG or Python's salted ``hash``): the values are pinned."""
    assert [offset("vault"), offset("vault", ns="other"), offset("prod")] == [234, 582, 514]


def test_a_thousand_clusters_spread_evenly() -> None:
    got = [offset(f"cluster-{i:04d}", 600) for i in range(1000)]
    per_minute = [sum(1 for o in got if m * 60 <= o < (m + 1) * 60) for m in range(10)]
    assert min(per_minute) > 60 and max(per_minute) < 140, per_minute
    assert abs(statistics.mean(got) - 300) < 30


def w(name: str, minute: int, target: str = "s3/a") -> Waiting:
    return Waiting(due=T0 + dt.timedelta(minutes=minute), record=f"ns/{name}", target=target)


@pytest.mark.parametrize(
    ("candidate", "waiting", "running", "total", "per", "want"),
    [
        # no caps: always admitted
        (w("a", 0), [w("b", -5)], ["s3/a"] * 50, 0, 0, (True, 0)),
        # room for one: the oldest waiting launch takes it
        (w("a", 0), [w("b", -5)], ["s3/a"] * 9, 10, 0, (False, 1)),
        (w("b", -5), [w("a", 0)], ["s3/a"] * 9, 10, 0, (True, 0)),
        # full: everyone waits, in due order
        (w("a", 0), [w("b", -5), w("c", 3)], ["s3/a"] * 10, 10, 0, (False, 2)),
        (w("c", 3), [w("b", -5), w("a", 0)], ["s3/a"] * 10, 10, 0, (False, 3)),
        # same due time: by name
        (w("b", 0), [w("a", 0)], ["s3/a"] * 9, 10, 0, (False, 1)),
        # a full target does not block an older launch to another target
        (w("x", 0, "gcs/b"), [w("b", -5)], ["s3/a"] * 2, 10, 2, (True, 0)),
        (w("b", -5), [w("x", 0, "gcs/b")], ["s3/a"] * 2, 10, 2, (False, 1)),
        # per-target room goes to the oldest of that target
        (w("a", 0), [w("b", -5)], ["s3/a"], 10, 2, (False, 1)),
        (w("b", -5), [w("a", 0)], ["s3/a"], 10, 2, (True, 0)),
    ],
)
def test_admission_oldest_due_first_under_both_caps(
    candidate: Waiting,
    waiting: list[Waiting],
    running: list[str],
    total: int,
    per: int,
    want: tuple[bool, int],
) -> None:
    got = admit(
        candidate=candidate, waiting=waiting, running=running, max_total=total, max_per_target=per
    )
    assert (got.admitted, got.position) == want, got
    assert got.admitted or got.reason


def test_every_waiting_launch_is_served_once_slots_free() -> None:
    """Draining a queue of 25 with a cap of 4: each round admits the 4 oldest, none is
    skipped or served twice."""
    queue = [w(f"r{i:02d}", i % 7) for i in range(25)]
    served: list[Waiting] = []
    while queue:
        admitted = [
            item
            for item in queue
            if admit(
                candidate=item, waiting=queue, running=[], max_total=4, max_per_target=0
            ).admitted
        ]
        assert len(admitted) == min(4, len(queue))
        assert sorted(admitted) == sorted(queue)[: len(admitted)]
        served += admitted
        queue = [q for q in queue if q not in admitted]
    assert len(served) == 25 and len(set(served)) == 25
