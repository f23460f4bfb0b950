"""Spreading scheduled backups over a window, and admitting launches under global caps.

Pure decisions (issue 13: 1,000 clusters due in the same minute):

* :func:`offset_seconds` is the opt-in jitter of one cluster: a deterministic offset in
  ``[0, spread)`` from a hash of ``namespace/name`` (never a random draw), so the same cluster
  always gets the same offset, in every replica and after every restart; it is capped at half
  the cluster's ``startingDeadlineSeconds``, so a spread window never makes a window miss its
  deadline. The schedule step evaluates the cron schedule at ``now - offset``: a window ``W``
  becomes due at ``W + offset`` and still yields the record named after ``W``, so at most one
  backup per window holds exactly as without a spread;
* :func:`admit` decides which waiting launches may start under a global cap on running
  executor Jobs and a cap per storage target (bucket and endpoint): the waiting launches are
  taken oldest due first (then by name), each admitted while both caps have room, and the
  candidate is admitted only if it is in that set. Nothing is dropped: a launch not admitted
  waits with its position, and every older launch is served before it when a slot frees;
* :func:`admissible` is that same set (the walk :func:`admit` makes), so the launches woken
  when a slot frees are exactly the ones :func:`admit` would let start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any


def offset_seconds(
    *, namespace: str, name: str, spread_seconds: int, starting_deadline_seconds: int | None
) -> int:
    """The cluster's fixed offset into a spread window (0 when spreading is off)."""
    window = spread_seconds
    if starting_deadline_seconds is not None:
        window = min(window, starting_deadline_seconds // 2)
    if window <= 0:
        return 0
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % window


@dataclass(frozen=True, order=True)
class Waiting:
    """A launch that passed everything but the caps: ordered oldest due first."""

    due: dt.datetime
    record: str  # namespace/name of the OpenBaoBackup
    target: str  # the storage target it writes to (provider, endpoint, bucket)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    position: int  # 1-based among the waiting launches (0 when admitted)
    waiting: int  # how many launches wait, this one included
    reason: str  # why not (empty when admitted)


def _oldest_first(items: Iterable[Waiting]) -> list[Waiting]:
    """Unique launches, oldest due first, then by record name (a C-level key: a burst sorts
    a thousand of them per admission)."""
    return sorted(set(items), key=attrgetter("due", "record"))


def _walk(
    queue: list[Waiting], *, running: list[str], max_total: int, max_per_target: int
) -> list[Waiting]:
    used = Counter(running)
    total = len(running)
    taken: list[Waiting] = []
    for item in queue:
        if max_total and total >= max_total:
            break
        if max_per_target and used[item.target] >= max_per_target:
            continue
        taken.append(item)
        total += 1
        used[item.target] += 1
    return taken


def admissible(
    *, waiting: Iterable[Waiting], running: Iterable[str], max_total: int, max_per_target: int
) -> list[Waiting]:
    """The launches of ``waiting`` that may start now, oldest due first: each taken while the
    global cap and its target's cap have room (``running``: the target of each Job that runs
    or was admitted and is starting; a cap of 0 is no cap)."""
    return _walk(
        _oldest_first(waiting),
        running=list(running),
        max_total=max_total,
        max_per_target=max_per_target,
    )


def admit(
    *,
    candidate: Waiting,
    waiting: Iterable[Waiting],
    running: Iterable[str],
    max_total: int,
    max_per_target: int,
) -> Admission:
    """May ``candidate`` start now? Only if it is among :func:`admissible` of the waiting
    launches and itself."""
    running = list(running)
    queue = _oldest_first([*waiting, candidate])
    taken = _walk(queue, running=running, max_total=max_total, max_per_target=max_per_target)
    if candidate in taken:
        return Admission(True, 0, len(queue), "")
    chosen = set(taken)
    not_admitted = [w for w in queue if w not in chosen]
    position = not_admitted.index(candidate) + 1
    used = Counter(running)
    if max_total and len(running) >= max_total:
        reason = f"{max_total} executor Jobs run at once (the global cap)"
    elif max_per_target and used[candidate.target] >= max_per_target:
        reason = f"{max_per_target} executor Jobs write to this storage target at once"
    else:
        reason = "older backups take the free executor slots first"
    return Admission(False, position, len(not_admitted), reason)


def target_key(target: Mapping[str, Any]) -> str:
    """The storage target a backup writes to, as the per-target cap counts it: provider,
    endpoint (default: the provider's) and bucket (Azure: account and container)."""
    provider = str(target.get("provider") or "")
    endpoint = str(target.get("endpoint") or "").rstrip("/").lower()
    if provider == "azure":
        azure = target.get("azure") or {}
        bucket = f"{azure.get('storageAccount') or ''}/{azure.get('container') or ''}"
    else:
        bucket = str(target.get("bucket") or "")
    return f"{provider}|{endpoint}|{bucket}"
