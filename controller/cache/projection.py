"""What the informer caches keep of each resource: a per-resource projection.

Guarantees:

* a :class:`Projection` removes a fixed list of paths from an object before it is frozen
  into the cache; everything else is kept as the API server sent it. The input is never
  mutated (only the mappings along a dropped path are copied);
* the projections are conservative: they drop what no reader of the cache reads and what is
  large, never a field a reader uses. Kept, per resource (see :data:`PROJECTIONS`):

  - **every resource:** ``apiVersion``, ``kind`` and ``metadata`` (labels, annotations,
    finalizers, ownerReferences, uid, resourceVersion, deletionTimestamp, ...) are kept;
    ``metadata.managedFields`` is dropped;
  - **OpenBaoCluster, OpenBaoBackup, OpenBaoRestore:** ``spec`` and ``status`` are kept
    whole (the spec parser, status writes and the catalog read nearly every field); the
    ``kubectl.kubernetes.io/last-applied-configuration`` annotation (a second copy of the
    spec) is dropped;
  - **Job:** ``status`` whole (conditions, counts, times) and ``spec`` without its pod
    template (``activeDeadlineSeconds`` is read); ``spec.template`` and last-applied are
    dropped;
  - **Pod:** ``status`` whole (phase, reason, message, ``containerStatuses`` with the
    executor's termination message, conditions); ``spec`` and last-applied are dropped;
  - **Lease:** everything but ``managedFields``: the operation lock PUTs the cached Lease
    back, so any other dropped field would be erased on the server (a PUT without
    ``managedFields`` keeps the server's);

* the tripwire (``OPENBAO_BACKUP_CACHE_TRIPWIRE=1``, or ``tripwire=True``): dropped keys are
  still removed, but the mapping that held one raises
  :class:`~controller.cache.frozen.DroppedFieldRead` when a reader asks for it (``[]``,
  ``get``, ``in``), so a test run with it on proves no reader reads a dropped field (set it
  to a file path to also collect every such read there);
* ``OPENBAO_BACKUP_CACHE_PROJECTION=off`` keeps whole objects (minus ``managedFields``),
  for benchmarks that compare.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.cache.frozen import TRIPWIRE_ENV, FrozenDict, GuardedFrozenDict, freeze, shape_of
from controller.kube.resources import (
    JOB,
    LEASE,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    POD,
    Resource,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
PROJECTION_ENV = "OPENBAO_BACKUP_CACHE_PROJECTION"

Path = tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Projection:
    """An object minus ``drop`` (paths of mapping keys; none goes through an array)."""

    name: str
    drop: tuple[Path, ...]

    def apply(self, obj: Mapping[str, Any], *, tripwire: bool = False) -> Any:
        """The projected object, frozen (a :class:`FrozenDict`)."""
        pruned = _prune(obj, self.drop)
        if not tripwire:
            return freeze(pruned)
        guards: dict[Path, set[str]] = {}
        for path in self.drop:
            guards.setdefault(path[:-1], set()).add(path[-1])
        return _freeze_guarded(pruned, {p: frozenset(k) for p, k in guards.items()}, ())


def _prune(obj: Mapping[str, Any], drop: tuple[Path, ...]) -> Mapping[str, Any]:
    out: Mapping[str, Any] = obj
    for path in drop:
        out = _without(out, path)
    return out


def _without(node: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    head = path[0]
    if head not in node:
        return node
    if len(path) == 1:
        return {k: v for k, v in node.items() if k != head}
    child = node[head]
    if not isinstance(child, Mapping):
        return node
    new_child = _without(child, path[1:])
    if new_child is child:
        return node
    return {**node, head: new_child}


def _freeze_guarded(value: Any, guards: Mapping[Path, frozenset[str]], at: Path) -> Any:
    if not isinstance(value, Mapping) or not any(p[: len(at)] == at for p in guards):
        return freeze(value)
    inner = FrozenDict._make(
        shape_of(tuple(sys.intern(str(k)) for k in value)),
        tuple(_freeze_guarded(v, guards, (*at, str(k))) for k, v in value.items()),
    )
    dropped = guards.get(at)
    if dropped is None:
        return inner
    return GuardedFrozenDict.guard(inner, dropped=dropped, where=".".join(at) or "<object>")


MANAGED_FIELDS: Path = ("metadata", "managedFields")
LAST_APPLIED_PATH: Path = ("metadata", "annotations", LAST_APPLIED)

WHOLE = Projection(name="whole", drop=(MANAGED_FIELDS,))
"""Everything but ``managedFields`` (Leases; resources without a projection of their own)."""

CUSTOM_RESOURCE = Projection(name="custom-resource", drop=(MANAGED_FIELDS, LAST_APPLIED_PATH))
JOB_PROJECTION = Projection(
    name="job", drop=(MANAGED_FIELDS, LAST_APPLIED_PATH, ("spec", "template"))
)
POD_PROJECTION = Projection(name="pod", drop=(MANAGED_FIELDS, LAST_APPLIED_PATH, ("spec",)))

PROJECTIONS: Mapping[Resource, Projection] = {
    OPENBAO_CLUSTER: CUSTOM_RESOURCE,
    OPENBAO_BACKUP: CUSTOM_RESOURCE,
    OPENBAO_RESTORE: CUSTOM_RESOURCE,
    JOB: JOB_PROJECTION,
    POD: POD_PROJECTION,
    LEASE: WHOLE,
}
"""The projection of every resource the controller caches (the table above)."""


def projection_for(resource: Resource) -> Projection:
    """``resource``'s projection; :data:`WHOLE` when projections are off or it has none."""
    if os.environ.get(PROJECTION_ENV, "").lower() == "off":
        return WHOLE
    return PROJECTIONS.get(resource, WHOLE)


def tripwire_enabled() -> bool:
    return os.environ.get(TRIPWIRE_ENV, "") not in ("", "0")
