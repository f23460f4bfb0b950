"""The node agent's writes about a pod and how hard each is retried (part of
``devenv.nodeagent``).

Guarantees:

* Transport errors, 5xx, 409 and 429 are retried with backoff (0.1 s doubling, capped at 5 s);
  other 4xx answers are logged and given up.
* Status goes to pods/status as a strategic merge patch. A pod's final status is retried
  until the apiserver takes it (it is what the Job controller waits for); intermediate ones
  are best effort (2 attempts). A 404 means the pod is gone: its runner is stopped.
* A deleted pod whose containers are gone is deleted with gracePeriodSeconds=0 (precondition:
  its uid), as a kubelet would, retried until done; 404 (gone) and 409 (another pod of that
  name now) end it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj

log = logging.getLogger("nodeagent")
SMP = "application/strategic-merge-patch+json"


def pod_key(pod: Obj) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


async def retrying(
    call: Callable[[], Awaitable[object]],
    *,
    what: str,
    attempts: int | None,
    on_404: Callable[[], None] | None = None,
    ok_statuses: tuple[int, ...] = (),
) -> None:
    """Retry transport errors, 5xx, 409 and 429 with backoff (0.1 s doubling, capped at 5 s);
    ``attempts=None`` retries until success (cancellation ends it)."""
    attempt = 0
    while True:
        try:
            await call()
            return
        except ApiError as exc:
            if exc.status == 404 and on_404 is not None:
                on_404()
                return
            if exc.status in ok_statuses:
                return
            if exc.status < 500 and exc.status not in (409, 429):
                log.error("%s rejected: %s", what, exc)
                return
            log.warning("%s failed: %s", what, exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("%s failed: %s", what, exc)
        attempt += 1
        if attempts is not None and attempt >= attempts:
            return
        await asyncio.sleep(min(0.1 * 2**attempt, 5.0))


async def patch_status(
    kube: KubeClient,
    ns: str,
    name: str,
    status: Obj,
    *,
    final: bool,
    on_404: Callable[[], None],
) -> None:
    """Write a pod's status (strategic merge patch): the final one until the apiserver takes
    it, an intermediate one at most twice; ``on_404`` runs if the pod is gone."""
    body = {"status": status}
    path = f"/api/v1/namespaces/{ns}/pods/{name}/status"
    await retrying(
        lambda: kube.request("PATCH", path, body, content_type=SMP),
        what=f"pod {ns}/{name}: status update",
        attempts=None if final else 2,
        on_404=on_404,
    )


async def force_delete(kube: KubeClient, pod: Obj) -> None:
    """What the kubelet does once a deleted pod's containers are gone: delete it with grace 0."""
    meta = pod["metadata"]
    body: Obj = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": meta["uid"]},
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
    await retrying(
        lambda: kube.request("DELETE", path, body),
        what=f"pod {pod_key(pod)}: delete",
        attempts=None,
        ok_statuses=(404, 409),
    )
    log.info("pod %s: deleted (grace 0)", pod_key(pod))
