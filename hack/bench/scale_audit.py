"""What one identity asked of the API server, read from the apiserver's audit log.

The scale benchmark (``controller_scale.py``) runs the controller under its own
ServiceAccount and reads every figure about its API traffic from the log that
``ControlPlane(audit=True)`` writes (``devenv.audit``: level Metadata, one JSON line per
request at ``ResponseComplete``), so nothing in the controller under test has to count, and
an old revision of it is measured the same way as this tree.

Guarantees:

* :class:`AuditTail` reads only what was appended since its last read and keeps the events of
  the given users; the log is never read twice;
* every function below is pure over a list of :class:`Req` and says what it counts;
* times are the apiserver's ``stageTimestamp`` (when the response was complete), as POSIX
  seconds on this machine's clock, the clock the bench itself reads.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Req:
    at: float
    user: str
    verb: str
    resource: str  # "jobs", "openbaobackups/status", ...
    namespace: str
    name: str
    code: int

    @property
    def write(self) -> bool:
        return self.verb in WRITES


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AuditTail:
    def __init__(self, path: Path, *, users: Collection[str]) -> None:
        self._path = path
        self._users = set(users)
        self._offset = 0
        self.events: list[Req] = []

    def read(self) -> list[Req]:
        """Append what the log gained since the last call; returns the new events."""
        new: list[Req] = []
        with self._path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        for line in data[:end].splitlines():
            e = json.loads(line)
            user = (e.get("user") or {}).get("username", "")
            if user not in self._users:
                continue
            ref = e.get("objectRef") or {}
            resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
            new.append(
                Req(
                    at=_ts(e["stageTimestamp"]),
                    user=user,
                    verb=e["verb"],
                    resource=resource or e.get("requestURI", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((e.get("responseStatus") or {}).get("code", 0)),
                )
            )
        self.events.extend(new)
        return new


def between(reqs: Iterable[Req], start: float, end: float) -> list[Req]:
    return [r for r in reqs if start <= r.at < end]


def writes_by_kind(reqs: Iterable[Req]) -> dict[str, int]:
    """Writes by ``verb resource``, refused ones included (a refused write still cost one)."""
    return dict(collections.Counter(f"{r.verb} {r.resource}" for r in reqs if r.write))


def job_creations(reqs: Iterable[Req], *, namespace: str) -> dict[str, float]:
    """Job name -> when its create succeeded (201)."""
    return {
        r.name: r.at
        for r in reqs
        if r.verb == "create"
        and r.resource == "jobs"
        and r.code == 201
        and r.namespace == namespace
    }


def lease_gaps(
    reqs: Iterable[Req], *, namespace: str, ends: Mapping[str, float]
) -> dict[str, float]:
    """Per operation-lock Lease named in ``ends`` (Lease name -> when the run it guards ended):
    the longest time from its first successful write by the controller (the acquire) to that
    end without a successful write (a renewal). A Lease that was never written counts 0."""
    writes: dict[str, list[float]] = collections.defaultdict(list)
    for r in reqs:
        if r.resource == "leases" and r.namespace == namespace and r.write and r.code < 300:
            writes[r.name].append(r.at)
    gaps: dict[str, float] = {}
    for name, end in ends.items():
        times = sorted(t for t in writes.get(name, []) if t <= end)
        if not times:
            gaps[name] = 0.0
            continue
        times.append(end)
        gaps[name] = max(b - a for a, b in itertools.pairwise(times))
    return gaps


def idle_kinds(reqs: Iterable[Req], *, leader_lease: str) -> dict[str, int]:
    """Requests by kind: ``watch`` (a watch (re)opened), ``leader election`` (its Lease),
    and everything else by ``verb resource``."""
    out: collections.Counter[str] = collections.Counter()
    for r in reqs:
        if r.verb == "watch":
            out["watch " + r.resource] += 1
        elif r.resource == "leases" and r.name == leader_lease:
            out["leader election"] += 1
        else:
            out[f"{r.verb} {r.resource}"] += 1
    return dict(out)


def overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of ``[start, end)`` intervals that hold at one instant."""
    spans = list(intervals)
    points = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
        key=lambda p: (p[0], p[1]),  # an end before a start at the same instant
    )
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak
