"""Where snapshots and their manifests live in the bucket, and what a manifest says.

Guarantees:

* a snapshot key is ``<pathPrefix>/<namespace>/<cluster>/<YYYYMMDDTHHMMSSZ>-<8 hex>.snap``
  (no leading ``<pathPrefix>/`` when the prefix is empty); the timestamp is the UTC second the
  snapshot request was sent to OpenBao, so keys of one cluster sort by time;
* the manifest of a snapshot is the JSON object at ``<snapshot key>.manifest.json``, written
  only after the snapshot object was committed; it records the snapshot's sha256 and size and
  enough context (OpenBao version, Raft index/term, cluster identity, trigger, times,
  executor version) to rebuild a catalog from the bucket alone;
* a snapshot object WITHOUT a manifest is not a backup: the executor never leaves one on
  purpose (if the manifest cannot be written it deletes the snapshot), but a crash between the
  two writes can. A catalog rebuild must treat such an object as unverified: ignore it for
  retention counting and restore, and either re-verify it (stream it through
  :class:`executor.archive.SnapshotVerifier` and write the manifest) or delete it after a grace
  period (older than the longest backup Job deadline);
* a manifest MAY carry a freshness ``marker`` (:class:`Marker`: the OpenBao path, KV version,
  record, time and nonce the backup wrote just before taking the snapshot, so the snapshot's
  data holds it); manifests without one (older executors, marker not configured) stay valid,
  and a manifest without a marker is written without the field;
* :func:`Manifest.from_json` is strict on types and tolerant of unknown fields.

The controller may import this module; it depends on the standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

SNAPSHOT_SUFFIX = ".snap"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})\.snap$")


def cluster_prefix(*, path_prefix: str, namespace: str, cluster: str) -> str:
    """``<pathPrefix>/<namespace>/<cluster>/`` (every key of the cluster starts with it)."""
    parts = [p for p in (path_prefix.strip("/"), namespace, cluster) if p]
    return "/".join(parts) + "/"


def snapshot_key(
    *, path_prefix: str, namespace: str, cluster: str, taken_at: dt.datetime, suffix: str
) -> str:
    """The key of a snapshot taken at ``taken_at`` (UTC); ``suffix`` is 8 lowercase hex."""
    if not re.fullmatch(r"[0-9a-f]{8}", suffix):
        raise ValueError(f"suffix must be 8 lowercase hex digits, got {suffix!r}")
    stamp = taken_at.astimezone(dt.UTC).strftime(_STAMP)
    prefix = cluster_prefix(path_prefix=path_prefix, namespace=namespace, cluster=cluster)
    return f"{prefix}{stamp}-{suffix}{SNAPSHOT_SUFFIX}"


def manifest_key(snapshot: str) -> str:
    """The manifest key beside ``snapshot``."""
    if not snapshot.endswith(SNAPSHOT_SUFFIX):
        raise ValueError(f"not a snapshot key: {snapshot!r}")
    return snapshot + MANIFEST_SUFFIX


def snapshot_time(key: str) -> dt.datetime | None:
    """The UTC time encoded in a snapshot key's file name, or None if it has another shape."""
    m = _NAME.match(key.rsplit("/", 1)[-1])
    if not m:
        return None
    return dt.datetime.strptime(m.group(1), _STAMP).replace(tzinfo=dt.UTC)


def rfc3339(t: dt.datetime) -> str:
    """``2026-11-21T23:30:45.123Z`` (UTC, milliseconds)."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return t


@dataclass(frozen=True)
class Marker:
    """The freshness marker a backup wrote into OpenBao before its snapshot (JSON names).

    ``value()`` is what sits at ``path`` (under ``data`` for KV v2): record, time, nonce."""

    path: str
    kvVersion: int
    record: str
    time: str
    nonce: str

    def value(self) -> dict[str, str]:
        return {"record": self.record, "time": self.time, "nonce": self.nonce}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, *, what: str = "marker") -> Marker:
        if not isinstance(data, dict):
            raise ValueError(f"{what} must be an object")
        kw: dict[str, Any] = {}
        for name in ("path", "record", "time", "nonce"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} field {name!r} must be a non-empty string")
            kw[name] = value
        version = data.get("kvVersion")
        if version not in (1, 2) or isinstance(version, bool):
            raise ValueError(f"{what} field 'kvVersion' must be 1 or 2")
        return cls(kvVersion=version, **kw)


@dataclass(frozen=True)
class Manifest:
    """The JSON document beside each snapshot (field names are the JSON names)."""

    key: str
    sha256: str
    size: int
    createdAt: str
    takenAt: str
    namespace: str
    cluster: str
    clusterUID: str | None
    trigger: str
    backupName: str | None
    openbaoVersion: str | None
    raftIndex: int
    raftTerm: int
    raftConfigurationIndex: int | None
    snapshotMetaVersion: int
    executorVersion: str
    v: int = MANIFEST_VERSION
    marker: Marker | None = None

    def to_json(self) -> str:
        data = asdict(self)
        if self.marker is None:
            del data["marker"]
        return json.dumps(data, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"manifest is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        if data.get("v") != MANIFEST_VERSION or isinstance(data.get("v"), bool):
            raise ValueError(f"unsupported manifest version {data.get('v')!r}")
        kw: dict[str, Any] = {}
        for name, kind, optional in _FIELDS:
            value = data.get(name)
            if value is None:
                if not optional:
                    raise ValueError(f"manifest field {name!r} is missing")
                kw[name] = None
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"manifest field {name!r} has the wrong type")
            kw[name] = value
        if not re.fullmatch(r"[0-9a-f]{64}", kw["sha256"]):
            raise ValueError("manifest sha256 is not 64 lowercase hex digits")
        if kw["size"] < 0:
            raise ValueError("manifest size is negative")
        raw_marker = data.get("marker")
        if raw_marker is not None:
            kw["marker"] = Marker.from_dict(raw_marker, what="manifest marker")
        return cls(**kw)


_FIELDS: tuple[tuple[str, type, bool], ...] = (
    ("key", str, False),
    ("sha256", str, False),
    ("size", int, False),
    ("createdAt", str, False),
    ("takenAt", str, False),
    ("namespace", str, False),
    ("cluster", str, False),
    ("clusterUID", str, True),
    ("trigger", str, False),
    ("backupName", str, True),
    ("openbaoVersion", str, True),
    ("raftIndex", int, False),
    ("raftTerm", int, False),
    ("raftConfigurationIndex", int, True),
    ("snapshotMetaVersion", int, False),
    ("executorVersion", str, False),
)
