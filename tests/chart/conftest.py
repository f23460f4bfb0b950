"""Helpers for the chart lane: render charts/openbao-backup with the built helm and pick objects
out of the result; the controller's needs as a table of API permissions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devenv.chart import load_docs, render

Doc = dict[str, Any]

# What the controller does through the API in each namespace it watches (controller/backup/act,
# controller/kube): (API group, resource[/subresource], verbs). The e2e lane runs the controller
# under the shipped role, which proves the rules suffice; the chart lane proves each mode's
# roles grant exactly these where they should and nothing of them elsewhere.
CONTROLLER_NEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("backup.openbao.org", "openbaoclusters", ("get", "list", "watch", "update", "patch")),
    ("backup.openbao.org", "openbaobackups", ("get", "list", "watch", "create", "patch", "delete")),
    ("backup.openbao.org", "openbaorestores", ("get", "list", "watch", "update", "patch")),
    ("backup.openbao.org", "openbaoclusters/status", ("get", "update", "patch")),
    ("backup.openbao.org", "openbaobackups/status", ("get", "update", "patch")),
    ("backup.openbao.org", "openbaorestores/status", ("get", "update", "patch")),
    ("backup.openbao.org", "openbaobackups/finalizers", ("update",)),
    ("batch", "jobs", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "pods", ("get", "list", "watch", "patch")),
    ("", "configmaps", ("get",)),
    ("coordination.k8s.io", "leases", ("get", "list", "watch", "create", "update", "delete")),
    ("events.k8s.io", "events", ("create", "patch")),
)
# What the controller must never be able to do, in any namespace.
CONTROLLER_NEVER: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "secrets", ("get", "list", "watch")),
    ("", "pods", ("create",)),
    ("", "pods/exec", ("create",)),
    ("rbac.authorization.k8s.io", "roles", ("create", "bind", "escalate")),
)


def docs(*set_values: str, extra: Sequence[str] = (), namespace: str = "obb-system") -> list[Doc]:
    """The chart rendered with these ``--set`` values into ``namespace``."""
    return load_docs(render(set_values=set_values, extra=extra, namespace=namespace))


def of_kind(rendered: list[Doc], kind: str) -> list[Doc]:
    return [d for d in rendered if d["kind"] == kind]


def one(rendered: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(rendered, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"want one {kind} {name or ''}, got {[identity(d) for d in found]}"
    return found[0]


def identity(doc: Doc) -> tuple[str, str, str]:
    """(kind, namespace, name): how two manifests' objects are matched."""
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def controller_container(rendered: list[Doc]) -> Doc:
    deployment = one(rendered, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found: Doc = next(c for c in containers if c["name"] == "controller")
    return found
