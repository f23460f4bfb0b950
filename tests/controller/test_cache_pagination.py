"""The informer's paginated list and projections against the real kube-apiserver."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Sequence
from typing import Any, cast

import pytest
from devenv.controlplane import ControlPlane

from controller.cache.informer import Informer
from controller.cache.projection import LAST_APPLIED
from controller.cache.reflector import WatchOptions
from controller.cache.store import JSONObject, thaw
from controller.kube.client import KubeApi, KubeClients
from controller.kube.resources import JOB, LEASE, MANAGED_BY_SELECTOR, OPENBAO_BACKUP, POD
from tests.controller.conftest import Crd
from tests.controller.test_informer_integration import (
    FAST,
    Recorder,
    converged,
    running,
    widget,
)

pytestmark = pytest.mark.integration

PAGE = 2
EARLY_REVISION = 2
"""An etcd revision from the control plane's first second: older than any watch cache."""


class Paging:
    """The real API, recording each list request and how many objects were prepared by then;
    ``before_continue`` runs once, just before the first request that carries a continue."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self.lists: list[tuple[str, int]] = []  # (continue token or "", prepared so far)
        self.prepared = 0
        self.before_continue: Any = None
        self.rewind_continue_to = 0  # rewrite the next continue token to this revision

    async def request(
        self, *, method: str, path: str, query: Sequence[tuple[str, str]] = (), **kw: Any
    ) -> dict[str, Any]:
        cont = dict(query).get("continue", "")
        if method == "GET" and "watch" not in dict(query):
            self.lists.append((cont, self.prepared))
            if cont and self.before_continue is not None:
                hook, self.before_continue = self.before_continue, None
                await hook()
            if cont and self.rewind_continue_to:
                cont = rewound(cont, self.rewind_continue_to)
                self.rewind_continue_to = 0
                query = [(k, cont if k == "continue" else v) for k, v in query]
        return await self._api.request(method=method, path=path, query=query, **kw)

    def stream(self, **kw: Any) -> Any:
        return self._api.stream(**kw)


def rewound(token: str, revision: int) -> str:
    """The continue token for the same next key at an older revision (its format:
    base64url of ``{"v": "meta.k8s.io/v1", "rv": N, "start": KEY}``)."""
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert data["rv"] > revision, data
    data["rv"] = revision
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def paged_informer(api: KubeApi, **kw: Any) -> tuple[Informer, Paging]:
    paging = Paging(api)
    informer = Informer(
        api=cast(KubeApi, paging), options=WatchOptions(page_size=PAGE, **_fast()), **kw
    )
    original = informer.prepare

    def counting(obj: dict[str, Any]) -> JSONObject:
        paging.prepared += 1
        return original(obj)

    informer.prepare = counting  # type: ignore[method-assign]
    return informer, paging


def _fast() -> dict[str, Any]:
    return {
        "backoff_initial": FAST.backoff_initial,
        "backoff_max": FAST.backoff_max,
        "inactivity_timeout": FAST.inactivity_timeout,
    }


async def test_the_initial_list_is_paginated_and_prepared_page_by_page(
    clients: KubeClients, widget_crd: Crd, test_namespace: str
) -> None:
    res, ns, api = widget_crd.resource, test_namespace, clients.api
    for i in range(5):
        await api.create(path=res.path(namespace=ns), body=widget(res, f"w{i}", n=i))
    informer, paging = paged_informer(clients.watch, resource=res, namespaces=[ns])
    rec = Recorder(informer)
    async with running(informer):
        await converged(rec, informer, api, res, ns)
        stats = informer.stats[0]
        assert stats.pages == 3  # 2 + 2 + 1
        # Each page was projected and frozen before the next one was asked for: the raw
        # objects of one page at most are alive beside the cache.
        assert paging.lists[0] == ("", 0)
        assert [prepared for _, prepared in paging.lists] == [0, 2, 4]
        assert all(token for token, _ in paging.lists[1:])
        assert sorted(k for op, k, _ in rec.log if op == "add") == [f"{ns}/w{i}" for i in range(5)]
        # The watch resumes from the list: a later change arrives as one update.
        await api.merge_patch(path=res.path(namespace=ns, name="w3"), body={"spec": {"n": 33}})
        await converged(rec, informer, api, res, ns)
        assert informer.cache.get(f"{ns}/w3")["spec"]["n"] == 33  # type: ignore[index]
        assert stats.lists["initial"] == 1 and stats.expired_continues == 0


def etcd_revision(cp: ControlPlane) -> int:
    body = json.dumps({"key": base64.b64encode(b"/").decode()}).encode()
    req = urllib.request.Request(f"{cp.etcd_url}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read())["header"]["revision"])


def compact_etcd(cp: ControlPlane) -> int:
    """Compact etcd's history at its current revision (what the apiserver does every 5 min)."""
    revision = etcd_revision(cp)
    body = json.dumps({"revision": str(revision), "physical": True}).encode()
    req = urllib.request.Request(f"{cp.etcd_url}/v3/kv/compaction", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass
    return revision


async def test_an_expired_continue_token_restarts_the_paginated_list(
    clients: KubeClients, widget_crd: Crd, test_namespace: str, control_plane: ControlPlane
) -> None:
    res, ns, api = widget_crd.resource, test_namespace, clients.api
    for i in range(5):
        await api.create(path=res.path(namespace=ns), body=widget(res, f"w{i}"))
    informer, paging = paged_informer(clients.watch, resource=res, namespaces=[ns])

    async def expire() -> None:
        """Between two pages: changes, then etcd compacts its history (as the apiserver does
        every 5 minutes). The apiserver's watch cache serves a continue from its own
        snapshots (ListFromCacheSnapshot) while it has one, so the token is also rewound to
        a revision from before that cache began, which only etcd could answer: as a token
        held past the compaction would be."""
        await api.create(path=res.path(namespace=ns), body=widget(res, "late"))
        await api.delete(path=res.path(namespace=ns, name="w4"))
        await asyncio.to_thread(compact_etcd, control_plane)
        paging.rewind_continue_to = EARLY_REVISION

    paging.before_continue = expire
    rec = Recorder(informer)
    async with running(informer):
        await converged(rec, informer, api, res, ns)
        stats = informer.stats[0]
    assert stats.expired_continues == 1  # the real server answered 410 to the continue
    assert stats.lists["initial"] == 1
    tokens = [token for token, _ in paging.lists]
    assert tokens[0] == "" and tokens[1] != "" and tokens[2] == ""  # restarted from page one
    assert all(token for token in tokens[3:])  # ... and paginated again
    adds = sorted(k for op, k, _ in rec.log if op == "add")
    assert adds == sorted([*(f"{ns}/w{i}" for i in range(4)), f"{ns}/late"])
    assert [op for op, _, _ in rec.log].count("delete") == 0  # w4 was never seen


async def test_cached_objects_are_projected(
    clients: KubeClients, backup_crds: None, test_namespace: str
) -> None:
    """Jobs lose their pod template, pods their spec, custom resources the last-applied copy;
    Leases keep everything; nobody keeps managedFields (the real server sets them)."""
    ns, api = test_namespace, clients.api
    labels = {"app.kubernetes.io/managed-by": "openbao-backup"}
    await api.create(
        path=OPENBAO_BACKUP.path(namespace=ns),
        body={
            "apiVersion": OPENBAO_BACKUP.api_version,
            "kind": OPENBAO_BACKUP.kind,
            "metadata": {"name": "b", "annotations": {LAST_APPLIED: "{}", "keep": "me"}},
            "spec": {"cluster": "c", "trigger": "manual"},
        },
    )
    container = {"name": "executor", "image": "registry.invalid/executor:1"}
    await api.create(
        path=JOB.path(namespace=ns),
        body={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "labels": labels},
            "spec": {
                "suspend": True,
                "activeDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"restartPolicy": "Never", "containers": [container]},
                },
            },
        },
    )
    await api.create(
        path=POD.path(namespace=ns),
        body={"metadata": {"name": "p", "labels": labels}, "spec": {"containers": [container]}},
    )
    await api.create(
        path=LEASE.path(namespace=ns),
        body={
            "metadata": {"name": "l", "labels": labels},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 60},
        },
    )
    for resource, selector, key in (
        (OPENBAO_BACKUP, None, f"{ns}/b"),
        (JOB, MANAGED_BY_SELECTOR, f"{ns}/j"),
        (POD, MANAGED_BY_SELECTOR, f"{ns}/p"),
        (LEASE, MANAGED_BY_SELECTOR, f"{ns}/l"),
    ):
        served = await api.get(path=resource.path(namespace=ns, name=key.split("/")[1]))
        assert served["metadata"].get("managedFields"), "the server should set managedFields"
        informer = Informer(
            api=clients.watch, resource=resource, namespaces=[ns], label_selector=selector
        )
        async with running(informer):
            cached = informer.cache.get(key)
            assert cached is not None
            got = thaw(cached)
        assert "managedFields" not in got["metadata"]
        assert got["metadata"]["uid"] == served["metadata"]["uid"]
        if resource is OPENBAO_BACKUP:
            assert got["metadata"]["annotations"] == {"keep": "me"}
            assert got["spec"] == served["spec"]
        elif resource is JOB:
            assert "template" not in got["spec"]
            assert got["spec"]["activeDeadlineSeconds"] == 600
            assert got["spec"]["suspend"] is True
            assert got["spec"]["backoffLimit"] == served["spec"]["backoffLimit"]
        elif resource is POD:
            assert "spec" not in got
            assert got["status"]["phase"] == "Pending"
        else:
            served["metadata"].pop("managedFields")
            assert got["spec"] == served["spec"] and got["metadata"] == served["metadata"]
