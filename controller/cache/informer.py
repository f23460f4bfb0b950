"""An informer: a cache of one resource kept current by reflectors, with event handlers.

Guarantees:

* one informer per (resource, namespaces, label selector); namespaces may be all (one
  reflector), or a list (one reflector per namespace, each replacing only its own namespace
  on relist);
* the store is updated **before** handlers run, so a handler (or the reconcile it triggers)
  always finds at least that state in the cache;
* handlers are ``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)``; they must be cheap
  and synchronous and should only enqueue keys. A handler that raises is logged and ignored:
  it cannot stop the informer;
* a relist emits adds for new keys, updates for changed resourceVersions and deletes for keys
  that vanished (the delete carries the last known state);
* :meth:`Informer.has_synced` is true once every reflector completed its first list;
* optional periodic resync calls ``on_update(obj, obj)`` for every cached object, from the
  cache, with no API calls;
* objects handed to handlers and readers are deep-frozen and projected: the resource's
  :class:`~controller.cache.projection.Projection` (documented in
  :mod:`controller.cache.projection`) decides which fields the cache keeps;
* after its first complete list the informer hands the heap pages the list freed back to
  the operating system (glibc ``malloc_trim``; a no-op elsewhere), so RSS reflects the cache,
  not the list's high-water mark;
* each listed page is projected and frozen as it arrives (:meth:`Informer.prepare`), so a
  list never holds the raw objects of more than one page; an unchanged object (same
  ``resourceVersion``) is shared with the cache instead of copied.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.cache.projection import projection_for
from controller.cache.reflector import Reflector, ReflectorStats, WatchOptions
from controller.cache.store import IndexFunc, JSONObject, Store, StoreReader, key_of
from controller.kube.client import KubeApi
from controller.kube.resources import Resource
from controller.logging import get_logger
from controller.metrics import InformerMetrics
from controller.queue.clock import Clock, RealClock

JSON = dict[str, Any]
OnAdd = Callable[[JSONObject], None]
OnUpdate = Callable[[JSONObject, JSONObject], None]
OnDelete = Callable[[JSONObject], None]


@dataclass(frozen=True)
class Handlers:
    on_add: OnAdd | None = None
    on_update: OnUpdate | None = None
    on_delete: OnDelete | None = None


class Informer:
    def __init__(
        self,
        *,
        api: KubeApi,
        resource: Resource,
        namespaces: Sequence[str] = (),
        label_selector: str | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        options: WatchOptions | None = None,
        resync_period: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self.resource = resource
        self._clock: Clock = clock or RealClock()
        self._store = Store(indexers=indexers, projection=projection_for(resource))
        self._handlers: list[Handlers] = []
        self._resync_period = resync_period
        self._metrics = InformerMetrics(resource.display)
        self._log = get_logger(component="informer", resource=resource.display)
        self._synced = asyncio.Event()
        scopes: list[str | None] = (
            list(dict.fromkeys(namespaces)) if namespaces and resource.namespaced else [None]
        )
        self.reflectors = [
            Reflector(
                api=api,
                resource=resource,
                sink=self,
                namespace=ns,
                label_selector=label_selector,
                options=options,
                clock=self._clock,
                metrics=self._metrics,
            )
            for ns in scopes
        ]

    # -- consumers -----------------------------------------------------------------------
    @property
    def cache(self) -> StoreReader:
        return self._store

    def add_handlers(
        self,
        *,
        on_add: OnAdd | None = None,
        on_update: OnUpdate | None = None,
        on_delete: OnDelete | None = None,
    ) -> None:
        """Register handlers. Objects already cached are replayed to ``on_add`` at once."""
        handlers = Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in self._store.list():
                self._call(on_add, obj)

    def has_synced(self) -> bool:
        return all(r.synced for r in self.reflectors)

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def stats(self) -> list[ReflectorStats]:
        return [r.stats for r in self.reflectors]

    # -- running -------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every reflector (and the resync loop) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for reflector in self.reflectors:
                tg.create_task(reflector.run())
            if self._resync_period > 0:
                tg.create_task(self._resync_loop())

    async def _resync_loop(self) -> None:
        while True:
            await self._clock.sleep(self._resync_period)
            self.resync()

    def resync(self) -> None:
        """Call every ``on_update(obj, obj)`` for every cached object (no API calls)."""
        for obj in self._store.list():
            for h in self._handlers:
                if h.on_update is not None:
                    self._call(h.on_update, obj, obj)

    # -- ReflectorSink ---------------------------------------------------------------------
    def prepare(self, obj: JSON) -> JSONObject:
        return self._store.prepare(obj)

    def replace(self, *, namespace: str | None, objects: Sequence[JSONObject]) -> None:
        seen: set[str] = set()
        for obj in objects:
            old, new = self._store._upsert(obj)
            key = key_of(new)
            seen.add(key)
            if old is None:
                self._emit_add(new)
            elif _rv(old) != _rv(new):
                self._emit_update(old, new)
        scope = None if namespace is None else [namespace]
        for key in self._store._keys_in(scope) - seen:
            gone = self._store._delete(key)
            if gone is not None:
                self._emit_delete(gone)
        self._metrics.set_objects(len(self._store))
        if self.has_synced() and not self._synced.is_set():
            release_freed_heap()
            self._synced.set()
            self._metrics.set_synced(True)
            self._log.info("synced", objects=len(self._store))

    def apply(self, *, event_type: str, obj: JSONObject) -> None:
        if event_type == "DELETED":
            gone = self._store._delete(key_of(obj))
            if gone is not None:
                self._emit_delete(gone)
        else:
            old, new = self._store._upsert(obj)
            if old is None:
                self._emit_add(new)
            else:
                self._emit_update(old, new)
        self._metrics.set_objects(len(self._store))

    def _emit_add(self, obj: JSONObject) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _emit_update(self, old: JSONObject, new: JSONObject) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _emit_delete(self, obj: JSONObject) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    def _call(self, fn: Callable[..., None], *args: JSONObject) -> None:
        try:
            fn(*args)
        except Exception:
            self._log.exception("event handler failed", handler=getattr(fn, "__name__", "?"))


def release_freed_heap() -> bool:
    """Return free heap pages to the OS (glibc); False where ``malloc_trim`` is missing."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def _rv(obj: JSONObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
