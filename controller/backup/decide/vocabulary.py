"""Every label, annotation, finalizer and phase name of the backup manager, defined once.

Guarantees:

* each string that other tools, users or our own informers match on is defined here and only
  here (``app.kubernetes.io/managed-by`` comes from :mod:`controller.kube.resources`, which
  the informers' label selector is built from);
* every name is part of the public contract (docs/backup-manager.md,
  docs/operation-lock.md): changing one is a breaking change.
"""

from __future__ import annotations

from controller.kube.resources import LABEL_MANAGED_BY, MANAGED_BY

__all__ = [
    "COALESCED_MAX",
    "FAILED",
    "JOB_NAME_LABEL",
    "LABEL_BACKUP",
    "LABEL_CLUSTER",
    "LABEL_LOCK",
    "LABEL_MANAGED_BY",
    "LABEL_PURPOSE",
    "LABEL_RESTORE",
    "LEGACY_JOB_NAME_LABEL",
    "LOCK_LABEL_VALUE",
    "MANAGED_BY",
    "PENDING",
    "RESULT_FINALIZER",
    "RUNNING",
    "SNAPSHOT_FINALIZER",
    "SUCCEEDED",
    "TERMINAL",
    "TRIGGER_ANNOTATION",
    "TRIGGER_VALUE_ANNOTATION",
    "VERIFY_TRIGGER_ANNOTATION",
    "WINDOW_ANNOTATION",
]

# -- labels ------------------------------------------------------------------------------------
LABEL_CLUSTER = "backup.openbao.org/cluster"
"""On records, Jobs, pods and the lock Lease: the OpenBaoCluster they belong to."""
LABEL_BACKUP = "backup.openbao.org/backup"
"""On Jobs and pods: the OpenBaoBackup record (a DNS label; hashed when the name is longer)."""
LABEL_PURPOSE = "backup.openbao.org/purpose"
"""On Jobs and pods: ``backup``, ``delete``, ``verify`` or ``restore``."""
LABEL_RESTORE = "backup.openbao.org/restore"
"""On verify/restore Jobs and pods, and on a restore's safety-snapshot record: the
OpenBaoRestore (a DNS label; hashed when the name is longer)."""
LABEL_LOCK = "backup.openbao.org/lock"
LOCK_LABEL_VALUE = "operation"
"""``backup.openbao.org/lock=operation`` marks a cluster's operation-lock Lease."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
"""The Job controller's labels on the pods of a Job."""

# -- annotations -------------------------------------------------------------------------------
TRIGGER_ANNOTATION = "backup.openbao.org/trigger"
"""On an OpenBaoCluster: a new value asks for a backup now (kubectl annotate --overwrite)."""
VERIFY_TRIGGER_ANNOTATION = "backup.openbao.org/verify"
"""On an OpenBaoCluster: a new value asks for a restore drill now (needs spec.backup.verify)."""
WINDOW_ANNOTATION = "backup.openbao.org/scheduled-time"
"""On a scheduled record: the cron window it runs."""
TRIGGER_VALUE_ANNOTATION = "backup.openbao.org/trigger-value"
"""On a manual record: the trigger value that created it."""

# -- finalizers --------------------------------------------------------------------------------
SNAPSHOT_FINALIZER = "backup.openbao.org/snapshot"
"""On records: removed only once the record's snapshot is deleted (or is to be kept)."""
RESULT_FINALIZER = "backup.openbao.org/result"
"""On executor Jobs and pods: removed only once their result is recorded."""

# -- record phases -----------------------------------------------------------------------------
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL = frozenset({SUCCEEDED, FAILED})

COALESCED_MAX = 32
"""At most this many coalesced trigger values are listed on a record (the count is exact)."""
