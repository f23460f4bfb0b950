"""LaunchSlots.wake (issue 13): which waiting launches a freed executor slot wakes, over a real
records cache (the informer's Store with the backup manager's indexes)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.backup.act.deps import BY_PHASE, INDEXERS
from controller.backup.act.fresh import FreshView
from controller.backup.act.slots import LaunchSlots
from controller.backup.decide.spread import Waiting, admissible
from controller.cache.store import Store
from controller.kube.resources import OPENBAO_BACKUP

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
T1 = {"provider": "s3", "endpoint": "http://s3.one", "bucket": "b"}
T2 = {"provider": "s3", "endpoint": "http://s3.two", "bucket": "b"}
_rv = 0


def record(name: str, phase: str, target: dict[str, Any] | None = None) -> dict[str, Any]:
    global _rv
    _rv += 1
    status: dict[str, Any] = {"phase": phase}
    if target is not None:
        status["target"] = target
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": str(_rv)},
        "spec": {"cluster": name},
        "status": status,
    }


def slots(store: Store, *, total: int = 0, per_target: int = 0) -> LaunchSlots:
    view = FreshView(cache=store, indexers=INDEXERS[OPENBAO_BACKUP])
    return LaunchSlots(backups=view, by_phase=BY_PHASE, max_total=total, max_per_target=per_target)


def ask(s: LaunchSlots, name: str, minute: int, target: dict[str, Any] = T1) -> bool:
    return s.try_admit(
        record=f"ns/{name}",
        cluster=f"ns/{name}",
        due=T0 + dt.timedelta(minutes=minute),
        target=target,
        now=T0,
    ).admitted


def test_a_freed_slot_wakes_the_oldest_waiting_launch_once() -> None:
    store = Store(indexers=INDEXERS[OPENBAO_BACKUP])
    store._upsert(record("run", "Running", T1))
    for name in ("old", "new"):
        store._upsert(record(name, "Pending"))
    s = slots(store, total=1)
    assert not ask(s, "new", 2)
    assert not ask(s, "old", 1)
    assert s.wake(cluster="ns/run", mark=s.mark(), now=T0) == ()  # full: nobody woken

    store._upsert(record("run", "Succeeded", T1))  # its result recorded: the slot frees
    assert s.wake(cluster="ns/run", mark=s.mark(), now=T0) == ("ns/old",)
    assert s.wake(cluster="ns/run", mark=s.mark(), now=T0) == ()  # woken once, slot kept
    assert len(s) == 2  # both still wait until their clusters ask again

    mark = s.mark()
    assert ask(s, "old", 1)  # the woken cluster's reconcile takes the slot
    with s.admitted("ns/old"):
        assert s.wake(cluster="ns/old", mark=mark, now=T0) == ()
    assert len(s) == 1


def test_a_woken_cluster_that_does_not_ask_again_passes_the_slot_on() -> None:
    store = Store(indexers=INDEXERS[OPENBAO_BACKUP])
    for name in ("old", "new"):
        store._upsert(record(name, "Pending"))
    store._upsert(record("run", "Running", T1))
    s = slots(store, total=1)
    assert not ask(s, "old", 1)
    assert not ask(s, "new", 2)
    store._upsert(record("run", "Succeeded", T1))
    assert s.wake(cluster="ns/run", mark=s.mark(), now=T0) == ("ns/old",)
    # old's reconcile did not ask (its launch was blocked by something else, say): it leaves
    # the queue and the slot it was woken for goes to the next
    assert s.wake(cluster="ns/old", mark=s.mark(), now=T0) == ("ns/new",)
    assert len(s) == 1


def test_the_per_target_cap_wakes_only_launches_whose_target_has_room() -> None:
    store = Store(indexers=INDEXERS[OPENBAO_BACKUP])
    store._upsert(record("busy", "Running", T1))
    for name in ("same-old", "same-new", "other"):
        store._upsert(record(name, "Pending"))
    s = slots(store, per_target=1)
    assert not ask(s, "same-old", 1, T1)
    assert not ask(s, "same-new", 2, T1)
    assert ask(s, "other", 3, T2)  # another target: starts at once
    assert s.wake(cluster="ns/busy", mark=s.mark(), now=T0) == ()  # T1 still full
    store._upsert(record("busy", "Succeeded", T1))
    assert s.wake(cluster="ns/busy", mark=s.mark(), now=T0) == ("ns/same-old",)


def test_admissible_is_what_admit_lets_start() -> None:
    def w(minute: int, target: str) -> Waiting:
        return Waiting(due=T0 + dt.timedelta(minutes=minute), record=f"ns/{minute}", target=target)

    queue = [w(3, "a"), w(1, "a"), w(2, "b"), w(4, "c")]
    got = admissible(waiting=queue, running=["a"], max_total=3, max_per_target=1)
    assert got == [w(2, "b"), w(4, "c")]  # a is full; the global cap leaves two slots
    assert admissible(waiting=queue, running=[], max_total=2, max_per_target=0) == [
        w(1, "a"),
        w(2, "b"),
    ]
