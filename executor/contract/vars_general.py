"""Rows of the contract table: the General and Cluster sections.

Guarantees: every module-level :class:`~executor.contract.envvar.EnvVar` here is a row of
:data:`executor.contract.TABLE`, in the order written (:mod:`executor.contract.table` collects
them); the module defines rows only and imports none from another section.
"""

from __future__ import annotations

from executor.contract.envvar import row

TERMINATION_MESSAGE_PATH = row(
    "General",
    "OBB_TERMINATION_MESSAGE_PATH",
    "File the JSON result report is written to (the container's terminationMessagePath).",
    default="/dev/termination-log",
)
LOG_LEVEL = row("General", "OBB_LOG_LEVEL", "debug, info, warning or error.", default="info")
TIMEOUT = row(
    "General",
    "OBB_TIMEOUT",
    "Overall deadline in seconds, 0 = none. Set it below the Job's activeDeadlineSeconds so a "
    "report is always written.",
    default="0",
)
CONNECT_TIMEOUT = row(
    "General",
    "OBB_CONNECT_TIMEOUT",
    "TCP+TLS connect timeout (seconds), OpenBao and storage.",
    default="10",
)
CLUSTER_NAMESPACE = row(
    "Cluster",
    "OBB_CLUSTER_NAMESPACE",
    "Namespace of the OpenBao cluster (key layout).",
    required="yes",
)
CLUSTER_NAME = row(
    "Cluster", "OBB_CLUSTER_NAME", "Name of the OpenBao cluster (key layout).", required="yes"
)
CLUSTER_UID = row(
    "Cluster",
    "OBB_CLUSTER_UID",
    "UID of the OpenBao cluster object (recorded in the manifest).",
    modes=("backup",),
    required="yes",
)
TRIGGER = row(
    "Cluster",
    "OBB_TRIGGER",
    "Why this backup runs, e.g. scheduled or manual (recorded in the manifest); "
    "1-63 of [A-Za-z0-9._:-].",
    default="manual",
    modes=("backup",),
)
BACKUP_NAME = row(
    "Cluster",
    "OBB_BACKUP_NAME",
    "Name of the backup object (recorded in the manifest).",
    modes=("backup",),
)
