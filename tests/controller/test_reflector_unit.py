"""The reflector's list/watch state machine against a scripted fake API (no server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp

from controller import errors
from controller.cache.informer import Informer
from controller.cache.reflector import MAX_EXPIRED_RESTARTS, WatchOptions
from controller.cache.store import JSONObject
from controller.kube.client import KubeApi
from controller.kube.resources import Resource
from controller.queue.clock import FakeClock
from tests.controller.helpers import settle, until

THING = Resource(group="example.com", version="v1", plural="things", kind="Thing")


def thing(name: str, rv: str, ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}}


class ScriptedApi:
    """Lists answer from ``lists``; each watch plays the next script (events, then an end)."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict[str, Any]], str] | BaseException] = []
        self.watches: list[list[dict[str, Any] | BaseException | str]] = []
        self.list_queries: list[list[tuple[str, str]]] = []
        self.watch_queries: list[list[tuple[str, str]]] = []
        self.hold = asyncio.Event()  # a watch script ending in "hold" blocks until set

    async def request(
        self, *, method: str, path: str, query: Sequence[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        self.list_queries.append(list(query))
        nxt = self.lists.pop(0)
        if isinstance(nxt, BaseException):
            raise nxt
        items, rv = nxt
        return {"metadata": {"resourceVersion": rv}, "items": [dict(i) for i in items]}

    @asynccontextmanager
    async def stream(
        self, *, path: str, query: Sequence[tuple[str, str]], timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[AsyncIterator[Any]]:
        self.watch_queries.append(list(query))
        script = self.watches.pop(0) if self.watches else ["hold"]

        async def events() -> AsyncIterator[Any]:
            for step in script:
                if step == "hold":
                    await self.hold.wait()
                    return
                if isinstance(step, BaseException):
                    raise step
                yield step

        yield events()


def make(api: ScriptedApi, clock: FakeClock) -> tuple[Informer, list[str]]:
    inf = Informer(
        api=cast(KubeApi, api),
        resource=THING,
        clock=clock,
        options=WatchOptions(min_watch_duration=1.0),
    )
    seen: list[str] = []

    def name(o: JSONObject) -> str:
        return str(o["metadata"]["name"]) + "@" + str(o["metadata"]["resourceVersion"])

    inf.add_handlers(
        on_add=lambda o: seen.append("add " + name(o)),
        on_update=lambda old, new: seen.append("update " + name(new)),
        on_delete=lambda o: seen.append("delete " + name(o)),
    )
    return inf, seen


def rv_of(query: list[tuple[str, str]]) -> str:
    return dict(query).get("resourceVersion", "")


async def test_list_then_watch_from_list_rv_and_events_update_store() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([thing("a", "5")], "10"))
    api.watches.append(
        [
            {"type": "ADDED", "object": thing("b", "11")},
            {"type": "MODIFIED", "object": thing("a", "12")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            {"type": "DELETED", "object": thing("b", "16")},
            "hold",
        ]
    )
    inf, seen = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(seen) == 4)
    assert inf.has_synced()
    assert seen == ["add a@5", "add b@11", "update a@12", "delete b@11"]
    q = dict(api.watch_queries[0])
    assert q["resourceVersion"] == "10"
    assert q["allowWatchBookmarks"] == "true"
    assert q["watch"] == "true"
    assert 300 <= int(q["timeoutSeconds"]) <= 600
    assert dict(api.list_queries[0])["limit"] == "500"
    assert inf.reflectors[0].last_resource_version == "16"
    assert inf.cache.keys() == ["ns/a"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_gone_relists_and_emits_deletes_for_vanished_keys() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([thing("a", "1"), thing("b", "2"), thing("c", "3")], "3"))
    api.watches.append(
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}]
    )
    api.lists.append(([thing("a", "1"), thing("c", "9"), thing("d", "8")], "9"))
    inf, seen = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.watch_queries) == 2)
    assert seen == [
        "add a@1",
        "add b@2",
        "add c@3",  # initial list
        "update c@9",
        "add d@8",
        "delete b@2",
    ]  # relist diff; a unchanged
    assert rv_of(api.watch_queries[1]) == "9"
    stats = inf.stats[0]
    assert stats.lists["gone"] == 1
    assert stats.restarts["gone"] == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_normal_close_rewatches_from_last_rv_without_backoff() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([], "1"))
    api.watches.append([{"type": "ADDED", "object": thing("a", "2")}])  # then closes
    inf, _ = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.watch_queries) == 2)
    assert rv_of(api.watch_queries[1]) == "2"
    assert inf.stats[0].restarts["closed"] == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_stall_rewatches_at_once_from_last_rv() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([], "1"))
    api.watches.append(
        [{"type": "ADDED", "object": thing("a", "4")}, errors.Timeout("read timeout")]
    )
    inf, _ = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.watch_queries) == 2)
    assert rv_of(api.watch_queries[1]) == "4"
    assert inf.stats[0].restarts["stalled"] == 1
    assert len(api.list_queries) == 1  # no relist
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_errors_and_short_watches_back_off_exponentially() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(errors.ServerError("500", status=500))
    api.lists.append(errors.Unavailable("refused"))
    api.lists.append(([], "1"))
    api.watches.append([])  # closes at once with nothing: a failure
    inf, _ = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.list_queries) == 1)
    await settle()
    assert len(api.list_queries) == 1  # waiting 0.8..1.2 s
    clock.step(1.2)
    await until(lambda: len(api.list_queries) == 2)
    clock.step(1.5)
    await settle()
    assert len(api.list_queries) == 2  # second delay is 1.6..2.4 s
    clock.step(0.9)
    await until(lambda: len(api.watch_queries) == 1)
    await until(lambda: inf.stats[0].restarts["short"] == 1)
    await settle()
    assert len(api.watch_queries) == 1  # the short watch is backed off too
    clock.step(30)
    await until(lambda: len(api.watch_queries) == 2)
    assert inf.stats[0].restarts["error"] == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def scripted_pages(api: ScriptedApi, pages: list[dict[str, Any] | BaseException]) -> None:
    async def request(
        *, method: str, path: str, query: Sequence[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        api.list_queries.append(list(query))
        nxt = pages.pop(0)
        if isinstance(nxt, BaseException):
            raise nxt
        return nxt

    api.request = request  # type: ignore[method-assign]


async def test_paginated_list_restarts_paginated_after_an_expired_continue_token() -> None:
    api, clock = ScriptedApi(), FakeClock()
    scripted_pages(
        api,
        [
            {"metadata": {"continue": "c1"}, "items": [thing("a", "1")]},
            errors.Gone("expired", status=410),
            {"metadata": {"continue": "c2"}, "items": [thing("a", "1")]},
            {"metadata": {"resourceVersion": "7"}, "items": [thing("b", "2")]},
        ],
    )
    inf, seen = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.watch_queries) == 1)
    queries = [dict(q) for q in api.list_queries]
    assert [q.get("continue") for q in queries] == [None, "c1", None, "c2"]
    assert all(q["limit"] == "500" for q in queries)  # the restart is paginated too
    assert sorted(seen) == ["add a@1", "add b@2"]
    assert inf.stats[0].expired_continues == 1
    assert inf.stats[0].pages == 3
    assert rv_of(api.watch_queries[0]) == "7"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_continue_tokens_that_keep_expiring_end_in_one_unpaginated_list() -> None:
    api, clock = ScriptedApi(), FakeClock()
    expiring: list[dict[str, Any] | BaseException] = []
    for _ in range(1 + MAX_EXPIRED_RESTARTS):
        expiring += [
            {"metadata": {"continue": "c"}, "items": [thing("a", "1")]},
            errors.Gone("expired", status=410),
        ]
    whole = {"metadata": {"resourceVersion": "9"}, "items": [thing("a", "1"), thing("b", "3")]}
    scripted_pages(api, [*expiring, whole])
    inf, seen = make(api, clock)
    task = asyncio.create_task(inf.run())
    await until(lambda: len(api.watch_queries) == 1)
    assert "limit" not in dict(api.list_queries[-1])  # fell back to one unpaginated list
    assert all("limit" in dict(q) for q in api.list_queries[:-1])
    assert inf.stats[0].expired_continues == 1 + MAX_EXPIRED_RESTARTS
    assert sorted(seen) == ["add a@1", "add b@3"]
    assert rv_of(api.watch_queries[0]) == "9"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_handler_errors_are_contained_and_resync_replays_from_cache() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([thing("a", "1")], "1"))
    inf = Informer(api=cast(KubeApi, api), resource=THING, clock=clock, resync_period=60)
    updates: list[str] = []

    def bad(_o: JSONObject) -> None:
        raise RuntimeError("handler bug")

    inf.add_handlers(
        on_add=bad, on_update=lambda old, new: updates.append(str(new["metadata"]["name"]))
    )
    task = asyncio.create_task(inf.run())
    await until(inf.has_synced)
    await asyncio.wait_for(inf.wait_synced(), 1)
    late: list[str] = []
    inf.add_handlers(on_add=lambda o: late.append(str(o["metadata"]["name"])))
    assert late == ["a"]  # replayed on registration
    clock.step(60)
    await until(lambda: updates == ["a"])
    assert len(api.list_queries) == 1  # resync made no API call
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_namespaced_reflectors_replace_only_their_namespace() -> None:
    api, clock = ScriptedApi(), FakeClock()
    api.lists.append(([thing("a", "1", ns="n1")], "1"))
    api.lists.append(([thing("b", "1", ns="n2")], "1"))
    api.watches.append(["hold"])
    api.watches.append([{"type": "ERROR", "object": {"kind": "Status", "code": 410}}])
    api.lists.append(([], "5"))  # n2 relists empty
    inf = Informer(api=cast(KubeApi, api), resource=THING, namespaces=["n1", "n2"], clock=clock)
    assert len(inf.reflectors) == 2
    deleted: list[str] = []
    inf.add_handlers(on_delete=lambda o: deleted.append(str(o["metadata"]["name"])))
    task = asyncio.create_task(inf.run())
    await until(lambda: deleted == ["b"])
    assert inf.cache.keys() == ["n1/a"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
