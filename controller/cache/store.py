"""The informer's in-memory cache of one resource.

Guarantees:

* objects enter through the resource's :class:`~controller.cache.projection.Projection`
  (``metadata.managedFields`` and the fields no reader uses are dropped) and are stored
  deep-frozen and compact (:mod:`controller.cache.frozen`: shared key shapes, interned
  strings, tuples for arrays); they are never generated model classes;
* keys are ``"namespace/name"``, or ``"name"`` for cluster-scoped objects (:func:`key_of`);
* **objects handed out are deep-frozen** (:class:`FrozenDict` mappings, tuples for lists):
  a consumer cannot corrupt the cache, and reads cost nothing (no copy per ``get``). The
  price is one walk of each object when it enters the store. Call :func:`thaw` for a
  mutable deep copy (e.g. to build a patch, or to serialise with ``json``);
* :meth:`Store.prepare` of an object whose key is cached with the same ``resourceVersion``
  returns the cached object itself, so a relist holds no second copy of unchanged objects;
* secondary indexes are registered by name as functions ``obj -> list of index values``
  and are kept exact on every add, update, delete and replace; :meth:`Store.by_index`
  returns the objects whose function returned that value;
* only the informer writes (the mutating methods start with ``_``); consumers get the
  read-only :class:`StoreReader` protocol. Not thread-safe; asyncio-safe because no method
  awaits.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from controller.cache.frozen import FrozenDict, freeze, thaw
from controller.cache.projection import WHOLE, Projection, tripwire_enabled

__all__ = [
    "FrozenDict",
    "IndexFunc",
    "JSONObject",
    "Store",
    "StoreReader",
    "freeze",
    "key_of",
    "namespace_index",
    "resource_version",
    "split_key",
    "thaw",
]

JSONObject = Mapping[str, Any]
IndexFunc = Callable[[JSONObject], builtins.list[str]]


def key_of(obj: JSONObject) -> str:
    """``"namespace/name"``, or ``"name"`` when the object has no namespace."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    name = meta.get("name") or ""
    if not name:
        raise ValueError("object has no metadata.name")
    return f"{namespace}/{name}" if namespace else str(name)


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a key; namespace is ``""`` for cluster-scoped keys."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else ("", namespace)


def resource_version(obj: JSONObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def namespace_index(obj: JSONObject) -> list[str]:
    """Index function: the object's namespace (client-go's ``namespace`` index)."""
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


class StoreReader(Protocol):
    """What consumers (reconcilers) may do with a cache."""

    def get(self, key: str) -> JSONObject | None: ...
    def list(self) -> builtins.list[JSONObject]: ...
    def keys(self) -> builtins.list[str]: ...
    def by_index(self, index: str, value: str) -> builtins.list[JSONObject]: ...
    def __len__(self) -> int: ...


class Store:
    """Objects by key, with named secondary indexes."""

    def __init__(
        self,
        *,
        indexers: Mapping[str, IndexFunc] | None = None,
        projection: Projection = WHOLE,
        tripwire: bool | None = None,
    ) -> None:
        self._projection = projection
        self._tripwire = tripwire_enabled() if tripwire is None else tripwire
        self._items: dict[str, JSONObject] = {}
        self._indexers: dict[str, IndexFunc] = {"namespace": namespace_index}
        self._indexers.update(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {n: {} for n in self._indexers}
        # key -> its index values: one value as a plain str (the usual case), else a tuple
        self._values: dict[str, dict[str, str | tuple[str, ...]]] = {n: {} for n in self._indexers}

    # -- reading -------------------------------------------------------------------------
    def get(self, key: str) -> JSONObject | None:
        return self._items.get(key)

    def list(self) -> builtins.list[JSONObject]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, index: str, value: str) -> builtins.list[JSONObject]:
        if index not in self._indices:
            raise KeyError(f"no index named {index!r}")
        return [self._items[k] for k in sorted(self._indices[index].get(value, ()))]

    def index_keys(self, index: str, value: str) -> builtins.list[str]:
        if index not in self._indices:
            raise KeyError(f"no index named {index!r}")
        return sorted(self._indices[index].get(value, ()))

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Register an index (allowed at any time; existing objects are indexed now)."""
        if name in self._indexers:
            raise ValueError(f"index {name!r} exists")
        self._indexers[name] = func
        self._indices[name] = {}
        self._values[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    @property
    def projection(self) -> Projection:
        return self._projection

    def prepare(self, obj: JSONObject) -> JSONObject:
        """``obj`` as the store keeps it (projected and frozen); the cached object itself when
        it holds the same key at the same ``resourceVersion``."""
        if isinstance(obj, FrozenDict):
            return obj
        rv = resource_version(obj)
        if rv:
            cached = self._items.get(key_of(obj))
            if cached is not None and resource_version(cached) == rv:
                return cached
        frozen: JSONObject = self._projection.apply(obj, tripwire=self._tripwire)
        return frozen

    # -- writing (informer only) ---------------------------------------------------------
    def _upsert(self, obj: JSONObject) -> tuple[JSONObject | None, JSONObject]:
        """Store ``obj`` (raw, or from :meth:`prepare`); returns (old, new) where ``new`` is
        the frozen stored object."""
        frozen = self.prepare(obj)
        key = key_of(frozen)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key)
        self._items[key] = frozen
        for name in self._indexers:
            self._index_one(name, key, frozen)
        return old, frozen

    def _delete(self, key: str) -> JSONObject | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key)
        return old

    def _index_one(self, name: str, key: str, obj: JSONObject) -> None:
        values = tuple(dict.fromkeys(sys.intern(v) for v in self._indexers[name](obj)))
        self._values[name][key] = values[0] if len(values) == 1 else values
        for value in values:
            self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str) -> None:
        for name in self._indexers:
            held = self._values[name].pop(key, ())
            for value in (held,) if isinstance(held, str) else held:
                keys = self._indices[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][value]

    def _keys_in(self, namespaces: Iterable[str] | None) -> set[str]:
        """Keys of objects in ``namespaces`` (``None``: all keys)."""
        if namespaces is None:
            return set(self._items)
        out: set[str] = set()
        for ns in namespaces:
            out |= self._indices["namespace"].get(ns, set())
        return out
