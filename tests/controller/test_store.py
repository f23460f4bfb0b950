from __future__ import annotations

import json
from typing import Any

import pytest

from controller.cache.store import (
    FrozenDict,
    JSONObject,
    Store,
    freeze,
    key_of,
    split_key,
    thaw,
)


def obj(name: str, ns: str | None = "ns", rv: str = "1", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "resourceVersion": rv,
        "labels": dict(labels),
        "managedFields": [{"manager": "kubectl"}],
    }
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": "v1", "kind": "Thing", "metadata": meta, "spec": {"items": [1, 2]}}


def by_cluster(o: JSONObject) -> list[str]:
    labels = o["metadata"].get("labels") or {}
    return [labels["cluster"]] if "cluster" in labels else []


def test_keys() -> None:
    assert key_of(obj("a")) == "ns/a"
    assert key_of(obj("node", ns=None)) == "node"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node") == ("", "node")
    with pytest.raises(ValueError, match=r"metadata\.name"):
        key_of({"metadata": {}})


def test_upsert_get_list_delete_and_managed_fields_stripped() -> None:
    s = Store()
    old, new = s._upsert(obj("a"))
    assert old is None
    assert "managedFields" not in new["metadata"]
    assert s.get("ns/a") == new
    assert len(s) == 1
    assert "ns/a" in s
    assert s.keys() == ["ns/a"]
    old, newer = s._upsert(obj("a", rv="2"))
    assert old == new
    assert newer["metadata"]["resourceVersion"] == "2"
    assert s._delete("ns/a") == newer
    assert s._delete("ns/a") is None
    assert s.get("ns/a") is None
    assert s.list() == []


def test_objects_handed_out_are_deep_frozen() -> None:
    s = Store()
    source = obj("a")
    s._upsert(source)
    got = s.get("ns/a")
    assert got is not None
    assert isinstance(got, FrozenDict)
    with pytest.raises(TypeError):
        got["spec"] = {}  # type: ignore[index]
    assert isinstance(got["spec"]["items"], tuple)
    # Mutating the input afterwards does not reach the cache either.
    source["spec"]["items"].append(3)
    assert got["spec"]["items"] == (1, 2)
    # thaw gives a mutable, JSON-serialisable deep copy.
    mutable = thaw(got)
    mutable["spec"]["items"].append(9)
    assert json.loads(json.dumps(mutable))["spec"]["items"] == [1, 2, 9]
    assert got["spec"]["items"] == (1, 2)


def test_freeze_is_idempotent_and_equality_works() -> None:
    f = freeze({"a": [{"b": 1}]})
    assert freeze(f) is f
    assert f == {"a": ({"b": 1},)}
    assert f != FrozenDict({"a": ()})
    assert "FrozenDict" in repr(f)


def test_indexes_follow_updates_and_deletes() -> None:
    s = Store(indexers={"cluster": by_cluster})
    s._upsert(obj("a", cluster="c1"))
    s._upsert(obj("b", cluster="c1"))
    s._upsert(obj("c", ns="other", cluster="c2"))
    s._upsert(obj("d"))
    assert [key_of(o) for o in s.by_index("cluster", "c1")] == ["ns/a", "ns/b"]
    assert s.index_keys("namespace", "other") == ["other/c"]
    s._upsert(obj("a", rv="2", cluster="c2"))  # moved to another cluster
    assert s.index_keys("cluster", "c1") == ["ns/b"]
    assert s.index_keys("cluster", "c2") == ["ns/a", "other/c"]
    s._delete("ns/b")
    assert s.by_index("cluster", "c1") == []
    assert s._indices["cluster"].get("c1") is None  # no empty buckets left behind
    with pytest.raises(KeyError):
        s.by_index("nope", "x")
    with pytest.raises(KeyError):
        s.index_keys("nope", "x")


def test_index_with_multiple_values_and_late_registration() -> None:
    s = Store()
    s._upsert(obj("a", x="1"))
    s._upsert(obj("b"))
    s.add_indexer("labels", lambda o: sorted(o["metadata"]["labels"]) * 2)  # dup values
    assert s.index_keys("labels", "x") == ["ns/a"]
    with pytest.raises(ValueError, match="exists"):
        s.add_indexer("labels", by_cluster)


def test_keys_in_namespaces() -> None:
    s = Store()
    s._upsert(obj("a", ns="n1"))
    s._upsert(obj("b", ns="n2"))
    s._upsert(obj("c", ns=None))
    assert s._keys_in(["n1"]) == {"n1/a"}
    assert s._keys_in(None) == {"n1/a", "n2/b", "c"}
