"""Static checks of the CRDs in charts/openbao-backup/crds (no server): the rules the pure
deciders rely on are the same text in the CRDs, every CEL rule has a message, nothing preserves
unknown fields, and no Secret reference can name a namespace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from devenv.crds import load_crds

from controller.backup.decide.cron import CRON_PATTERN, TIME_ZONE_PATTERN
from controller.backup.decide.names import CLUSTER_NAME_MAX
from controller.backup.decide.retention import MAX_AGE_PATTERN

CRDS = {doc["spec"]["names"]["kind"]: doc for doc in load_crds()}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.get("properties", {}).items():
            yield from walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


def schema(kind: str) -> dict[str, Any]:
    versions = CRDS[kind]["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    result: dict[str, Any] = versions[0]["schema"]["openAPIV3Schema"]
    return result


def node(kind: str, path: str) -> dict[str, Any]:
    nodes = dict(walk(schema(kind)))
    return nodes[path]


def test_three_kinds() -> None:
    assert sorted(CRDS) == ["OpenBaoBackup", "OpenBaoCluster", "OpenBaoRestore"]
    short = {k: d["spec"]["names"]["shortNames"] for k, d in CRDS.items()}
    assert short == {"OpenBaoBackup": ["obb"], "OpenBaoCluster": ["obc"], "OpenBaoRestore": ["obr"]}
    for doc in CRDS.values():
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
        assert doc["spec"]["group"] == "backup.openbao.org"
        assert doc["spec"]["scope"] == "Namespaced"
        assert doc["spec"]["names"]["categories"] == ["openbao"]
        version = doc["spec"]["versions"][0]
        assert version["served"]
        assert version["storage"]
        assert version["subresources"] == {"status": {}}
        assert version["additionalPrinterColumns"]


@pytest.mark.parametrize("kind", ["OpenBaoBackup", "OpenBaoCluster", "OpenBaoRestore"])
def test_structural_and_closed(kind: str) -> None:
    for path, item in walk(schema(kind)):
        # the one open object: a status copy of the (validated) target a backup ran against
        if path != ".status.target":
            assert "x-kubernetes-preserve-unknown-fields" not in item, path
        if path.endswith("SecretRef") or path.endswith("Secrets[]"):
            assert "namespace" not in item.get("properties", {}), path
        if path.startswith(".spec"):
            assert not path.endswith(".namespace"), path
        for rule in item.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: CEL rule without a message"
        leaf = "type" in item or "x-kubernetes-int-or-string" in item
        assert leaf, f"{path}: no type"


def rules(kind: str, path: str) -> list[str]:
    return [r["rule"] for r in node(kind, path).get("x-kubernetes-validations", [])]


def test_cel_patterns_are_the_deciders_patterns() -> None:
    assert rules("OpenBaoCluster", ".spec.backup.schedule") == [f"self.matches('{CRON_PATTERN}')"]
    assert rules("OpenBaoCluster", ".spec.backup.timeZone") == [
        f"self.matches('{TIME_ZONE_PATTERN}')"
    ]
    assert rules("OpenBaoCluster", ".spec.backup.retention.maxAge") == [
        f"self.matches('{MAX_AGE_PATTERN}') && self.matches('[1-9]')"
    ]
    root = [r["rule"] for r in schema("OpenBaoCluster")["x-kubernetes-validations"]]
    assert f"size(self.metadata.name) <= {CLUSTER_NAME_MAX}" in root
    for kind in ("OpenBaoBackup", "OpenBaoRestore"):
        assert node(kind, ".spec.cluster")["maxLength"] == CLUSTER_NAME_MAX


def test_patterns_have_no_backslashes_or_quotes() -> None:
    """They are embedded verbatim in single-quoted CEL strings."""
    for pattern in (CRON_PATTERN, TIME_ZONE_PATTERN, MAX_AGE_PATTERN):
        assert "\\" not in pattern
        assert "'" not in pattern
        re.compile(pattern)


def test_spec_immutability() -> None:
    assert "self == oldSelf" in rules("OpenBaoRestore", ".spec")
    # a backup's cluster and trigger never change; deletionPolicy may (pinning)
    assert "self.cluster == oldSelf.cluster && self.trigger == oldSelf.trigger" in rules(
        "OpenBaoBackup", ".spec"
    )


def test_defaults() -> None:
    assert node("OpenBaoCluster", ".spec.backup.timeZone")["default"] == "UTC"
    assert node("OpenBaoCluster", ".spec.backup.suspend")["default"] is False
    assert node("OpenBaoBackup", ".spec.deletionPolicy")["default"] == "Delete"
    assert node("OpenBaoBackup", ".spec.deletionPolicy")["enum"] == ["Delete", "Retain"]
    assert node("OpenBaoBackup", ".spec.trigger")["default"] == "manual"
    phases = ["Pending", "Running", "Succeeded", "Failed"]
    assert node("OpenBaoBackup", ".status.phase")["enum"] == phases
    assert node("OpenBaoRestore", ".status.phase")["enum"] == [
        "Pending",
        "Validating",
        "SafetySnapshot",
        "Restoring",
        "Verifying",
        "Succeeded",
        "Failed",
    ]
    assert node("OpenBaoRestore", ".spec.safetySnapshot")["default"] is True
    assert node("OpenBaoRestore", ".spec.verifyTimeoutSeconds")["default"] == 600


def test_cluster_status_has_every_field_of_the_issue() -> None:
    fields = set(node("OpenBaoCluster", ".status.backup")["properties"])
    assert {
        "lastBackupTime",
        "lastAttemptTime",
        "lastAttemptScheduledTime",
        "nextScheduledBackup",
        "consecutiveFailures",
        "lastFailureReason",
        "lastBackupName",
        "lastBackupSize",
        "lastBackupDuration",
        "lastHandledTrigger",
    } <= fields
    assert {"conditions", "observedGeneration", "backup"} <= set(
        node("OpenBaoCluster", ".status")["properties"]
    )
    assert node("OpenBaoCluster", ".status.conditions")["x-kubernetes-list-map-keys"] == ["type"]
