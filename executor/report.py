"""The result report: what the executor tells the controller, as its termination message.

Guarantees:

* the JSON has exactly these fields (schema version 1)::

    {"v": 1, "mode": "backup|restore|delete|verify|drill", "outcome": "succeeded|failed",
     "key": str|null, "manifestKey": str|null, "size": int|null, "sha256": str|null,
     "startedAt": RFC3339, "finishedAt": RFC3339, "durationSeconds": float,
     "openbaoVersion": str|null, "raftIndex": int|null, "raftTerm": int|null,
     "deletedKeys": [str]|null,
     "error": {"class": "configuration|auth|leader|snapshot|storage|verification|internal",
               "message": str} | null,
     "marker": {"path": str, "kvVersion": 1|2, "record": str, "time": RFC3339,
                "nonce": str}                                      (only when set),
     "drill": {"unsealed": bool, "markerChecked": bool, "markerMatched": bool|null,
               "partial": bool}                                    (only in drill mode),
     "cleaned": {"uploads": int, "keys": [str], "error": str|null}
                                                   (backup on S3/Azure, only when set)}

* ``outcome == "succeeded"`` if and only if ``error`` is null;
* for a backup, ``key``/``manifestKey`` name the objects written; when a backup failed,
  ``key`` is the key that was attempted (nothing is left there unless ``error.message`` says
  so) and ``manifestKey`` is null; for a restore, ``key`` is the snapshot restored; for a
  verify, ``key`` is the snapshot checked and ``manifestKey``, ``size``, ``sha256``,
  ``raftIndex``, ``raftTerm`` and ``openbaoVersion`` are its manifest's (``outcome`` says
  whether the object matched them; they are null when no manifest could be read); for a
  delete, ``deletedKeys`` lists the snapshot keys now absent (deleted or already gone);
* ``marker`` (backup: the freshness marker written before the snapshot; drill: the marker the
  manifest promises) and ``drill`` (what a restore drill proved) are present only when set;
* ``cleaned`` (backup, when the provider can list unfinished uploads: S3, Azure) says what the
  backup removed before it began uploading: ``uploads`` unfinished uploads of earlier runs of
  the same cluster (S3: multipart uploads aborted; Azure: blobs with only uncommitted blocks
  deleted), started before this run, under the cluster's prefix; ``keys`` names at most
  :data:`CLEANED_KEYS_MAX` of them; ``error`` says why the cleanup stopped early (it never
  fails the backup);
* :meth:`Report.to_json` is ASCII-only and at most :data:`MAX_BYTES` bytes (the kubelet keeps
  4096): ``cleaned.keys`` is dropped first (the count stays), then the error message is
  shortened, then ``deletedKeys`` (with a note in the message), so the text always parses;
* :meth:`Report.from_json` ignores unknown fields and rejects wrong types, except in
  ``cleaned``, which is informational: a malformed ``cleaned`` is ignored (read as absent),
  never a reason to reject a report;
* :data:`EXIT_CODES` maps the error class to the process exit code (0 when succeeded);
* progress is a second, best-effort channel on the log (stderr, one JSON object per line):
  while a backup streams, a line with ``"event": PROGRESS_EVENT`` and the integer fields
  ``bytes`` (streamed so far) and ``bytes_per_second`` at most every
  :data:`PROGRESS_INTERVAL` seconds, and one with ``"event": STREAMED_EVENT`` (the same fields
  plus ``seconds``) when the stream ends; ``kubectl openbao-backup backup --wait`` follows
  them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from executor.errors import ErrorClass
from executor.layout import Marker

Outcome = Literal["succeeded", "failed"]
ReportMode = Literal["backup", "restore", "delete", "verify", "drill"]
REPORT_VERSION = 1
MAX_BYTES = 4000
#: At most this many keys are listed in ``cleaned.keys`` (``cleaned.uploads`` counts all).
CLEANED_KEYS_MAX = 10
#: ``cleaned.error`` is cut to this many characters.
CLEANED_ERROR_MAX = 300

#: Log events of a backup's streaming progress (see the module docstring).
PROGRESS_EVENT = "snapshot streaming"
STREAMED_EVENT = "snapshot streamed"
#: Seconds between progress lines: often enough for a live rate, few enough that a one-hour
#: stream logs under 2,000 lines.
PROGRESS_INTERVAL = 2.0

EXIT_CODES: dict[ErrorClass, int] = {
    "configuration": 10,
    "auth": 11,
    "leader": 12,
    "snapshot": 13,
    "storage": 14,
    "verification": 15,
    "internal": 1,
}
EXIT_OK = 0

_CLASSES: tuple[ErrorClass, ...] = get_args(ErrorClass)
_MODES: tuple[ReportMode, ...] = get_args(ReportMode)
_ELLIPSIS = " [...]"


@dataclass(frozen=True)
class ReportError:
    error_class: ErrorClass
    message: str


@dataclass(frozen=True)
class DrillResult:
    """What a restore drill proved: the restored copy unsealed (with the live cluster's keys),
    the marker was read back from it and matched the manifest's (None: not checked), and
    ``partial``: stopped after the restore was accepted because no unseal keys were given."""

    unsealed: bool = False
    marker_checked: bool = False
    marker_matched: bool | None = None
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "unsealed": self.unsealed,
            "markerChecked": self.marker_checked,
            "markerMatched": self.marker_matched,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, data: object) -> DrillResult:
        if not isinstance(data, dict):
            raise ValueError("drill must be an object or null")
        flags = {k: data.get(k) for k in ("unsealed", "markerChecked", "partial")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError("drill.unsealed/markerChecked/partial must be booleans")
        matched = data.get("markerMatched")
        if matched is not None and not isinstance(matched, bool):
            raise ValueError("drill.markerMatched must be a boolean or null")
        return cls(
            unsealed=bool(flags["unsealed"]),
            marker_checked=bool(flags["markerChecked"]),
            marker_matched=matched,
            partial=bool(flags["partial"]),
        )


@dataclass(frozen=True)
class Cleaned:
    """What a backup removed before it began uploading (see the module guarantees)."""

    uploads: int = 0
    keys: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def of(cls, keys: list[str], error: str | None) -> Cleaned:
        """The report field for ``keys`` removed (all of them) and ``error`` (capped)."""
        return cls(
            uploads=len(keys),
            keys=tuple(keys[:CLEANED_KEYS_MAX]),
            error=error[:CLEANED_ERROR_MAX] if error is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"uploads": self.uploads, "keys": list(self.keys), "error": self.error}

    @classmethod
    def from_dict(cls, data: object) -> Cleaned | None:
        """Lenient: None for anything malformed (the field is informational)."""
        if not isinstance(data, dict):
            return None
        uploads, keys, error = data.get("uploads"), data.get("keys", []), data.get("error")
        if not isinstance(uploads, int) or isinstance(uploads, bool) or uploads < 0:
            return None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            return None
        if error is not None and not isinstance(error, str):
            return None
        return cls(uploads=uploads, keys=tuple(keys), error=error)


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
