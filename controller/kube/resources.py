"""Which API resources the controller touches, and how their URL paths are built.

Guarantees:

* a :class:`Resource` (group, version, plural, kind, scope) is all the generic client and the
  informers need; there is no per-kind code, so CRDs, Jobs, Pods and Leases go through the
  same path;
* :meth:`Resource.path` builds ``/api/v1/...`` for the core group and
  ``/apis/GROUP/VERSION/...`` otherwise, escaping nothing the API server would not accept
  (names are DNS labels/subdomains).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

BACKUP_GROUP = "backup.openbao.org"
BACKUP_VERSION = "v1alpha1"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "openbao-backup"
MANAGED_BY_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
"""Every object the controller creates carries this label; its informers select on it."""

MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""metav1.MicroTime as the API server wants it (Leases, Events): UTC, six fractional digits."""


def format_microtime(when: dt.datetime) -> str:
    """``when`` (timezone-aware) as a MicroTime string."""
    if when.utcoffset() is None:
        raise ValueError("naive datetime: a MicroTime needs a timezone-aware time")
    return when.astimezone(dt.UTC).strftime(MICROTIME_FORMAT)


@dataclass(frozen=True, kw_only=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def display(self) -> str:
        """``plural.group`` (``pods`` for the core group), as kubectl names it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


OPENBAO_CLUSTER = Resource(
    group=BACKUP_GROUP, version=BACKUP_VERSION, plural="openbaoclusters", kind="OpenBaoCluster"
)
OPENBAO_BACKUP = Resource(
    group=BACKUP_GROUP, version=BACKUP_VERSION, plural="openbaobackups", kind="OpenBaoBackup"
)
OPENBAO_RESTORE = Resource(
    group=BACKUP_GROUP, version=BACKUP_VERSION, plural="openbaorestores", kind="OpenBaoRestore"
)
JOB = Resource(group="batch", version="v1", plural="jobs", kind="Job")
POD = Resource(group="", version="v1", plural="pods", kind="Pod")
LEASE = Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease")
NAMESPACE = Resource(
    group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False
)
