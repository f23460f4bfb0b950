"""A reflector keeps one (resource, namespace-or-all, selector) in step with the API server.

Guarantees (client-go's ListAndWatch, re-done for asyncio):

* it lists in pages of ``page_size`` (``limit``/``continue``) and hands each item to the
  sink's ``prepare`` as its page arrives (projected and frozen), so a list holds at most one
  page of raw objects beside the cache, never a second copy of everything; the complete
  list goes to the sink as one ``replace``;
* a continue token that expired (410 on a later page) restarts the paginated list from the
  first page, at most :data:`MAX_EXPIRED_RESTARTS` times, then lists once unpaginated;
* it then watches from the list's ``resourceVersion`` with ``allowWatchBookmarks=true`` and
  a server-side ``timeoutSeconds`` drawn at random from ``[timeout_min, timeout_max]``;
* it remembers the ``resourceVersion`` of every event and bookmark; a watch that ends
  normally is re-opened from there at once;
* the client watchdog is ``aiohttp.ClientTimeout(sock_read=inactivity_timeout)``: a stream
  that delivers nothing for that long (bookmarks arrive about once a minute on a healthy
  stream) is treated as stalled, closed, and re-opened from the last resourceVersion;
* 410 Gone (as an HTTP answer or as an ``ERROR`` event) means the resourceVersion is too old:
  it relists, and the sink's replace emits deletes for keys that vanished meanwhile;
* 429, 5xx, connection errors, and a watch that closes in under ``min_watch_duration`` (1 s)
  without delivering anything are failures: it waits with exponential backoff and jitter
  (0.8 s doubling to 30 s, reset after 2 min without failure) before trying again;
* it never gives up and never raises, except ``CancelledError`` (stop it by cancelling its
  task) and programming errors, which its supervisor sees.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from controller import errors
from controller.cache.store import JSONObject
from controller.kube.client import KubeApi
from controller.kube.errors import from_status
from controller.kube.resources import Resource
from controller.logging import get_logger
from controller.metrics import InformerMetrics
from controller.queue.backoff import Backoff
from controller.queue.clock import Clock, RealClock
from controller.settings import LIST_PAGE_SIZE

JSON = dict[str, Any]


MAX_EXPIRED_RESTARTS = 2
"""Paginated restarts after an expired continue token before one unpaginated list. A restart
keeps the peak at one page, but a list that takes longer than etcd's compaction interval
would expire every time; the unpaginated list always completes, holding the whole raw answer
once."""


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    page_size: int = LIST_PAGE_SIZE
    timeout_min: int = 300
    timeout_max: int = 600
    inactivity_timeout: float = 75.0
    connect_timeout: float = 10.0
    min_watch_duration: float = 1.0
    backoff_initial: float = 0.8
    backoff_max: float = 30.0
    backoff_reset: float = 120.0


class ReflectorSink(Protocol):
    def prepare(self, obj: JSON) -> JSONObject:
        """``obj`` as the sink will store it (listed objects are prepared page by page)."""
        ...

    def replace(self, *, namespace: str | None, objects: Sequence[JSONObject]) -> None:
        """The complete current list for ``namespace`` (None: all namespaces), prepared."""
        ...

    def apply(self, *, event_type: str, obj: JSONObject) -> None:
        """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED``."""
        ...


@dataclass
class ReflectorStats:
    """Counters for tests and debugging (the same facts go to Prometheus)."""

    lists: Counter[str] = field(default_factory=Counter)  # reason -> count
    restarts: Counter[str] = field(default_factory=Counter)  # reason -> count
    events: int = 0
    watches_opened: int = 0
    pages: int = 0  # list pages received
    expired_continues: int = 0  # lists restarted because a continue token expired


class _Stalled(Exception):
    """The watchdog fired on an open stream."""


class _ShortWatch(Exception):
    """The watch closed almost at once without delivering anything."""


class _ContinueExpired(Exception):
    """A later page of a paginated list answered 410: its snapshot was compacted."""


class Reflector:
    def __init__(
        self,
        *,
        api: KubeApi,
        resource: Resource,
        sink: ReflectorSink,
        namespace: str | None = None,
        label_selector: str | None = None,
        options: WatchOptions | None = None,
        clock: Clock | None = None,
        metrics: InformerMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self._resource = resource
        self._sink = sink
        self._namespace = namespace
        self._selector = label_selector
        self._opts = options or WatchOptions()
        self._clock: Clock = clock or RealClock()
        self._metrics = metrics or InformerMetrics(resource.display)
        self._rng = rng or random.Random()
        self._backoff = Backoff(
            initial=self._opts.backoff_initial,
            maximum=self._opts.backoff_max,
            reset_after=self._opts.backoff_reset,
            clock=self._clock,
            rng=self._rng,
        )
        self._path = resource.path(namespace=namespace)
        self.last_resource_version: str = ""
        self.synced = False
        self.stats = ReflectorStats()
        self._log = get_logger(
            component="reflector", resource=resource.display, namespace=namespace or "*"
        )

    async def run(self) -> None:
        """List and watch until cancelled."""
        need_list = True
        list_reason = "initial"
        while True:
            try:
                if need_list:
                    await self._list(list_reason)
                    need_list, list_reason = False, "error"
                # Every event and bookmark advances last_resource_version, so a watch that
                # ends for any reason resumes from the newest version seen.
                await self._watch(self.last_resource_version)
                self.stats.restarts["closed"] += 1
                self._metrics.watch_restarted("closed")
            except errors.Gone:
                self._log.info(
                    "resource version too old; relisting",
                    resource_version=self.last_resource_version,
                )
                self.stats.restarts["gone"] += 1
                self._metrics.watch_restarted("gone")
                need_list, list_reason = True, "gone"
            except _Stalled:
                self._log.warning(
                    "watch stalled; re-watching",
                    inactivity_timeout=self._opts.inactivity_timeout,
                    resource_version=self.last_resource_version,
                )
                self.stats.restarts["stalled"] += 1
                self._metrics.watch_restarted("stalled")
            except (_ShortWatch, errors.KubeError) as exc:
                reason = "short" if isinstance(exc, _ShortWatch) else "error"
                self.stats.restarts[reason] += 1
                self._metrics.watch_restarted(reason)
                delay = self._backoff.next_delay()
                if isinstance(exc, errors.TooManyRequests) and exc.retry_after:
                    delay = max(delay, min(exc.retry_after, self._opts.backoff_max))
                self._log.warning(
                    "list/watch failed; backing off",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    delay=round(delay, 3),
                    listed=not need_list,
                )
                await self._clock.sleep(delay)

    async def _list(self, reason: str) -> None:
        objects, rv = await self._list_pages()
        self.synced = True  # before replace, so the sink sees every reflector's state
        self._sink.replace(namespace=self._namespace, objects=objects)
        self.last_resource_version = rv
        self.stats.lists[reason] += 1
        self._metrics.listed(reason)
        self._log.debug("listed", count=len(objects), resource_version=rv, reason=reason)

    async def _list_pages(self) -> tuple[list[JSONObject], str]:
        for attempt in range(1 + MAX_EXPIRED_RESTARTS):
            try:
                return await self._list_once(paginate=True)
            except _ContinueExpired:
                self.stats.expired_continues += 1
                self._log.info("list continue token expired; listing again", attempt=attempt)
        self._log.warning("list continue tokens keep expiring; listing without pages")
        return await self._list_once(paginate=False)

    async def _list_once(self, *, paginate: bool) -> tuple[list[JSONObject], str]:
        """One list, prepared page by page (raw objects of one page at a time)."""
        objects: list[JSONObject] = []
        cont = ""
        while True:
            query: list[tuple[str, str]] = []
            if paginate:
                query.append(("limit", str(self._opts.page_size)))
            if self._selector:
                query.append(("labelSelector", self._selector))
            if cont:
                query.append(("continue", cont))
            try:
                page = await self._api.request(method="GET", path=self._path, query=query)
            except errors.Gone as exc:
                if not cont:
                    raise
                raise _ContinueExpired() from exc
            self.stats.pages += 1
            meta: Mapping[str, Any] = page.get("metadata") or {}
            items = page.pop("items", None) or ()
            for item in items:
                item.setdefault("apiVersion", self._resource.api_version)
                item.setdefault("kind", self._resource.kind)
                objects.append(self._sink.prepare(item))
            del items, page  # the raw page goes before the next one arrives
            cont = str(meta.get("continue") or "")
            if not cont:
                return objects, str(meta.get("resourceVersion") or "")

    async def _watch(self, rv: str) -> None:
        timeout_seconds = self._rng.randint(self._opts.timeout_min, self._opts.timeout_max)
        query: list[tuple[str, str]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if rv:
            query.append(("resourceVersion", rv))
        if self._selector:
            query.append(("labelSelector", self._selector))
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._opts.connect_timeout,
            sock_read=self._opts.inactivity_timeout,
        )
        started = self._clock.monotonic()
        delivered = 0
        async with self._api.stream(path=self._path, query=query, timeout=client_timeout) as events:
            self.stats.watches_opened += 1
            try:
                async for event in events:
                    event_type = str(event.get("type") or "")
                    obj = event.get("object")
                    if not isinstance(obj, dict):
                        continue
                    if event_type == "ERROR":
                        raise _error_event(obj)
                    new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                    self._metrics.event(event_type)
                    delivered += 1
                    if event_type in ("ADDED", "MODIFIED", "DELETED"):
                        self.stats.events += 1
                        self._sink.apply(event_type=event_type, obj=obj)
                    if new_rv:
                        self.last_resource_version = new_rv
            except errors.Timeout as exc:
                raise _Stalled() from exc
        if delivered == 0 and self._clock.monotonic() - started < self._opts.min_watch_duration:
            raise _ShortWatch("watch closed immediately without events")


def _error_event(status: Mapping[str, Any]) -> errors.KubeError:
    code = int(status.get("code") or 500)
    return from_status(code, body=dict(status))
