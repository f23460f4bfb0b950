"""act.fresh: the controller reads its own writes before the watch delivers them."""

from __future__ import annotations

from typing import Any

from controller.backup.act.fresh import FORGET_AFTER_SECONDS, FreshView
from controller.cache.store import Store


def obj(name: str, rv: str, cluster: str = "c", phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
        "spec": {"cluster": cluster},
        "status": {"phase": phase},
    }


def by_cluster(o: Any) -> list[str]:
    return [f"{o['metadata']['namespace']}/{o['spec']['cluster']}"]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def view() -> tuple[Store, FreshView, Clock]:
    store = Store(indexers={"cluster": by_cluster})
    clock = Clock()
    return store, FreshView(cache=store, indexers={"cluster": by_cluster}, clock=clock), clock


def test_a_created_object_is_seen_before_the_cache_has_it() -> None:
    _store, fresh, _ = view()
    fresh.remember(obj("r1", "10"), created=True)
    assert fresh.get("ns/r1") is not None
    assert [o["metadata"]["name"] for o in fresh.by_index("cluster", "ns/c")] == ["r1"]
    assert fresh.by_index("cluster", "ns/other") == []
    assert len(fresh) == 1


def test_our_newer_write_wins_until_the_cache_catches_up() -> None:
    store, fresh, _ = view()
    store._upsert(obj("r1", "10"))
    fresh.remember(obj("r1", "11", phase="Running"))
    assert fresh.get("ns/r1")["status"]["phase"] == "Running"  # type: ignore[index]
    assert fresh.by_index("cluster", "ns/c")[0]["status"]["phase"] == "Running"
    store._upsert(obj("r1", "11", phase="Running"))
    assert fresh.get("ns/r1")["metadata"]["resourceVersion"] == "11"  # type: ignore[index]
    store._upsert(obj("r1", "12", phase="Succeeded"))
    assert fresh.get("ns/r1")["status"]["phase"] == "Succeeded"  # type: ignore[index]


def test_an_updated_object_deleted_from_the_cache_is_not_resurrected() -> None:
    store, fresh, _ = view()
    store._upsert(obj("c1", "10"))
    fresh.remember(obj("c1", "11"))
    assert fresh.get("ns/c1") is not None
    store._delete("ns/c1")
    assert fresh.get("ns/c1") is None
    assert fresh.list() == []


def test_a_newer_cache_version_beats_our_older_write() -> None:
    store, fresh, _ = view()
    fresh.remember(obj("r1", "11", phase="Running"), created=True)
    store._upsert(obj("r1", "15", phase="Failed"))
    assert fresh.get("ns/r1")["status"]["phase"] == "Failed"  # type: ignore[index]
    assert [o["status"]["phase"] for o in fresh.list()] == ["Failed"]


def test_a_remembered_object_is_forgotten_after_a_while() -> None:
    _store, fresh, clock = view()
    fresh.remember(obj("ghost", "10"), created=True)
    clock.t = FORGET_AFTER_SECONDS + 1
    assert fresh.get("ns/ghost") is None
    assert fresh.list() == []


def test_remembered_objects_are_frozen_copies() -> None:
    _, fresh, _ = view()
    original = obj("r1", "10")
    fresh.remember(original, created=True)
    original["status"]["phase"] = "Mutated"
    assert fresh.get("ns/r1")["status"]["phase"] == "Pending"  # type: ignore[index]
