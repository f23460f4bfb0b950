"""The seam between the controller runtime and the reconcilers that do the work.

Guarantees:

* a reconciler is described by a :class:`ReconcilerSpec`: a unique name, the *primary*
  resource whose keys it reconciles, the *secondary* resources whose changes map to primary
  keys (e.g. a Job owned by an OpenBaoBackup), and a ``build`` function that receives a
  :class:`Context` and returns the reconciler;
* the runtime (``controller.app``) creates one runner (queue + workers) per spec, wires the
  informer handlers to it, and runs it only while this process leads;
* reconcilers read state from the informer caches in :class:`Context` (deep-frozen objects;
  no API reads needed) and write through ``Context.api`` (throttled client);
* reconcilers never see the queue: they return a :class:`~controller.runner.Result` or raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.cache.store import IndexFunc, JSONObject, StoreReader
from controller.kube.client import KubeApi
from controller.kube.resources import Resource
from controller.runner import Reconciler
from controller.settings import Settings

KeyMapper = Callable[[JSONObject], list[str]]


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a reconciler may use: caches by resource, the write client, the settings."""

    caches: Mapping[Resource, StoreReader]
    api: KubeApi
    settings: Settings


@dataclass(frozen=True, kw_only=True)
class Watch:
    """A secondary resource and how its objects map to primary keys."""

    resource: Resource
    to_keys: KeyMapper


@dataclass(frozen=True, kw_only=True)
class ReconcilerSpec:
    name: str
    primary: Resource
    build: Callable[[Context], Reconciler]
    watches: tuple[Watch, ...] = field(default=())
    indexers: Mapping[Resource, Mapping[str, IndexFunc]] = field(default_factory=dict)


def owner_keys(owner_kind: str) -> KeyMapper:
    """Map an object to ``namespace/name`` of its owners of kind ``owner_kind``."""

    def mapper(obj: JSONObject) -> list[str]:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        keys: list[str] = []
        for ref in meta.get("ownerReferences") or ():
            if ref.get("kind") == owner_kind and ref.get("name"):
                keys.append(f"{namespace}/{ref['name']}" if namespace else str(ref["name"]))
        return keys

    return mapper
