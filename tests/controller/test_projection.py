"""The cache's projections and compact frozen objects (pure: no server)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.cache.frozen import (
    TRIPWIRE_ENV,
    DroppedFieldRead,
    FrozenDict,
    freeze,
    shape_count,
    thaw,
)
from controller.cache.informer import release_freed_heap
from controller.cache.projection import (
    CUSTOM_RESOURCE,
    JOB_PROJECTION,
    LAST_APPLIED,
    POD_PROJECTION,
    PROJECTION_ENV,
    PROJECTIONS,
    WHOLE,
    projection_for,
    tripwire_enabled,
)
from controller.cache.store import Store
from controller.kube.resources import (
    JOB,
    LEASE,
    NAMESPACE,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    POD,
)

MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {}}]


def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "resourceVersion": "42",
        "labels": {"app.kubernetes.io/managed-by": "openbao-backup"},
        "annotations": {LAST_APPLIED: '{"big": "copy"}', "backup.openbao.org/trigger": "1"},
        "finalizers": ["backup.openbao.org/result"],
        "ownerReferences": [{"kind": "OpenBaoBackup", "name": "r", "uid": "u", "controller": True}],
        "deletionTimestamp": "2026-12-06T12:00:00Z",
        "managedFields": MANAGED,
        **extra,
    }


def job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("j"),
        "spec": {
            "activeDeadlineSeconds": 600,
            "backoffLimit": 0,
            "template": {"spec": {"containers": [{"name": "executor", "env": []}]}},
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("p", creationTimestamp="2026-12-06T12:00:00Z"),
        "spec": {"containers": [{"name": "executor", "image": "x"}], "nodeName": "n"},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "message": '{"outcome":"ok"}'}}}
            ],
        },
    }


def backup() -> dict[str, Any]:
    return {
        "apiVersion": "backup.openbao.org/v1alpha1",
        "kind": "OpenBaoBackup",
        "metadata": meta("b", generation=2),
        "spec": {"cluster": "c", "trigger": "manual", "deletionPolicy": "Delete"},
        "status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def lease() -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta("l"),
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 60, "leaseTransitions": 2},
    }


def test_every_cached_resource_has_its_projection() -> None:
    assert PROJECTIONS[OPENBAO_CLUSTER] is CUSTOM_RESOURCE
    assert PROJECTIONS[OPENBAO_BACKUP] is CUSTOM_RESOURCE
    assert PROJECTIONS[OPENBAO_RESTORE] is CUSTOM_RESOURCE
    assert PROJECTIONS[JOB] is JOB_PROJECTION
    assert PROJECTIONS[POD] is POD_PROJECTION
    assert PROJECTIONS[LEASE] is WHOLE
    assert projection_for(NAMESPACE) is WHOLE  # anything else keeps whole objects


def expected_metadata(name: str, *, last_applied: bool = False, **extra: Any) -> dict[str, Any]:
    m = meta(name, **extra)
    del m["managedFields"]
    if not last_applied:
        del m["annotations"][LAST_APPLIED]
    return m


def test_custom_resources_keep_metadata_spec_and_status_whole() -> None:
    source = backup()
    before = copy.deepcopy(source)
    got = thaw(CUSTOM_RESOURCE.apply(source))
    assert source == before  # the input is never mutated
    assert got == {**before, "metadata": expected_metadata("b", generation=2)}


def test_jobs_drop_only_the_pod_template() -> None:
    got = thaw(JOB_PROJECTION.apply(job()))
    assert got["metadata"] == expected_metadata("j")
    assert got["spec"] == {"activeDeadlineSeconds": 600, "backoffLimit": 0}
    assert got["status"] == job()["status"]


def test_pods_drop_spec_and_keep_status_with_the_termination_message() -> None:
    got = thaw(POD_PROJECTION.apply(pod()))
    assert "spec" not in got
    assert got["status"] == pod()["status"]
    assert got["metadata"] == expected_metadata("p", creationTimestamp="2026-12-06T12:00:00Z")


def test_leases_keep_everything_but_managed_fields() -> None:
    # The operation lock PUTs the cached Lease back: nothing else may be lost.
    got = thaw(WHOLE.apply(lease()))
    assert got == {**lease(), "metadata": expected_metadata("l", last_applied=True)}


def test_projection_off_keeps_whole_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROJECTION_ENV, "off")
    assert projection_for(POD) is WHOLE
    assert "spec" in projection_for(POD).apply(pod())


def test_tripwire_fails_a_reader_of_a_dropped_field() -> None:
    got = POD_PROJECTION.apply(pod(), tripwire=True)
    with pytest.raises(DroppedFieldRead, match=r"<object>\.spec"):
        got.get("spec")
    with pytest.raises(DroppedFieldRead):
        _ = "spec" in got
    with pytest.raises(DroppedFieldRead, match=r"metadata\.managedFields"):
        _ = got["metadata"]["managedFields"]
    with pytest.raises(DroppedFieldRead, match=r"metadata\.annotations\.kubectl"):
        got["metadata"]["annotations"].get(LAST_APPLIED)
    # What is kept reads as usual, and thaw/iteration behave as if the fields were absent.
    assert got["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert got["metadata"]["annotations"]["backup.openbao.org/trigger"] == "1"
    assert set(got) == {"apiVersion", "kind", "metadata", "status"}
    assert thaw(got) == thaw(POD_PROJECTION.apply(pod()))
    j = JOB_PROJECTION.apply(job(), tripwire=True)
    assert j["spec"]["activeDeadlineSeconds"] == 600
    with pytest.raises(DroppedFieldRead, match=r"spec\.template"):
        j["spec"]["template"]


def test_frozen_objects_are_read_only_and_compare_by_content() -> None:
    obj = freeze(backup())
    assert isinstance(obj, FrozenDict)
    with pytest.raises(TypeError):
        obj["spec"] = {}  # type: ignore[index]
    with pytest.raises(AttributeError):
        obj.pop("spec")  # type: ignore[attr-defined]
    assert isinstance(obj["metadata"]["finalizers"], tuple)
    assert obj == freeze(backup())
    assert freeze({"a": {"b": 1}}) == {"a": {"b": 1}}  # equal to any Mapping of equal content
    assert freeze({"a": [1]}) != {"a": [1]}  # arrays are tuples, as before
    assert obj != freeze(lease())
    assert obj.get("nope", 7) == 7
    assert "spec" in obj and "nope" not in obj
    assert len(obj) == 5 and list(obj) == list(backup())
    with pytest.raises(TypeError):
        hash(obj)
    mutable = thaw(obj)
    mutable["spec"]["cluster"] = "other"
    assert obj["spec"]["cluster"] == "c"
    assert json.loads(json.dumps(thaw(obj))) == backup()
    assert copy.deepcopy(obj) == obj
    assert freeze({}) == {} and freeze([]) == ()


def test_frozen_objects_share_key_shapes_and_strings() -> None:
    a = freeze(json.loads(json.dumps(backup())))
    b = freeze(json.loads(json.dumps(backup())))
    assert a._shape is b._shape  # one key tuple for every mapping with these keys
    assert a["metadata"]._shape is b["metadata"]._shape
    assert a["status"]["phase"] is b["status"]["phase"]  # repeated values are interned
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
    assert a["metadata"]["uid"] is not b["metadata"]["uid"]  # unique values are not
    long = "x" * 200
    assert freeze({"message": long})["message"] is long  # too long to be worth interning
    assert shape_count() >= 1
    # A shaped mapping costs its values tuple, not a hash table.
    small = freeze({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6})
    assert sys.getsizeof(small) + sys.getsizeof(small._values) < sys.getsizeof(dict(small))


def test_store_prepare_reuses_the_cached_object_at_the_same_resource_version() -> None:
    s = Store(projection=POD_PROJECTION)
    _, stored = s._upsert(pod())
    assert "spec" not in stored and "managedFields" not in stored["metadata"]
    assert s.prepare(pod()) is stored  # unchanged: a relist holds no second copy
    newer = pod()
    newer["metadata"]["resourceVersion"] = "43"
    prepared = s.prepare(newer)
    assert prepared is not stored and prepared["metadata"]["resourceVersion"] == "43"
    old, new = s._upsert(prepared)
    assert old is stored and new is prepared and s.get("ns/p") is prepared


def test_tripwire_collects_dropped_reads_in_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hits = tmp_path / "hits.txt"
    monkeypatch.setenv(TRIPWIRE_ENV, str(hits))
    assert tripwire_enabled()
    store = Store(projection=JOB_PROJECTION)  # the tripwire comes from the environment
    _, cached = store._upsert(job())
    assert cached["spec"]["backoffLimit"] == 0
    assert not hits.exists()
    with pytest.raises(DroppedFieldRead):
        cached["spec"].get("template")
    assert hits.read_text().splitlines() == [
        "spec.template is dropped by the cache's projection but was read "
        "(keep it in controller/cache/projection.py)"
    ]


def test_freed_heap_pages_go_back_to_the_os_after_a_list() -> None:
    # glibc (this machine, and the product image) has malloc_trim.
    assert release_freed_heap() is True
