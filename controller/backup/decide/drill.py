"""Restore drills and the freshness marker, as pure decisions.

A drill restores a backup into a throwaway OpenBao inside the drill Job's own pod (never the
live cluster), unseals it with the live cluster's keys and checks that the freshness marker
written just before the backup came back. See docs/restore.md, "Restore drills".

Guarantees:

* :func:`parse_marker` / :func:`parse_verify` are total: a value or problems naming the field;
* :func:`pick` chooses the backup a due drill verifies: the newest ``Succeeded`` record that
  has no verification yet (not being deleted), so every drill proves the freshest backup it
  has not proved before;
* :func:`outcome_of` turns the drill Job's report into the record's ``status.verification``:
  ``Passed`` (restored, unsealed and, if a marker was written, the marker matched),
  ``Partial`` (archive, sizes and Raft index checked; not unsealed because no keys were
  given), or ``Failed`` with a reason (``MarkerMismatch``, the executor's error class, or a
  Kubernetes reason);
* :func:`newest_verified` is the record retention must keep whatever its policy says.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.backup.decide.jobresult import JobPhase, JobResult
from controller.backup.decide.records import SUCCEEDED, created_at, is_deleting, name_of, phase_of

UNSEAL_KEYS_VARIABLE = "OBB_UNSEAL_KEYS_FILE"
"""The executor names this variable when the mounted unseal keys cannot be read."""
DEFAULT_DRILL_PORT = 18200
DEFAULT_OPENBAO_IMAGE = "quay.io/openbao/openbao:2.4.1"
"""The scratch OpenBao's image when ``spec.backup.verify.openbaoImage`` is not set."""


@dataclass(frozen=True)
class Marker:
    path: str
    kv_version: int = 2


@dataclass(frozen=True)
class Verify:
    schedule: str
    time_zone: str = "UTC"
    suspend: bool = False
    openbao_image: str = DEFAULT_OPENBAO_IMAGE
    port: int = DEFAULT_DRILL_PORT
    unseal_keys: tuple[str, str] | None = None
    """(Secret name, key) of the live cluster's Shamir unseal keys."""
    seal_config: tuple[str, str, str] | None = None
    """(``Secret`` or ``ConfigMap``, name, key) of the live cluster's auto-unseal ``seal``
    stanza. Neither this nor ``unseal_keys``: the drill verifies what it can (Partial)."""


def parse_marker(raw: Any, problems: list[str]) -> Marker | None:
    if not isinstance(raw, Mapping) or not raw:
        return None
    path = str(raw.get("path") or "").strip("/")
    if not path:
        problems.append("spec.backup.marker.path: required")
        return None
    version = raw.get("kvVersion", 2)
    if version not in (1, 2):
        problems.append("spec.backup.marker.kvVersion: must be 1 or 2")
        return None
    return Marker(path=path, kv_version=int(version))


def parse_verify(raw: Any, problems: list[str]) -> Verify | None:
    if not isinstance(raw, Mapping) or not raw:
        return None
    schedule = str(raw.get("schedule") or "")
    if not schedule:
        problems.append("spec.backup.verify.schedule: required")
        return None
    port = raw.get("port", DEFAULT_DRILL_PORT)
    if not isinstance(port, int) or not 1024 <= port <= 65534:
        problems.append("spec.backup.verify.port: must be 1024..65534")
        return None
    ref = raw.get("unsealKeysSecretRef") or {}
    keys = (str(ref["name"]), str(ref.get("key") or "keys")) if ref.get("name") else None
    seal_ref = raw.get("sealConfigRef") or {}
    seal = None
    if seal_ref.get("name"):
        kind = str(seal_ref.get("kind") or "Secret")
        if kind not in ("Secret", "ConfigMap"):
            problems.append("spec.backup.verify.sealConfigRef.kind: must be Secret or ConfigMap")
            return None
        seal = (kind, str(seal_ref["name"]), str(seal_ref.get("key") or "seal.hcl"))
    if keys is not None and seal is not None:
        problems.append(
            "spec.backup.verify: set unsealKeysSecretRef (Shamir) or sealConfigRef (auto-unseal), "
            "not both"
        )
        return None
    return Verify(
        schedule=schedule,
        time_zone=str(raw.get("timeZone") or "UTC"),
        suspend=bool(raw.get("suspend", False)),
        openbao_image=str(raw.get("openbaoImage") or DEFAULT_OPENBAO_IMAGE),
        port=port,
        unseal_keys=keys,
        seal_config=seal,
    )


def verification_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return (record.get("status") or {}).get("verification") or {}


def pick(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest Succeeded record not verified yet."""
    candidates = [
        r
        for r in records
        if phase_of(r) == SUCCEEDED and not is_deleting(r) and not verification_of(r)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (created_at(r), name_of(r)))


def newest_verified(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The newest record whose drill passed (or passed partially)."""
    verified = [
        r
        for r in records
        if verification_of(r).get("result") in (PASSED, PARTIAL) and phase_of(r) == SUCCEEDED
    ]
    if not verified:
        return None
    return name_of(max(verified, key=lambda r: (created_at(r), name_of(r))))


PASSED, PARTIAL, FAILED, RUNNING = "Passed", "Partial", "Failed", "Running"


class Result(enum.Enum):
    PASSED = PASSED
    PARTIAL = PARTIAL
    FAILED = FAILED


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str
    message: str
    unsealed: bool | None = None
    marker_matched: bool | None = None


def outcome_of(job: JobResult) -> Outcome | None:
    """The verification a finished drill Job says; None while it runs."""
    if job.phase is JobPhase.RUNNING:
        return None
    report = job.report
    proved = report.drill if report is not None else None
    unsealed = proved.unsealed if proved is not None else None
    matched = proved.marker_matched if proved is not None else None
    if job.phase is JobPhase.SUCCEEDED and report is not None:
        if proved is not None and proved.partial:
            return Outcome(
                Result.PARTIAL,
                "NotUnsealed",
                "archive, size, SHA-256 and Raft index verified; not unsealed (no unseal keys "
                "given), so the data itself was not read back",
                unsealed=False,
                marker_matched=None,
            )
        checked = "and the freshness marker matched" if matched else "(no marker to check)"
        return Outcome(
            Result.PASSED,
            "Restored",
            f"restored into a scratch OpenBao, unsealed {checked}",
            unsealed=bool(unsealed),
            marker_matched=matched,
        )
    message = job.message or "the drill failed"
    reason = "MarkerMismatch" if "marker mismatch" in message else (job.reason or "Failed")
    if UNSEAL_KEYS_VARIABLE in message:
        reason = "UnsealKeysMissing"
        message = f"the unseal-keys Secret is missing or lacks its key: {message}"
    return Outcome(Result.FAILED, reason, message, unsealed=unsealed, marker_matched=matched)
