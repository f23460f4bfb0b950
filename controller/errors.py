"""The error tree of the controller.

Guarantees:

* every error the controller raises on purpose is an :class:`OpenBaoBackupError`;
* errors from foreign libraries (kubernetes_asyncio ``ApiException``, aiohttp client errors,
  ``asyncio.TimeoutError``) are translated into this tree exactly once, at the edge, by
  :func:`controller.kube.errors.translate`; code above ``controller.kube`` never catches a
  foreign exception type;
* the tree says whether an error is worth retrying: :class:`TerminalError` never is,
  :class:`KubeError` subclasses carry ``retryable``.

The tree::

    OpenBaoBackupError
    ├── ConfigError             bad flags, environment or kubeconfig; the process exits 2
    ├── TerminalError           a reconcile failure that retrying cannot fix (not requeued)
    ├── LeadershipLost          the lease could not be renewed in time; the process exits 1
    └── KubeError               the API server said no, or could not be reached
        ├── BadRequest          400 (and any other 4xx not listed below)
        ├── Unauthorized        401
        ├── Forbidden           403
        ├── NotFound            404
        ├── Conflict            409 (stale resourceVersion: someone else wrote first)
        │   └── AlreadyExists   409 with reason AlreadyExists (create of an existing name)
        ├── Gone                410 (resourceVersion too old: relist)
        ├── Invalid             422
        ├── TooManyRequests     429 (retry after ``retry_after`` seconds when given)
        ├── ServerError         5xx
        └── Unavailable         connection refused/reset, TLS failure, DNS
            └── Timeout         connect or read timeout (a stalled watch ends here)
"""

from __future__ import annotations


class OpenBaoBackupError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(OpenBaoBackupError):
    """Invalid configuration (flags, environment, kubeconfig)."""


class TerminalError(OpenBaoBackupError):
    """A reconcile error that must not be retried (the object is wrong, not the world)."""


class LeadershipLost(OpenBaoBackupError):
    """This process was leading and could not renew its lease before the renew deadline."""


class KubeError(OpenBaoBackupError):
    """An API server call failed.

    ``status`` is the HTTP status (0 when no response was received), ``reason`` the
    ``Status.reason`` of the answer when there was one, ``message`` a short human text;
    ``method`` and ``path`` name the request (set by the client that sent it).
    """

    retryable: bool = False
    method: str = ""
    path: str = ""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class BadRequest(KubeError):
    """400, or any 4xx not mapped to a more precise class."""


class Unauthorized(KubeError):
    """401: the credentials were refused."""


class Forbidden(KubeError):
    """403: RBAC denies the call."""


class NotFound(KubeError):
    """404: the object (or its namespace, or its API) does not exist."""


class Conflict(KubeError):
    """409: the write carried a stale resourceVersion; re-read and retry."""

    retryable = True


class AlreadyExists(Conflict):
    """409 AlreadyExists: a create of a name that is taken."""

    retryable = False


class Gone(KubeError):
    """410: the requested resourceVersion is too old; relist."""

    retryable = True


class Invalid(KubeError):
    """422: the object failed validation."""


class TooManyRequests(KubeError):
    """429: throttled by the API server (API priority and fairness)."""

    retryable = True

    def __init__(
        self, message: str, *, status: int = 429, reason: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class ServerError(KubeError):
    """5xx: the API server or etcd failed."""

    retryable = True


class Unavailable(KubeError):
    """No answer: connection refused or reset, TLS or DNS failure."""

    retryable = True


class Timeout(Unavailable):
    """A connect or read timeout; for a watch, the inactivity watchdog fired."""
