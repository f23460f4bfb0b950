"""The failure model of the reconcile loop: every error of a step is classified here, once.

Guarantees:

* :func:`classify` is pure and total: any exception gives exactly one :class:`Failure`;
* three kinds, and what each means for a record (see docs/backup-manager.md, "Failures")::

      Kind.TRANSIENT  the world may fix it: 409 (not AlreadyExists), 429, 5xx, 403, an
                      unexpected 404, timeouts, connection errors. Retried with backoff; the
                      record keeps its phase.
      Kind.TERMINAL   retrying cannot fix it: the API server refused an object we built (400,
                      422), or the spec cannot produce a valid one (SpecError, ValueError).
                      The record ends Failed with reason ``<Kind>Rejected`` / ``InvalidSpec``,
                      or ``ExecutorImageNotAllowed`` when the spec names an image the
                      controller does not trust (:mod:`.images`).
      Kind.BUG        anything else. The record ends Failed with reason ``InternalError`` and
                      the exception class; ``openbao_backup_reconcile_errors_total`` counts it.

* ``ambiguous`` is true when the request may have taken effect although it failed (a timeout,
  a lost connection, a 5xx): a Job create that failed that way may have created the Job, so
  the lock is kept until the next reconcile sees;
* messages are one printable line of at most :data:`MAX_MESSAGE` characters; they come from
  the API server (which names the offending field) or from our own exceptions, never from a
  Secret.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller import errors
from controller.backup.decide.images import IMAGE_NOT_ALLOWED, ImageNotAllowed
from controller.backup.decide.jobresult import clean
from controller.backup.decide.spec import SpecError

MAX_MESSAGE = 1024


class Kind(enum.Enum):
    TRANSIENT = "transient"
    TERMINAL = "terminal"
    BUG = "bug"


class Step(enum.Enum):
    """The steps of one reconcile, in order (metric label values)."""

    DELETION = "deletion"
    RUNNING = "running"
    FINISH = "finish"
    RESTORE = "restore"
    DRILL = "drill"
    SCHEDULE = "schedule"
    TRIGGER = "trigger"
    LAUNCH = "launch"
    BOOKKEEPING = "bookkeeping"
    RENEWAL = "renewal"  # the lock renewal path beside the workers (act/renewer), not a pass

    @property
    def per_record(self) -> bool:
        """A terminal or bug failure of this step fails its record (or restore)."""
        return self in (Step.LAUNCH, Step.RUNNING, Step.RESTORE)

    @property
    def title(self) -> str:
        return self.value.capitalize()


@dataclass(frozen=True)
class Failure:
    kind: Kind
    reason: str
    """CamelCase: the record's ``failureReason`` and the event reason (terminal and bug)."""
    message: str
    ambiguous: bool = False


TRANSIENT_ERRORS: tuple[type[errors.KubeError], ...] = (
    errors.Conflict,
    errors.TooManyRequests,
    errors.ServerError,
    errors.Unavailable,
    errors.Forbidden,
    errors.NotFound,
    errors.Gone,
    errors.Unauthorized,
)
AMBIGUOUS_ERRORS: tuple[type[errors.KubeError], ...] = (errors.ServerError, errors.Unavailable)


KINDS = {
    "jobs": "Job",
    "leases": "Lease",
    "openbaobackups": "OpenBaoBackup",
    "openbaoclusters": "OpenBaoCluster",
    "openbaorestores": "OpenBaoRestore",
    "pods": "Pod",
    "events": "Event",
    "configmaps": "ConfigMap",
}


def kind_of_path(path: str) -> str:
    """The API kind a request path names (``/apis/batch/v1/namespaces/n/jobs/x`` -> ``Job``)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    for part in reversed(parts):
        if part in KINDS:
            return KINDS[part]
    return "Object"


def classify(exc: BaseException) -> Failure:
    """What ``exc`` means for the step that raised it."""
    text = clean(str(exc) or exc.__class__.__name__, MAX_MESSAGE)
    if isinstance(exc, errors.KubeError):
        if isinstance(exc, errors.AlreadyExists):
            # Callers handle AlreadyExists where it means "done"; anywhere else it is a bug.
            return Failure(Kind.BUG, "InternalError", f"AlreadyExists: {text}")
        if isinstance(exc, TRANSIENT_ERRORS):
            return Failure(
                Kind.TRANSIENT,
                exc.__class__.__name__,
                text,
                ambiguous=isinstance(exc, AMBIGUOUS_ERRORS),
            )
        return Failure(Kind.TERMINAL, f"{kind_of_path(exc.path)}Rejected", text)
    if isinstance(exc, ImageNotAllowed):
        return Failure(Kind.TERMINAL, IMAGE_NOT_ALLOWED, text)
    if isinstance(exc, SpecError | ValueError):
        return Failure(Kind.TERMINAL, "InvalidSpec", text)
    if isinstance(exc, TimeoutError):
        return Failure(Kind.TRANSIENT, "Timeout", text, ambiguous=True)
    return Failure(Kind.BUG, "InternalError", clean(f"{exc.__class__.__name__}: {exc}"))
