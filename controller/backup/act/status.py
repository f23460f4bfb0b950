"""The one module that writes ``.status`` of OpenBaoCluster, OpenBaoBackup and OpenBaoRestore.

Guarantees:

* every status write of the backup manager goes through :class:`StatusWriter`, as a JSON
  merge patch on the ``status`` subresource (spec and metadata are never touched here);
* ``cas=True`` adds the cached ``metadata.resourceVersion`` to the patch, turning it into a
  compare-and-swap: a concurrent writer makes it fail with
  :class:`~controller.errors.Conflict` (the reconcile is retried with fresh state) instead of
  silently losing an update. Accounting writes (failure counters, last success) use it;
* only fields the caller names are written; ``None`` values delete a field (merge-patch
  semantics);
* the written object is returned so callers can chain writes without waiting for the cache,
  and remembered in the resource's :class:`~controller.backup.act.fresh.FreshView` (if one is
  given) so the next reconcile reads it even before the watch delivers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.backup.act.fresh import FreshView
from controller.cache.store import thaw
from controller.kube.client import KubeApi
from controller.kube.resources import OPENBAO_BACKUP, OPENBAO_CLUSTER, OPENBAO_RESTORE, Resource

JSON = dict[str, Any]


class StatusWriter:
    def __init__(self, *, api: KubeApi, views: Mapping[Resource, FreshView] | None = None) -> None:
        self._api = api
        self._views = dict(views or {})

    async def _patch(
        self, *, resource: Resource, obj: Mapping[str, Any], status: Mapping[str, Any], cas: bool
    ) -> JSON:
        meta = obj["metadata"]
        body: JSON = {"status": thaw(status)}
        if cas:
            body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        written = await self._api.merge_patch(
            path=resource.path(
                namespace=meta["namespace"], name=meta["name"], subresource="status"
            ),
            body=body,
        )
        view = self._views.get(resource)
        if view is not None:
            view.remember(written)
        return written

    async def backup(
        self, *, obj: Mapping[str, Any], status: Mapping[str, Any], cas: bool = False
    ) -> JSON:
        """Patch an OpenBaoBackup's status."""
        return await self._patch(resource=OPENBAO_BACKUP, obj=obj, status=status, cas=cas)

    async def restore(
        self, *, obj: Mapping[str, Any], status: Mapping[str, Any], cas: bool = False
    ) -> JSON:
        """Patch an OpenBaoRestore's status."""
        return await self._patch(resource=OPENBAO_RESTORE, obj=obj, status=status, cas=cas)

    async def cluster(
        self, *, obj: Mapping[str, Any], status: Mapping[str, Any], cas: bool = False
    ) -> JSON:
        """Patch an OpenBaoCluster's status (``status.backup``, ``status.conditions``...)."""
        return await self._patch(resource=OPENBAO_CLUSTER, obj=obj, status=status, cas=cas)
