"""The result report itself: its fields, its JSON within the termination message's size, and
parsing it back (the schema and its guarantees are in :mod:`executor.report`).

Guarantees:

* a :class:`Report` cannot be built with ``outcome == "succeeded"`` and an ``error``, or
  ``"failed"`` without one;
* :meth:`Report.to_json` is compact ASCII JSON of at most ``max_bytes`` (:data:`MAX_BYTES`)
  bytes that always parses, shortened in the documented order;
* :meth:`Report.from_json` accepts only schema version :data:`REPORT_VERSION`, ignores
  unknown fields and raises ``ValueError`` for wrong types (a malformed ``cleaned`` is read as
  absent).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from executor.errors import ErrorClass
from executor.layout import Marker
from executor.report.exit_codes import EXIT_CODES, EXIT_OK
from executor.report.fields import Cleaned, DrillResult, ReportError

Outcome = Literal["succeeded", "failed"]
ReportMode = Literal["backup", "restore", "delete", "verify", "drill"]
REPORT_VERSION = 1
MAX_BYTES = 4000

_CLASSES: tuple[ErrorClass, ...] = get_args(ErrorClass)
_MODES: tuple[ReportMode, ...] = get_args(ReportMode)
_ELLIPSIS = " [...]"


@dataclass(frozen=True)
class Report:
    mode: ReportMode
    outcome: Outcome
    started_at: dt.datetime
    finished_at: dt.datetime
    key: str | None = None
    manifest_key: str | None = None
    size: int | None = None
    sha256: str | None = None
    openbao_version: str | None = None
    raft_index: int | None = None
    raft_term: int | None = None
    deleted_keys: tuple[str, ...] | None = None
    error: ReportError | None = None
    marker: Marker | None = None
    drill: DrillResult | None = None
    cleaned: Cleaned | None = None

    def __post_init__(self) -> None:
        if (self.outcome == "succeeded") != (self.error is None):
            raise ValueError("outcome must be 'failed' exactly when error is set")

    @property
    def duration_seconds(self) -> float:
        return round(max(0.0, (self.finished_at - self.started_at).total_seconds()), 3)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.error is None else EXIT_CODES[self.error.error_class]

    def to_dict(self) -> dict[str, Any]:
        out = self._base_dict()
        if self.marker is not None:
            out["marker"] = self.marker.to_dict()
        if self.drill is not None:
            out["drill"] = self.drill.to_dict()
        if self.cleaned is not None:
            out["cleaned"] = self.cleaned.to_dict()
        return out

    def _base_dict(self) -> dict[str, Any]:
        return {
            "v": REPORT_VERSION,
            "mode": self.mode,
            "outcome": self.outcome,
            "key": self.key,
            "manifestKey": self.manifest_key,
            "size": self.size,
            "sha256": self.sha256,
            "startedAt": _rfc3339(self.started_at),
            "finishedAt": _rfc3339(self.finished_at),
            "durationSeconds": self.duration_seconds,
            "openbaoVersion": self.openbao_version,
            "raftIndex": self.raft_index,
            "raftTerm": self.raft_term,
            "deletedKeys": list(self.deleted_keys) if self.deleted_keys is not None else None,
            "error": (
                {"class": self.error.error_class, "message": self.error.message}
                if self.error is not None
                else None
            ),
        }

    def to_json(self, *, max_bytes: int = MAX_BYTES) -> str:
        """Compact ASCII JSON of at most ``max_bytes`` bytes (shortening as documented)."""
        text = _dump(self.to_dict())
        if len(text) <= max_bytes:
            return text
        report = self
        if report.cleaned is not None and report.cleaned.keys:
            report = replace(report, cleaned=replace(report.cleaned, keys=()))
            text = _dump(report.to_dict())
            if len(text) <= max_bytes:
                return text
        if report.error is not None:
            report = _shorten_message(report, len(text) - max_bytes, max_bytes=max_bytes)
            text = _dump(report.to_dict())
            if len(text) <= max_bytes:
                return text
        if report.deleted_keys:
            kept = list(report.deleted_keys)
            total = len(kept)
            while kept:
                kept.pop()
                note = f"deletedKeys truncated: {len(kept)} of {total} listed"
                err = report.error or ReportError("internal", "")
                cut = replace(
                    report,
                    deleted_keys=tuple(kept),
                    error=ReportError(err.error_class, (note + "; " + err.message)[:200]),
                    outcome="failed",
                )
                text = _dump(cut.to_dict())
                if len(text) <= max_bytes:
                    return text
        # Unreachable with the contract's limits; keep the guarantee anyway.
        minimal = replace(
            report,
            key=None,
            manifest_key=None,
            deleted_keys=None,
            marker=None,
            cleaned=(
                Cleaned(uploads=report.cleaned.uploads) if report.cleaned is not None else None
            ),
            error=ReportError(
                report.error.error_class if report.error else "internal",
                "report too large; see the executor's log",
            ),
            outcome="failed",
        )
        return _dump(minimal.to_dict())[:max_bytes]

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        """Parse a report; unknown fields are ignored, wrong types raise ``ValueError``."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"report is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("report is not a JSON object")
        version = data.get("v")
        if not _is_int(version) or version != REPORT_VERSION:
            raise ValueError(f"unsupported report version {version!r}")
        mode = data.get("mode")
        if mode not in _MODES:
            raise ValueError(f"bad mode {mode!r}")
        outcome = data.get("outcome")
        if outcome not in ("succeeded", "failed"):
            raise ValueError(f"bad outcome {outcome!r}")
        error: ReportError | None = None
        raw_error = data.get("error")
        if raw_error is not None:
            if not isinstance(raw_error, dict):
                raise ValueError("error must be an object or null")
            klass = raw_error.get("class")
            message = raw_error.get("message")
            if klass not in _CLASSES or not isinstance(message, str):
                raise ValueError("error must have a known class and a string message")
            error = ReportError(klass, message)
        deleted = data.get("deletedKeys")
        if deleted is not None and (
            not isinstance(deleted, list) or not all(isinstance(k, str) for k in deleted)
        ):
            raise ValueError("deletedKeys must be a list of strings or null")
        duration = data.get("durationSeconds")
        if (
            not isinstance(duration, int | float)
            or isinstance(duration, bool)
            or (not math.isfinite(duration))
        ):
            raise ValueError("durationSeconds must be a number")
        raw_marker, raw_drill = data.get("marker"), data.get("drill")
        return cls(
            mode=mode,
            outcome=outcome,
            started_at=_parse_time(data.get("startedAt"), "startedAt"),
            finished_at=_parse_time(data.get("finishedAt"), "finishedAt"),
            key=_opt(data, "key", str),
            manifest_key=_opt(data, "manifestKey", str),
            size=_opt(data, "size", int),
            sha256=_opt(data, "sha256", str),
            openbao_version=_opt(data, "openbaoVersion", str),
            raft_index=_opt(data, "raftIndex", int),
            raft_term=_opt(data, "raftTerm", int),
            deleted_keys=tuple(deleted) if deleted is not None else None,
            error=error,
            marker=Marker.from_dict(raw_marker) if raw_marker is not None else None,
            drill=DrillResult.from_dict(raw_drill) if raw_drill is not None else None,
            cleaned=Cleaned.from_dict(data.get("cleaned")),
        )


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _shorten_message(report: Report, excess: int, *, max_bytes: int) -> Report:
    assert report.error is not None
    message = report.error.message
    # Escapes can make one character cost up to 6 bytes: cut generously, then re-check.
    keep = max(0, len(message) - excess - len(_ELLIPSIS))
    while True:
        cut = message[:keep] + _ELLIPSIS if keep < len(message) else message
        candidate = replace(report, error=ReportError(report.error.error_class, cut))
        over = len(_dump(candidate.to_dict())) - max_bytes
        if over <= 0 or keep == 0:
            return candidate
        keep = max(0, keep - max(over, 16))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if kind is int and not _is_int(value):
        raise ValueError(f"{name} must be an integer or null")
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be {kind.__name__} or null")
    return value


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: object, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an RFC 3339 string")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not RFC 3339: {value!r}") from None
    if t.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return t
