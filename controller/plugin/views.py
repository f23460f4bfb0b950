"""What the kubectl plugin prints: pure functions from API objects (and log events) to text.

Guarantees:

* nothing here does I/O; every function takes the objects and ``now`` and returns strings, so
  the output is unit-tested on tables of inputs;
* sizes are binary units (KiB, MiB, GiB), ages are kubectl's short form (``45s``, ``3m``,
  ``5h``, ``2d``), missing fields print as ``-``, never as ``None``;
* a status never prints a Secret's value: it shows only what the objects' ``status`` holds,
  which the controller writes without secrets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from controller.backup.decide.conditions import parse_time
from executor.report import PROGRESS_EVENT, STREAMED_EVENT

NONE = "-"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return NONE
    amount = float(value)
    for unit in _UNITS:
        if amount < 1024 or unit == _UNITS[-1]:
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def age(when: object, *, now: dt.datetime) -> str:
    at = parse_time(when)
    if at is None:
        return NONE
    secs = max(0, int((now - at).total_seconds()))
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "m"), (172800, 3600, "h")):
        if secs < limit:
            return f"{secs // div}{unit}"
    return f"{secs // 86400}d"


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for step in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(step)
    return cur


def _text(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def verified(record: Mapping[str, Any]) -> str:
    """``yes`` (uploaded and checked inline), ``drill`` (also restored by a drill), ``no``."""
    drill = _get(record, "status", "verification", "result")
    if drill:
        return f"drill:{drill}"
    conds = _get(record, "status", "conditions") or []
    ok = any(
        isinstance(c, Mapping) and c.get("type") == "Complete" and c.get("reason") == "Verified"
        for c in conds
    )
    return "yes" if ok else "no"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def catalog(records: Sequence[Mapping[str, Any]], *, now: dt.datetime, namespaces: bool) -> str:
    """``list``: the backup catalog, newest first."""
    head = ["NAME", "CLUSTER", "PHASE", "AGE", "SIZE", "VERIFIED", "KEY"]
    if namespaces:
        head.insert(0, "NAMESPACE")
    rows: list[list[str]] = [head]
    for rec in sorted(records, key=lambda r: _text(_get(r, "metadata", "creationTimestamp")))[::-1]:
        row = [
            _text(_get(rec, "metadata", "name")),
            _text(_get(rec, "spec", "cluster")),
            _text(_get(rec, "status", "phase")),
            age(_get(rec, "metadata", "creationTimestamp"), now=now),
            size(_get(rec, "status", "size")),
            verified(rec),
            _text(_get(rec, "status", "key")),
        ]
        if namespaces:
            row.insert(0, _text(_get(rec, "metadata", "namespace")))
        rows.append(row)
    if len(rows) == 1:
        return "No backups found."
    return table(rows)


def cluster_status(
    cluster: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, now: dt.datetime
) -> str:
    """``status``: schedule, last success, failures, what runs now, and the conditions."""
    spec = _get(cluster, "spec", "backup") or {}
    st = _get(cluster, "status", "backup") or {}
    meta = cluster.get("metadata") or {}
    running = [r for r in records if _get(r, "status", "phase") in ("Pending", "Running", None)]
    schedule = str(spec.get("schedule") or "manual only")
    lines = [
        f"Cluster:          {meta.get('namespace')}/{meta.get('name')}",
        f"Schedule:         {schedule}"
        + (f" ({spec['timeZone']})" if spec.get("timeZone") else "")
        + ("  [suspended]" if spec.get("suspend") else ""),
        f"Last success:     {age(st.get('lastBackupTime'), now=now)} ago"
        f"  {_text(st.get('lastBackupName'))}  {size(st.get('lastBackupSize'))}"
        if st.get("lastBackupTime")
        else "Last success:     never",
        f"Failures in a row: {int(st.get('consecutiveFailures') or 0)}"
        + (f"  (last: {st['lastFailureReason']})" if st.get("lastFailureReason") else ""),
        "In progress:      "
        + (", ".join(f"{_get(r, 'metadata', 'name')}" for r in running) or "none"),
        "Conditions:",
    ]
    conds = _get(cluster, "status", "conditions") or []
    rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
    for c in conds:
        if isinstance(c, Mapping):
            rows.append(
                [
                    _text(c.get("type")),
                    _text(c.get("status")),
                    _text(c.get("reason")),
                    age(c.get("lastTransitionTime"), now=now),
                    _text(c.get("message"))[:100],
                ]
            )
    lines.append("  " + table(rows).replace("\n", "\n  ") if len(rows) > 1 else "  none")
    return "\n".join(lines)


def progress_line(event: Mapping[str, Any]) -> str | None:
    """A line for a streaming-progress log event of the executor, else None."""
    kind = event.get("event")
    if kind not in (PROGRESS_EVENT, STREAMED_EVENT):
        return None
    done = size(event.get("bytes"))
    rate = size(event.get("bytes_per_second"))
    if kind == STREAMED_EVENT:
        return f"streamed {done} in {event.get('seconds', NONE)} s ({rate}/s)"
    return f"streaming: {done} so far ({rate}/s)"


def outcome(obj: Mapping[str, Any]) -> str:
    """The last line of ``--wait``: a backup's key, size and digest, or why it failed; a
    restore's phase and message."""
    st = obj.get("status") or {}
    name = f"{str(obj.get('kind') or 'OpenBaoBackup').lower()}/{_get(obj, 'metadata', 'name')}"
    if obj.get("kind") == "OpenBaoRestore":
        return f"{name} {st.get('phase')}: {_text(st.get('message'))}"
    if st.get("phase") == "Succeeded":
        return (
            f"{name} Succeeded: {st.get('key')} ({size(st.get('size'))}, "
            f"sha256 {str(st.get('sha256') or NONE)[:12]}…, verified)"
        )
    return f"{name} {st.get('phase')}: {_text(st.get('failureReason'))}: {_text(st.get('message'))}"
