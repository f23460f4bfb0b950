"""The apiserver's audit log, for lanes that must prove an identity was never refused.

Guarantees:

* :func:`audit_flags` gives kube-apiserver a policy that records every request once, at its
  final stage (``ResponseComplete``; ``Panic`` too), at level ``Metadata`` (who, verb, resource,
  response code; never a request or response body, so no Secret can land in the log), as JSON
  lines in ``<workdir>/audit.log``;
* :func:`refused` reads that log and returns every request of the given users that the
  authorizer (RBAC) denied, by the event's ``authorization.k8s.io/decision: forbid``
  annotation, not by the 403 alone: a create in a namespace being deleted is also a 403, from
  admission, and says nothing about RBAC. In order, as one line each
  (``verb resource[/subresource] namespace/name``); a missing log raises, so a lane that forgot
  to turn auditing on fails instead of passing vacuously.

``ControlPlane(audit=True)`` turns it on. Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

AUDIT_LOG = "audit.log"
_DECISION = "authorization.k8s.io/decision"
_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def audit_flags(workdir: Path) -> list[str]:
    """kube-apiserver flags that write the audit log under ``workdir``."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(_POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / AUDIT_LOG}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",  # every event is on disk when the response is sent
    ]


def refused(workdir: Path, *, users: Collection[str]) -> list[str]:
    """Every request of ``users`` that RBAC denied, as ``verb resource ns/name``."""
    log = workdir / AUDIT_LOG
    if not log.exists():
        raise FileNotFoundError(f"{log}: no audit log (start the ControlPlane with audit=True)")
    found: list[str] = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") not in users:
            continue
        if event.get("annotations", {}).get(_DECISION) != "forbid":
            continue
        ref = event.get("objectRef", {})
        resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
        where = "/".join(p for p in (ref.get("namespace"), ref.get("name")) if p)
        found.append(f"{event['verb']} {resource or event.get('requestURI')} {where}".strip())
    return found
