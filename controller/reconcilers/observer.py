"""Placeholder reconcilers: they observe and log the custom resources, and do nothing else.

They exist so the runtime runs end to end before the backup manager plugs in; they take no
backups, write nothing, and say so in their log lines (``action="observe-only"``).
Each reconcile logs one line ``reconciled`` with the key, whether the object exists in the
cache, its generation and resourceVersion (never its body).
"""

from __future__ import annotations

from collections.abc import Callable

from controller.cache.store import StoreReader
from controller.kube.resources import (
    JOB,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    Resource,
)
from controller.logging import get_logger
from controller.reconcilers.base import Context, ReconcilerSpec, Watch, owner_keys
from controller.runner import Reconciler, Result


class ObserveOnly:
    def __init__(self, *, cache: StoreReader, kind: str) -> None:
        self._cache = cache
        self._log = get_logger(kind=kind, action="observe-only")

    async def reconcile(self, *, key: str) -> Result:
        obj = self._cache.get(key)
        if obj is None:
            self._log.info("reconciled", key=key, exists=False)
            return Result()
        meta = obj.get("metadata") or {}
        self._log.info(
            "reconciled",
            key=key,
            exists=True,
            generation=meta.get("generation"),
            resource_version=meta.get("resourceVersion"),
        )
        return Result()


def _builder(resource: Resource) -> Callable[[Context], Reconciler]:
    def build(ctx: Context) -> Reconciler:
        return ObserveOnly(cache=ctx.caches[resource], kind=resource.kind)

    return build


CLUSTERS = ReconcilerSpec(
    name="openbaocluster-observer", primary=OPENBAO_CLUSTER, build=_builder(OPENBAO_CLUSTER)
)
BACKUPS = ReconcilerSpec(
    name="openbaobackup-observer",
    primary=OPENBAO_BACKUP,
    build=_builder(OPENBAO_BACKUP),
    watches=(Watch(resource=JOB, to_keys=owner_keys("OpenBaoBackup")),),
)
RESTORES = ReconcilerSpec(
    name="openbaorestore-observer",
    primary=OPENBAO_RESTORE,
    build=_builder(OPENBAO_RESTORE),
    watches=(Watch(resource=JOB, to_keys=owner_keys("OpenBaoRestore")),),
)
