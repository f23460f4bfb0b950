"""The error tree of the executor.

Guarantees:

* every error the executor raises on purpose is an :class:`ExecutorError`, and every
  :class:`ExecutorError` belongs to exactly one *error class* of the result report
  (``configuration``, ``auth``, ``leader``, ``snapshot``, ``storage``, ``verification``,
  ``internal``), which fixes the process exit code (see :mod:`executor.report`);
* errors of foreign libraries are translated into this tree exactly once, at the edge that
  called the library: aiohttp errors talking to OpenBao in :mod:`executor.openbao`, botocore in
  :mod:`executor.storage.s3_errors`, aiohttp/gcloud-aio-auth in
  :mod:`executor.storage.gcs_http`, azure-core/azure-identity in
  :mod:`executor.storage.azure_errors`;
  code above those modules never catches a foreign exception type;
* messages never contain secret values (tokens, keys, connection strings): edges build their
  messages from status codes and server error texts, and :mod:`executor.secrets` scrubs every
  message once more before it is logged or reported.

The tree::

    ExecutorError
    ├── ConfigurationError   bad or missing environment, unreadable files,
    │                        key outside the cluster prefix              -> exit 10
    ├── AuthError            OpenBao login refused, token unreadable/refused,
    │                        permission denied on a snapshot path        -> exit 11
    ├── LeaderError          OpenBao unreachable, sealed, no active node,
    │                        or leadership moved mid-restore (307)       -> exit 12
    ├── SnapshotError        the snapshot stream broke (reset, timeout, HTTP error)
    │                        or OpenBao refused the restore              -> exit 13
    ├── StorageError         the bucket said no or could not be reached  -> exit 14
    │   └── ObjectNotFound   the object (or the bucket) does not exist
    ├── VerificationError    content check failed: incomplete/corrupt archive,
    │                        sha256/size differs from the manifest, no manifest -> exit 15
    │   └── ArchiveError     the gzip+tar stream is not a complete OpenBao snapshot
    └── InternalError        a bug or an unexpected condition            -> exit 1

Storage credentials that are rejected are ``StorageError`` (the remedy is on the bucket side),
while storage credentials that are *absent or malformed* are ``ConfigurationError``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorClass = Literal[
    "configuration", "auth", "leader", "snapshot", "storage", "verification", "internal"
]


class ExecutorError(Exception):
    """Base class of every error the executor raises on purpose."""

    error_class: ClassVar[ErrorClass] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ExecutorError):
    """The Job's environment is wrong; retrying the same Job cannot succeed."""

    error_class = "configuration"


class AuthError(ExecutorError):
    """OpenBao did not accept our identity, or our token lacks a needed capability."""

    error_class = "auth"


class LeaderError(ExecutorError):
    """No usable active OpenBao node: unreachable, sealed, leaderless or changing leader."""

    error_class = "leader"


class SnapshotError(ExecutorError):
    """The snapshot stream from OpenBao failed, or OpenBao refused a restore."""

    error_class = "snapshot"


class StorageError(ExecutorError):
    """The object store refused a request or could not be reached."""

    error_class = "storage"


class ObjectNotFound(StorageError):
    """The object, or its bucket/container, does not exist."""


class VerificationError(ExecutorError):
    """The bytes are not what they must be (incomplete archive, checksum mismatch)."""

    error_class = "verification"


class ArchiveError(VerificationError):
    """The stream is not a complete, self-consistent OpenBao Raft snapshot archive."""


class InternalError(ExecutorError):
    """An unexpected condition (a bug); the report carries the exception text."""

    error_class = "internal"


#: The exception type standing for each error class (used to report a deadline or signal
#: with the class of the phase it interrupted).
BY_CLASS: dict[ErrorClass, type[ExecutorError]] = {
    "configuration": ConfigurationError,
    "auth": AuthError,
    "leader": LeaderError,
    "snapshot": SnapshotError,
    "storage": StorageError,
    "verification": VerificationError,
    "internal": InternalError,
}
