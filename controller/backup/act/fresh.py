"""Read-your-writes views of the informer caches (client-go's "expectations", generalised).

The caches lag the controller's own writes by one watch event. A reconcile that runs in that
gap would act on stale state: launch a record it just launched, re-create a record it just
created (409), or miss a queued record and create a second one. A :class:`FreshView` closes
the gap: every object the controller writes is remembered with the answer's
``resourceVersion`` and read back instead of the cached copy until the cache has caught up.

Guarantees:

* :meth:`FreshView.get`, :meth:`list` and :meth:`by_index` return the remembered object while
  the cache holds an older copy of it, or (for an object we created) no copy yet; once the
  cache holds the same or a newer ``resourceVersion`` the memory is dropped and the cache
  answers again;
* an object we only updated is never resurrected: when the cache no longer holds it (it was
  deleted), the memory of our update is dropped;
* a remembered object is dropped after :data:`FORGET_AFTER_SECONDS` whatever the cache says,
  so an object deleted by someone else never lingers as a ghost;
* ``resourceVersion`` values are compared as integers (etcd revisions, as every conformant
  API server serves them); a value that is not an integer only ever matches by equality;
* hand-written: client-go's equivalent is per-controller bookkeeping, not a library, and no
  Python Kubernetes library offers one.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from typing import Any

from controller.cache.store import IndexFunc, JSONObject, StoreReader, freeze, key_of

FORGET_AFTER_SECONDS = 30.0
"""Longer than any sane watch lag, short enough that a foreign delete is seen within it."""


def _rv(obj: JSONObject | None) -> int | None:
    if obj is None:
        return None
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


class FreshView:
    """A :class:`StoreReader` over ``cache`` that prefers our own newer writes."""

    def __init__(
        self,
        *,
        cache: StoreReader,
        indexers: Mapping[str, IndexFunc] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._indexers = dict(indexers or {})
        self._clock = clock
        self._mine: dict[str, tuple[JSONObject, float, bool]] = {}

    def remember(self, obj: Mapping[str, Any], *, created: bool = False) -> JSONObject:
        """Record an object the API server just returned for our write (``created``: by a
        create); returns it frozen."""
        frozen: JSONObject = freeze(obj)
        key = key_of(frozen)
        was_created = created or (key in self._mine and self._mine[key][2])
        self._mine[key] = (frozen, self._clock(), was_created)
        return frozen

    def forget(self, key: str) -> None:
        self._mine.pop(key, None)

    def _pick(self, key: str, cached: JSONObject | None) -> JSONObject | None:
        held = self._mine.get(key)
        if held is None:
            return cached
        mine, at, created = held
        if self._clock() - at > FORGET_AFTER_SECONDS or (cached is None and not created):
            del self._mine[key]
            return cached
        if cached is not None:
            same = (cached.get("metadata") or {}).get("resourceVersion") == (
                mine.get("metadata") or {}
            ).get("resourceVersion")
            newer_cache, newer_mine = _rv(cached), _rv(mine)
            if same or (
                newer_cache is not None and newer_mine is not None and newer_cache > newer_mine
            ):
                del self._mine[key]
                return cached
        return mine

    def get(self, key: str) -> JSONObject | None:
        return self._pick(key, self._cache.get(key))

    def list(self) -> builtins.list[JSONObject]:
        seen = {key_of(o): o for o in self._cache.list()}
        keys = dict.fromkeys([*seen, *self._mine])
        return [o for k in keys if (o := self._pick(k, seen.get(k))) is not None]

    def keys(self) -> builtins.list[str]:
        return [key_of(o) for o in self.list()]

    def by_index(self, index: str, value: str) -> builtins.list[JSONObject]:
        found = {key_of(o): o for o in self._cache.by_index(index, value)}
        func = self._indexers.get(index)
        if func is not None:
            for key, (mine, _, _) in list(self._mine.items()):
                if key not in found and value in func(mine):
                    found[key] = self._cache.get(key)  # type: ignore[assignment]
        out: builtins.list[JSONObject] = []
        for key, cached in found.items():
            obj = self._pick(key, cached)
            if obj is None:
                continue
            if func is None or value in func(obj):
                out.append(obj)
        return out

    def __len__(self) -> int:
        return len(self.list())
