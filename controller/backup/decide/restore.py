"""OpenBaoRestore, as pure decisions: the spec, the source, the phases, the verification.

Guarantees:

* :func:`parse_restore` is total: a :class:`RestoreSpec` or :class:`~.spec.SpecError` naming
  each bad field (the CRD refuses most of them at admission already);
* :func:`resolve_source` turns the spec into the one snapshot to restore (:class:`Source`), or a
  :class:`Refusal` with a CamelCase reason; it never lets through a key outside the target
  cluster's ``<pathPrefix>/<namespace>/<cluster>/`` unless the restore is ``force`` AND
  ``allowForeignKey`` (a snapshot of another cluster, named explicitly), nor a key with ``..``
  segments, a leading ``/``, ``//`` or a backslash, whatever admission said;
* no storage endpoint the executor would send credentials to is a link-local or
  cloud-metadata address (:mod:`.addresses`): ``spec.target.endpoint`` is refused by
  :func:`parse_restore` unless the restore sets ``spec.allowLinkLocalAddresses`` (the CRD's
  admission rule, for objects written before it), and the target a source resolves to (a
  record's recorded target, the cluster's) by :func:`resolve_source` (``AddressNotAllowed``)
  unless the restore or the cluster opts out;
* a record is a source only once it ``Succeeded`` with a key; the target it was written to
  (``status.target``) wins over the cluster's current one, so a cluster that moved buckets can
  still restore old backups;
* :func:`assess_applied` says whether OpenBao came back after the restore Job: for a normal
  restore, initialised, unsealed, an active node and a Raft applied index at least the
  snapshot's; for ``force``, sealed (it must be unsealed with the source cluster's keys);
* phases only move forward (:data:`PHASES`); a Failed restore is never retried.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.backup.decide.addresses import ALLOW_FIELD, address_problems
from controller.backup.decide.preflight import HealthProbe
from controller.backup.decide.records import SUCCEEDED, phase_of
from controller.backup.decide.spec import (
    Auth,
    SpecError,
    Target,
    parse_auth,
    parse_target,
)
from executor.layout import SNAPSHOT_SUFFIX, cluster_prefix

PENDING = "Pending"
VALIDATING = "Validating"
SAFETY_SNAPSHOT = "SafetySnapshot"
RESTORING = "Restoring"
VERIFYING = "Verifying"
SUCCEEDED_PHASE = "Succeeded"
FAILED_PHASE = "Failed"
PHASES = (PENDING, VALIDATING, SAFETY_SNAPSHOT, RESTORING, VERIFYING)
TERMINAL_PHASES = frozenset({SUCCEEDED_PHASE, FAILED_PHASE})
DEFAULT_VERIFY_TIMEOUT_SECONDS = 600
ADDRESS_NOT_ALLOWED = "AddressNotAllowed"
"""The refusal of a source whose storage endpoint is a link-local or metadata address."""

# Condition types of OpenBaoRestore.status
VALIDATED = "Validated"
SAFETY_SNAPSHOT_TAKEN = "SafetySnapshotTaken"
RESTORED = "Restored"
VERIFIED = "Verified"
UNSEAL_REQUIRED = "UnsealRequired"


@dataclass(frozen=True)
class RestoreSpec:
    namespace: str
    name: str
    uid: str
    cluster: str
    backup_name: str | None
    key: str | None
    target: Target | None
    force: bool
    allow_foreign_key: bool
    safety_snapshot: bool
    auth: Auth | None
    verify_timeout_seconds: int
    allow_link_local: bool = False


@dataclass(frozen=True)
class Source:
    key: str
    target: Target
    backup_name: str | None = None


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def parse_restore(obj: Mapping[str, Any]) -> RestoreSpec:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    problems: list[str] = []
    target = None
    allow = spec.get(ALLOW_FIELD) is True
    problems += address_problems(
        path="spec.target.endpoint",
        address=(spec.get("target") or {}).get("endpoint"),
        allow=allow,
    )
    if spec.get("target"):
        try:
            target = parse_target(spec["target"])
        except ValueError as exc:
            problems.append(f"spec.target: {exc}")
    auth = parse_auth(spec["auth"], problems, path="spec.auth") if spec.get("auth") else None
    backup_name, key = spec.get("backupName") or None, spec.get("key") or None
    if (backup_name is None) == (key is None):
        problems.append("spec: set exactly one of backupName or key")
    if not spec.get("cluster"):
        problems.append("spec.cluster: required")
    if problems:
        raise SpecError(problems)
    return RestoreSpec(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        cluster=str(spec["cluster"]),
        backup_name=backup_name,
        key=key,
        target=target,
        force=bool(spec.get("force", False)),
        allow_foreign_key=bool(spec.get("allowForeignKey", False)),
        safety_snapshot=bool(spec.get("safetySnapshot", True)),
        auth=auth,
        verify_timeout_seconds=int(
            spec.get("verifyTimeoutSeconds") or DEFAULT_VERIFY_TIMEOUT_SECONDS
        ),
        allow_link_local=allow,
    )


def key_problem(key: str) -> str:
    """Why ``key`` is not a plain snapshot key (empty if it is one)."""
    if not key.endswith(SNAPSHOT_SUFFIX):
        return f"key {key!r} is not a snapshot key (it must end in {SNAPSHOT_SUFFIX})"
    if key.startswith("/") or "//" in key or "\\" in key:
        return f"key {key!r} must be relative, without '//' or backslashes"
    if any(part in ("..", ".") for part in key.split("/")):
        return f"key {key!r} must not contain '.' or '..' segments"
    return ""


def resolve_source(
    *,
    restore: RestoreSpec,
    cluster_target: Target,
    record: Mapping[str, Any] | None,
    cluster_allows_link_local: bool = False,
) -> Source | Refusal:
    """The snapshot ``restore`` asks for. ``record``: its OpenBaoBackup (backupName only);
    ``cluster_allows_link_local``: the cluster's ``spec.allowLinkLocalAddresses``."""
    if restore.backup_name is not None:
        if record is None:
            return Refusal("BackupNotFound", f"OpenBaoBackup {restore.backup_name} not found")
        status = record.get("status") or {}
        if phase_of(record) != SUCCEEDED or not status.get("key"):
            return Refusal(
                "BackupNotSucceeded",
                f"OpenBaoBackup {restore.backup_name} has no snapshot (phase {phase_of(record)})",
            )
        key = str(status["key"])
        target = cluster_target
        if status.get("target"):
            try:
                target = parse_target(status["target"])
            except ValueError:
                target = cluster_target
        source = Source(key=key, target=target, backup_name=restore.backup_name)
    else:
        assert restore.key is not None
        source = Source(key=restore.key, target=restore.target or cluster_target)
    allow = restore.allow_link_local or cluster_allows_link_local
    refused = address_problems(path="target.endpoint", address=source.target.endpoint, allow=allow)
    if refused:
        return Refusal(ADDRESS_NOT_ALLOWED, refused[0])
    problem = key_problem(source.key)
    if problem:
        return Refusal("InvalidKey", problem)
    prefix = cluster_prefix(
        path_prefix=source.target.path_prefix,
        namespace=restore.namespace,
        cluster=restore.cluster,
    )
    if not source.key.startswith(prefix) and not (restore.force and restore.allow_foreign_key):
        return Refusal(
            "KeyOutsidePrefix",
            f"key {source.key!r} is outside {prefix!r}; to restore another cluster's snapshot "
            "set force: true and allowForeignKey: true",
        )
    return source


