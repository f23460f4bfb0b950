"""Deterministic names of the objects the backup manager creates.

Guarantees:

* every function is pure and total: the same inputs always give the same name, on every
  controller replica and after every restart, so a create that answers AlreadyExists means
  "already done" (exactly one record and one Job per window or trigger);
* every returned name is a valid RFC 1123 DNS label of at most 63 characters (lower-case
  alphanumerics and ``-``, starting and ending alphanumeric), so it is also a valid object
  name and label value, whatever the input (up to 253-character names, upper case, dots);
* a name that already fits is used unchanged; one that does not is sanitised, truncated and
  given a stable 8-hex-digit suffix hashed from the *unsanitised* input, so two different
  inputs that sanitise or truncate to the same prefix still get different names.

With the OpenBaoCluster name limit of 40 characters (enforced by the CRD) nothing derived
from a cluster needs the hash: ``<40>-<12 digits>-backup`` is 60 characters and
``<40>-manual-<8>-backup`` is 63.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import UTC, datetime

MAX_LABEL = 63
HASH_LEN = 8
CLUSTER_NAME_MAX = 40
"""The CRD's limit on OpenBaoCluster names; keeps every derived name below 63 unhashed."""

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INVALID = re.compile(r"[^a-z0-9-]+")


class JobPurpose(enum.Enum):
    """What an executor Job does; the value is the Job name's suffix.

    BACKUP, DELETE and DRILL jobs are named after their OpenBaoBackup, VERIFY and RESTORE jobs
    after their OpenBaoRestore."""

    BACKUP = "backup"
    DELETE = "delete"
    VERIFY = "verify"
    RESTORE = "restore"
    DRILL = "drill"


def is_dns_label(name: str) -> bool:
    """True if ``name`` is an RFC 1123 label of at most 63 characters."""
    return len(name) <= MAX_LABEL and bool(_LABEL_RE.match(name))


def short_hash(text: str, length: int = HASH_LEN) -> str:
    """The first ``length`` hex digits of SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def fit_label(base: str, *, suffix: str = "") -> str:
    """``<base>-<suffix>`` (or ``base``) as a DNS label of at most 63 characters.

    Unchanged when it already is one; otherwise ``<sanitised truncated base>-<hash>[-suffix]``
    where the hash covers ``base`` and ``suffix`` exactly as given.
    """
    if suffix and not is_dns_label(suffix):
        raise ValueError(f"suffix {suffix!r} is not a DNS label")
    tail = f"-{suffix}" if suffix else ""
    candidate = f"{base}{tail}"
    if is_dns_label(candidate):
        return candidate
    digest = short_hash(f"{base}\x00{suffix}")
    room = MAX_LABEL - len(tail) - HASH_LEN - 1
    if room < 0:
        raise ValueError(f"suffix {suffix!r} is too long")
    prefix = _INVALID.sub("-", base.lower())[:room].strip("-")
    return f"{prefix}-{digest}{tail}" if prefix else f"{digest}{tail}"


def scheduled_record_name(*, cluster: str, window: datetime) -> str:
    """The OpenBaoBackup record of a scheduled window: ``<cluster>-<UTC yyyymmddhhmm>``."""
    if window.utcoffset() is None:
        raise ValueError("window must be timezone-aware")
    return fit_label(f"{cluster}-{window.astimezone(UTC):%Y%m%d%H%M}")


def manual_record_name(*, cluster: str, trigger_value: str) -> str:
    """The OpenBaoBackup record of a trigger-annotation value: ``<cluster>-manual-<hash>``."""
    return fit_label(f"{cluster}-manual-{short_hash(trigger_value)}")


def job_name(*, record: str, purpose: JobPurpose) -> str:
    """The executor Job for a record (OpenBaoBackup or OpenBaoRestore): ``<record>-<purpose>``."""
    return fit_label(record, suffix=purpose.value)


def lease_name(*, cluster: str) -> str:
    """The operation-lock Lease of a cluster: ``<cluster>-openbao-oplock``."""
    return fit_label(cluster, suffix="openbao-oplock")
