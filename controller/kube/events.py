"""Kubernetes Events (``events.k8s.io/v1``) about the objects the controller manages.

Guarantees:

* an event names its object (``regarding``), a ``reason`` in CamelCase, a ``type``
  (``Normal`` or ``Warning``) and a short ``note``; notes are truncated to 1 KiB and must never
  carry secrets (callers pass executor error messages, which the executor already redacts);
* repeats are aggregated, not multiplied: the same (object UID, type, reason, note) within
  :data:`DEDUP_WINDOW` seconds bumps ``series.count`` on the existing Event instead of creating
  a new one;
* emitting an event never fails a reconcile: API errors are logged and swallowed (events are
  best effort, as in client-go's recorder).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.errors import OpenBaoBackupError
from controller.kube.client import KubeApi
from controller.kube.resources import format_microtime
from controller.logging import get_logger

DEDUP_WINDOW = 600.0
REPORTING_CONTROLLER = "backup.openbao.org/openbao-backup"
EventType = Literal["Normal", "Warning"]

_log = get_logger(component="events")


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: float


class EventRecorder:
    def __init__(self, *, api: KubeApi, instance: str) -> None:
        self._api = api
        self._instance = instance[:128]
        self._seen: dict[tuple[str, str, str, str], _Seen] = {}

    async def emit(
        self,
        *,
        obj: Mapping[str, Any],
        type: EventType,
        reason: str,
        note: str,
        action: str = "Reconcile",
        now: dt.datetime | None = None,
    ) -> None:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid") or "")
        note = note[:1024]
        when = now or dt.datetime.now(dt.UTC)
        key = (uid, type, reason, note)
        seen = self._seen.get(key)
        try:
            if seen is not None and when.timestamp() - seen.first < DEDUP_WINDOW:
                seen.count += 1
                await self._api.merge_patch(
                    path=f"/apis/events.k8s.io/v1/namespaces/{seen.namespace}/events/{seen.name}",
                    body={
                        "series": {"count": seen.count, "lastObservedTime": format_microtime(when)}
                    },
                )
                return
            name = f"{meta.get('name', 'object')}.{secrets.token_hex(8)}"[:253]
            body = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "eventTime": format_microtime(when),
                "reportingController": REPORTING_CONTROLLER,
                "reportingInstance": self._instance,
                "action": action,
                "reason": reason,
                "note": note,
                "type": type,
                "regarding": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": meta.get("name"),
                    "namespace": namespace,
                    "uid": uid,
                    "resourceVersion": meta.get("resourceVersion"),
                },
            }
            await self._api.create(
                path=f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body=body
            )
            self._seen[key] = _Seen(name=name, namespace=namespace, count=1, first=when.timestamp())
            self._prune(when.timestamp())
        except OpenBaoBackupError as exc:
            _log.warning("event not recorded", reason=reason, error=str(exc))

    def _prune(self, now: float) -> None:
        if len(self._seen) < 1024:
            return
        for key in [k for k, v in self._seen.items() if now - v.first >= DEDUP_WINDOW]:
            del self._seen[key]
