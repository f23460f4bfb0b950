"""Rows of the contract table read by one mode: Restore, Verify, Delete, Freshness marker
(backup) and Drill.

Guarantees: every module-level :class:`~executor.contract.envvar.EnvVar` here is a row of
:data:`executor.contract.TABLE`, in the order written (:mod:`executor.contract.table` collects
them); the module defines rows only and imports none from another section.
"""

from __future__ import annotations

from executor.contract.envvar import MAX_DELETE_KEYS_JSON, row

RESTORE_KEY = row(
    "Restore",
    "OBB_RESTORE_KEY",
    "Key of the snapshot to restore (its manifest must exist).",
    modes=("restore",),
    required="yes",
)
RESTORE_FORCE = row(
    "Restore",
    "OBB_RESTORE_FORCE",
    "true: POST sys/storage/raft/snapshot-force (snapshot of another cluster; the node must "
    "then be unsealed with that cluster's keys).",
    default="false",
    modes=("restore",),
)
RESTORE_APPLY_TIMEOUT = row(
    "Restore",
    "OBB_RESTORE_APPLY_TIMEOUT",
    "Seconds to watch OpenBao apply an accepted restore (active again or sealed); not "
    "seeing it is logged, not a failure.",
    default="120",
    modes=("restore",),
)
VERIFY_KEY = row(
    "Verify",
    "OBB_VERIFY_KEY",
    "Key of the snapshot to check against its manifest (read only: manifest, size, one "
    "streaming pass through the archive verifier; no OpenBao).",
    modes=("verify",),
    required="yes",
)
DELETE_KEYS = row(
    "Delete",
    "OBB_DELETE_KEYS",
    f"JSON list of snapshot keys to delete with their manifests (at most "
    f"{MAX_DELETE_KEYS_JSON} bytes); every key must be under <prefix>/<namespace>/<cluster>/.",
    modes=("delete",),
    required="yes",
)
MARKER_PATH = row(
    "Freshness marker",
    "OBB_MARKER_PATH",
    "Opt-in: OpenBao API path (no leading slash, e.g. secret/data/openbao-backup/marker for "
    "KV v2, or a KV v1 path) the backup writes {record: OBB_BACKUP_NAME (else the snapshot "
    "key), time, nonce} to with its token just before the snapshot; recorded in the manifest "
    "and the report, read back by a drill. The token's policy needs create and update on it.",
    modes=("backup",),
)
MARKER_KV_VERSION = row(
    "Freshness marker",
    "OBB_MARKER_KV_VERSION",
    '1 or 2: the KV version of the marker\'s mount (2: the body is {"data": {...}} and the '
    "path must contain /data/).",
    default="2",
    modes=("backup",),
)
DRILL_KEY = row(
    "Drill",
    "OBB_DRILL_KEY",
    "Key of the snapshot to drill: verified against its manifest, then force-restored into "
    "the scratch OpenBao beside the executor (never the live cluster).",
    modes=("drill",),
    required="yes",
)
DRILL_ADDR = row(
    "Drill",
    "OBB_DRILL_ADDR",
    "URL of the scratch OpenBao in the same pod (DRILL_SERVER_SCRIPT), e.g. "
    "http://127.0.0.1:18200; must be a loopback address and an uninitialised server.",
    modes=("drill",),
    required="yes",
)
DRILL_DONE_FILE = row(
    "Drill",
    "OBB_DRILL_DONE_FILE",
    "File in the volume shared with the scratch server's container, created when the "
    "executor ends (success, failure, bad configuration): the server's script then stops it.",
    modes=("drill",),
    required="yes",
)
UNSEAL_KEYS_FILE = row(
    "Drill",
    "OBB_UNSEAL_KEYS_FILE",
    "Mounted Secret file with the LIVE cluster's Shamir unseal keys (one per line, or a JSON "
    "list, or the JSON of bao operator init; base64 or hex), enough to reach the threshold. "
    "Without it the drill stops after the restore was accepted: partial result.",
    modes=("drill",),
)
DRILL_START_TIMEOUT = row(
    "Drill",
    "OBB_DRILL_START_TIMEOUT",
    "Seconds to wait for the scratch OpenBao at each step: to answer sys/health, to become "
    "active after init or unseal, to seal itself after the restore (auto-unseal: to unseal "
    "itself and become active again).",
    default="60",
    modes=("drill",),
)
DRILL_AUTO_UNSEAL = row(
    "Drill",
    "OBB_DRILL_AUTO_UNSEAL",
    "true: the live cluster auto-unseals and the scratch server runs with the same seal "
    "stanza (DRILL_SEAL_CONFIG of DRILL_SERVER_SCRIPT): it is initialised with recovery "
    "keys, and after the restore it must unseal itself with that seal and become active "
    "(no OBB_UNSEAL_KEYS_FILE needed).",
    default="false",
    modes=("drill",),
)
