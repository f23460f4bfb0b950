"""The nested objects of a report: ``error``, ``drill`` and ``cleaned``.

Guarantees:

* each is a frozen dataclass whose ``to_dict`` gives the JSON field names of the schema in
  :mod:`executor.report`;
* :meth:`DrillResult.from_dict` rejects wrong types with ``ValueError``;
  :meth:`Cleaned.from_dict` never raises: a malformed ``cleaned`` is read as absent (None),
  since the field is informational;
* :meth:`Cleaned.of` counts every key removed but lists at most :data:`CLEANED_KEYS_MAX` and
  cuts the error to :data:`CLEANED_ERROR_MAX` characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from executor.errors import ErrorClass

#: At most this many keys are listed in ``cleaned.keys`` (``cleaned.uploads`` counts all).
CLEANED_KEYS_MAX = 10
#: ``cleaned.error`` is cut to this many characters.
CLEANED_ERROR_MAX = 300


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