class Applied(enum.Enum):
    WAITING = "Waiting"
    ACTIVE = "Active"  # a normal restore came back: verified
    SEALED = "Sealed"  # a forced restore came back sealed: unseal required


@dataclass(frozen=True)
class AppliedVerdict:
    state: Applied
    message: str


def assess_applied(*, probe: HealthProbe, force: bool, raft_index: int | None) -> AppliedVerdict:
    """Has OpenBao come back after the restore Job?"""
    if not probe.reachable:
        return AppliedVerdict(Applied.WAITING, f"OpenBao not reachable: {probe.error}")
    if not probe.initialized:
        return AppliedVerdict(Applied.WAITING, "OpenBao is not initialised")
    if probe.sealed:
        if force:
            return AppliedVerdict(
                Applied.SEALED,
                "OpenBao is sealed with the snapshot's seal: unseal it with the keys of the "
                "cluster the snapshot came from",
            )
        return AppliedVerdict(Applied.WAITING, "OpenBao is sealed")
    has_active = (not probe.standby) or bool(probe.leader_address) or probe.is_self
    if not has_active:
        return AppliedVerdict(Applied.WAITING, "OpenBao has no active node")
    applied = probe.raft_applied_index
    if raft_index is not None and applied is not None and applied < raft_index:
        return AppliedVerdict(
            Applied.WAITING, f"Raft applied index {applied} is below the snapshot's {raft_index}"
        )
    return AppliedVerdict(
        Applied.ACTIVE,
        f"OpenBao is active; Raft applied index {applied if applied is not None else 'unknown'}",
    )
