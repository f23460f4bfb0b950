"""Informers against the real kube-apiserver: CRUD, 410 relist, apiserver restart, stalls."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import pytest
from devenv.controlplane import ControlPlane

from controller.cache.informer import Informer
from controller.cache.reflector import WatchOptions
from controller.cache.store import JSONObject, key_of
from controller.kube.client import (
    KubeApi,
    KubeClients,
    clients_from_configurations,
    load_configuration,
)
from controller.kube.resources import JOB, MANAGED_BY_SELECTOR, Resource
from tests.controller.conftest import Crd, settings_for
from tests.controller.helpers import until, until_async
from tests.controller.tcpproxy import StallingProxy

pytestmark = pytest.mark.integration

FAST = WatchOptions(backoff_initial=0.2, backoff_max=2.0, inactivity_timeout=20.0)


class Recorder:
    """Applies handler calls to a model and fails on duplicates (add of a known key, ...)."""

    def __init__(self, informer: Informer) -> None:
        self.state: dict[str, str] = {}
        self.log: list[tuple[str, str, str]] = []
        self.problems: list[str] = []
        informer.add_handlers(on_add=self._add, on_update=self._update, on_delete=self._delete)

    @staticmethod
    def _rv(obj: JSONObject) -> str:
        return str(obj["metadata"]["resourceVersion"])

    def _add(self, obj: JSONObject) -> None:
        key = key_of(obj)
        if key in self.state:
            self.problems.append(f"duplicate add {key}")
        self.state[key] = self._rv(obj)
        self.log.append(("add", key, self._rv(obj)))

    def _update(self, old: JSONObject, new: JSONObject) -> None:
        key = key_of(new)
        if key not in self.state:
            self.problems.append(f"update of unknown {key}")
        self.state[key] = self._rv(new)
        self.log.append(("update", key, self._rv(new)))

    def _delete(self, obj: JSONObject) -> None:
        key = key_of(obj)
        if self.state.pop(key, None) is None:
            self.problems.append(f"delete of unknown {key}")
        self.log.append(("delete", key, self._rv(obj)))


async def server_state(
    api: KubeApi, resource: Resource, namespace: str, selector: str | None = None
) -> dict[str, str]:
    query = [("labelSelector", selector)] if selector else []
    listing = await api.request(method="GET", path=resource.path(namespace=namespace), query=query)
    return {key_of(o): str(o["metadata"]["resourceVersion"]) for o in listing["items"]}


async def converged(
    rec: Recorder,
    informer: Informer,
    api: KubeApi,
    resource: Resource,
    namespace: str,
    selector: str | None = None,
    timeout: float = 30,
) -> None:
    async def same() -> bool:
        server = await server_state(api, resource, namespace, selector)
        cache = {
            k: str(o["metadata"]["resourceVersion"])
            for k in informer.cache.keys()  # noqa: SIM118 - a Store, not a dict
            if (o := informer.cache.get(k)) is not None
        }
        return rec.state == server == cache

    await until_async(same, timeout=timeout, what="informer == recorder == server")
    assert rec.problems == []


def widget(res: Resource, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "metadata": {"name": name},
        "spec": dict(spec),
    }


@asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        yield informer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_informer_sees_custom_resource_crud(
    clients: KubeClients, widget_crd: Crd, test_namespace: str
) -> None:
    res, ns, api = widget_crd.resource, test_namespace, clients.api
    await api.create(path=res.path(namespace=ns), body=widget(res, "pre", size=1))
    informer = Informer(api=clients.watch, resource=res, namespaces=[ns], options=FAST)
    rec = Recorder(informer)
    async with running(informer):
        assert rec.log[0][:2] == ("add", f"{ns}/pre")
        created = await api.create(path=res.path(namespace=ns), body=widget(res, "w1", size=1))
        await until(lambda: f"{ns}/w1" in rec.state, what="add of w1")
        patched = await api.merge_patch(
            path=res.path(namespace=ns, name="w1"), body={"spec": {"size": 2}}
        )
        assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
        await until(
            lambda: rec.state.get(f"{ns}/w1") == patched["metadata"]["resourceVersion"],
            what="update of w1",
        )
        cached = informer.cache.get(f"{ns}/w1")
        assert cached is not None
        assert cached["spec"]["size"] == 2
        assert "managedFields" not in cached["metadata"]
        await api.delete(path=res.path(namespace=ns, name="w1"))
        await until(lambda: f"{ns}/w1" not in rec.state, what="delete of w1")
        await converged(rec, informer, api, res, ns)
        assert [e[0] for e in rec.log if e[1] == f"{ns}/w1"] == ["add", "update", "delete"]


async def test_informer_sees_job_crud_with_label_selector(
    clients: KubeClients, test_namespace: str
) -> None:
    ns, api = test_namespace, clients.api

    def job(name: str, labelled: bool) -> dict[str, Any]:
        labels = {"app.kubernetes.io/managed-by": "openbao-backup"} if labelled else {}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                    }
                },
            },
        }

    informer = Informer(
        api=clients.watch,
        resource=JOB,
        namespaces=[ns],
        label_selector=MANAGED_BY_SELECTOR,
        options=FAST,
    )
    rec = Recorder(informer)
    async with running(informer):
        await api.create(path=JOB.path(namespace=ns), body=job("ours", True))
        await api.create(path=JOB.path(namespace=ns), body=job("theirs", False))
        await until(lambda: f"{ns}/ours" in rec.state, what="add of the labelled Job")
        await api.merge_patch(
            path=JOB.path(namespace=ns, name="ours"),
            body={"metadata": {"annotations": {"touched": "yes"}}},
        )
        await until(
            lambda: any(e[0] == "update" and e[1] == f"{ns}/ours" for e in rec.log),
            what="update of the Job",
        )
        await api.delete(path=JOB.path(namespace=ns, name="ours"))
        await until(lambda: f"{ns}/ours" not in rec.state, what="delete of the Job")
        await converged(rec, informer, api, JOB, ns, MANAGED_BY_SELECTOR)
        assert all(e[1] != f"{ns}/theirs" for e in rec.log)


class RewindOnce:
    """Delegates to a KubeApi; runs ``before`` and rewinds the first watch to a stale RV."""

    def __init__(
        self, api: KubeApi, *, stale_rv: str, before: Callable[[], Awaitable[None]]
    ) -> None:
        self._api = api
        self._stale = stale_rv
        self._before: Callable[[], Awaitable[None]] | None = before
        self.rewound_from = ""

    async def request(self, **kwargs: Any) -> dict[str, Any]:
        return await self._api.request(**kwargs)

    @asynccontextmanager
    async def stream(
        self, *, path: str, query: Sequence[tuple[str, str]], timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[AsyncIterator[Any]]:
        q = list(query)
        if self._before is not None:
            before, self._before = self._before, None
            await before()
            self.rewound_from = dict(q).get("resourceVersion", "")
            q = [(k, self._stale if k == "resourceVersion" else v) for k, v in q]
        async with self._api.stream(path=path, query=q, timeout=timeout) as events:
            yield events


async def test_forced_410_relists_and_emits_deletes(
    clients: KubeClients, widget_crd: Crd, test_namespace: str
) -> None:
    res, ns, api = widget_crd.resource, test_namespace, clients.api
    for name in ("a", "b", "c"):
        await api.create(path=res.path(namespace=ns), body=widget(res, name))

    async def missed_changes() -> None:
        """Changes the informer will not see through its (stale) watch."""
        await api.delete(path=res.path(namespace=ns, name="b"))
        await api.create(path=res.path(namespace=ns), body=widget(res, "d"))
        await api.merge_patch(path=res.path(namespace=ns, name="c"), body={"spec": {"x": 1}})

    # The CRD's watch cache starts at the CRD's creation: "1" predates it, so it is expired.
    rewinding = RewindOnce(clients.watch, stale_rv="1", before=missed_changes)
    informer = Informer(api=cast(KubeApi, rewinding), resource=res, namespaces=[ns], options=FAST)
    rec = Recorder(informer)
    async with running(informer):
        await until(
            lambda: informer.stats[0].lists["gone"] >= 1, timeout=20, what="a 410 and a relist"
        )
        assert rewinding.rewound_from != ""
        await converged(rec, informer, api, res, ns)
        assert ("delete", f"{ns}/b") in [(e[0], e[1]) for e in rec.log]
        assert ("add", f"{ns}/d") in [(e[0], e[1]) for e in rec.log]
        assert [e[0] for e in rec.log if e[1] == f"{ns}/c"] == ["add", "update"]
        assert informer.stats[0].restarts["gone"] >= 1


async def test_apiserver_restart_loses_nothing(
    control_plane: ControlPlane, clients: KubeClients, widget_crd: Crd, test_namespace: str
) -> None:
    res, ns, api = widget_crd.resource, test_namespace, clients.api
    for i in range(5):
        await api.create(path=res.path(namespace=ns), body=widget(res, f"r{i}"))
    informer = Informer(api=clients.watch, resource=res, namespaces=[ns], options=FAST)
    rec = Recorder(informer)
    async with running(informer):
        await converged(rec, informer, api, res, ns)
        opened = informer.stats[0].watches_opened
        await asyncio.to_thread(control_plane.restart_apiserver)
        # Writes after the restart: the informer must catch up with all of them.
        await api.delete(path=res.path(namespace=ns, name="r0"))
        await api.merge_patch(path=res.path(namespace=ns, name="r1"), body={"spec": {"v": 2}})
        await api.create(path=res.path(namespace=ns), body=widget(res, "after"))
        await converged(rec, informer, api, res, ns, timeout=60)
        stats = informer.stats[0]
        assert stats.watches_opened > opened
        assert stats.restarts["error"] + stats.restarts["closed"] + stats.restarts["gone"] >= 1
    assert rec.problems == []


async def test_stalled_connection_is_detected_and_rewatched(
    control_plane: ControlPlane, widget_crd: Crd, test_namespace: str
) -> None:
    res, ns = widget_crd.resource, test_namespace
    settings = settings_for(control_plane)
    cfg = await load_configuration(settings)
    proxy = await StallingProxy(target_host="127.0.0.1", target_port=control_plane.api_port).start()
    proxied = copy.copy(cfg)
    proxied.host = f"https://127.0.0.1:{proxy.port}"
    via_proxy = clients_from_configurations(settings, watch_cfg=proxied, api_cfg=cfg)
    inactivity = 2.0
    informer = Informer(
        api=via_proxy.watch,
        resource=res,
        namespaces=[ns],
        options=WatchOptions(inactivity_timeout=inactivity, backoff_initial=0.2, backoff_max=2.0),
    )
    rec = Recorder(informer)
    api = via_proxy.api  # direct, not through the proxy
    await api.create(path=res.path(namespace=ns), body=widget(res, "beat", n=0))
    stop = asyncio.Event()

    async def heartbeat() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await api.merge_patch(path=res.path(namespace=ns, name="beat"), body={"spec": {"n": n}})
            await asyncio.sleep(0.25)

    beat = asyncio.create_task(heartbeat())
    try:
        async with running(informer):
            await asyncio.sleep(3 * inactivity)  # a busy, healthy stream never trips the watchdog
            assert informer.stats[0].restarts["stalled"] == 0
            assert proxy.stall() >= 1
            stalled_at = time.monotonic()
            await until(
                lambda: informer.stats[0].restarts["stalled"] >= 1,
                timeout=inactivity + 5,
                what="the watchdog",
            )
            detected_after = time.monotonic() - stalled_at
            assert detected_after <= inactivity + 1.5
            await api.create(path=res.path(namespace=ns), body=widget(res, "after-stall"))
            await until(
                lambda: f"{ns}/after-stall" in rec.state,
                timeout=10,
                what="events after the re-watch",
            )
            assert informer.stats[0].lists["initial"] == 1
            assert informer.stats[0].lists["gone"] == 0  # resumed from the last RV, no relist
            stop.set()
            await beat
            await converged(rec, informer, api, res, ns)
    finally:
        stop.set()
        await asyncio.gather(beat, return_exceptions=True)
        await via_proxy.close()
        await proxy.stop()
