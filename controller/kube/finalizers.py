"""Removing one finalizer from an object, safely against concurrent writers.

Guarantees:

* only the named finalizer is removed: the write is a JSON patch ``test`` + ``remove`` of its
  exact index, so a concurrent change of the list (the Job controller dropping its
  ``batch.kubernetes.io/job-tracking`` finalizer, another controller adding one) makes the
  patch fail instead of silently re-adding or dropping someone else's finalizer;
* unrelated concurrent writes (status updates) do not conflict, unlike a
  resourceVersion-guarded update;
* on a failed ``test`` the object is re-read and the removal retried (a few times);
* already gone (object or finalizer) is success.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.errors import BadRequest, Invalid, NotFound
from controller.kube.client import KubeApi

JSON_PATCH = "application/json-patch+json"


async def remove_finalizer(
    api: KubeApi, *, path: str, obj: Mapping[str, Any], finalizer: str, attempts: int = 3
) -> None:
    current: Mapping[str, Any] = obj
    for _ in range(attempts):
        finalizers = list(current["metadata"].get("finalizers") or ())
        if finalizer not in finalizers:
            return
        index = finalizers.index(finalizer)
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            await api.request(method="PATCH", path=path, body=patch, content_type=JSON_PATCH)
            return
        except NotFound:
            return
        except (Invalid, BadRequest):
            try:
                current = await api.get(path=path)
            except NotFound:
                return
    raise Invalid(
        f"could not remove finalizer {finalizer}: the list keeps changing",
        status=422,
        reason="Invalid",
    )
