"""``kubectl explain`` has something to say about every field (issue 11, kubectl UX).

Every schema node of every CRD (each property, each list item, each map value) carries a
description. The one exception is the root's ``metadata``: the API server forbids anything
but ``type: object`` there, and ``kubectl explain`` shows the standard ObjectMeta text for it.
The last test asks the real API server through ``kubectl explain``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.crds import load_crds

from tests.polling import until

CRDS = {doc["spec"]["names"]["kind"]: doc for doc in load_crds()}
EXEMPT = {".metadata"}  # the API server refuses a description there (ObjectMeta's is shown)
MIN_WORDS = 2


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` (itself included) with its path."""
    yield path, node
    for key, value in node.get("properties", {}).items():
        yield from walk(value, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def nodes(kind: str) -> list[tuple[str, dict[str, Any]]]:
    root = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return list(walk(root))


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_has_a_description(kind: str) -> None:
    found = nodes(kind)
    assert len(found) > 40, "the walk must reach the nested fields"
    missing = [
        path or "<root>"
        for path, node in found
        if path not in EXEMPT and len(str(node.get("description") or "").split()) < MIN_WORDS
    ]
    assert missing == [], f"{kind}: fields without a description:\n  " + "\n  ".join(missing)


def test_the_exemption_is_only_what_the_api_server_forbids() -> None:
    for kind in CRDS:
        metadata = dict(nodes(kind))[".metadata"]
        assert metadata == {"type": "object"}, kind


def test_the_walk_sees_list_items_and_map_values() -> None:
    paths = dict(nodes("OpenBaoCluster"))
    assert ".spec.backup.executor.tolerations[].key" in paths
    assert ".spec.backup.executor.podLabels{}" in paths
    assert ".status.conditions[].reason" in paths


@pytest.mark.integration
@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        ("openbaoclusters.spec.allowLinkLocalAddresses", "link-local or cloud-metadata"),
        ("openbaoclusters.spec.backup.executor.image", "--executor-image-allowlist"),
        ("openbaoclusters.spec.backup.auth.tokenSecretRef.key", "default token"),
        ("openbaoclusters.status.backup.consecutiveFailures", "reset to 0 by a success"),
        ("openbaobackups.status.conditions.reason", "CamelCase reason"),
        ("openbaobackups.spec", "openbao-backup-trigger"),
        ("openbaorestores.spec.target.endpoint", "S3-compatible store"),
    ],
)
async def test_kubectl_explain_shows_them(
    control_plane: ControlPlane, crds: list[str], field: str, fragment: str
) -> None:
    """The API server publishes a CRD's OpenAPI a moment after it is Established: poll."""
    seen: list[str] = []

    async def explained() -> bool:
        proc = await asyncio.create_subprocess_exec(
            str(control_plane.kubectl),
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "explain",
            field,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        seen[:] = [out.decode() + err.decode()]
        return proc.returncode == 0 and fragment in " ".join(out.decode().split())

    await until(explained, timeout=60, interval=0.5, what=f"kubectl explain {field}")
    assert "DESCRIPTION:" in seen[0]
