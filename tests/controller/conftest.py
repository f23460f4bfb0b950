"""Fixtures for the controller runtime's integration tests (real control plane)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from devenv.controlplane import ControlPlane
from devenv.crds import CRD_DIR

from controller import errors
from controller.kube.client import KubeClients, connect
from controller.kube.resources import Resource
from controller.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NEEDED_KINDS = {
    "openbaoclusters": "OpenBaoCluster",
    "openbaobackups": "OpenBaoBackup",
    "openbaorestores": "OpenBaoRestore",
}


def settings_for(cp: ControlPlane, **overrides: Any) -> Settings:
    return Settings(kubeconfig=cp.kubeconfig, **overrides)


@pytest.fixture
async def clients(control_plane: ControlPlane) -> AsyncIterator[KubeClients]:
    c = await connect(settings_for(control_plane))
    try:
        yield c
    finally:
        await c.close()


async def wait_established(c: KubeClients, name: str) -> None:
    for _ in range(300):
        crd = await c.api.get(path=f"{CRD_PATH}/{name}")
        conds = (crd.get("status") or {}).get("conditions") or []
        if any(x.get("type") == "Established" and x.get("status") == "True" for x in conds):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"CRD {name} never became Established")


async def apply_crd(c: KubeClients, body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    try:
        await c.api.create(path=CRD_PATH, body=body)
    except errors.AlreadyExists:
        current = await c.api.get(path=f"{CRD_PATH}/{name}")
        body = {
            **body,
            "metadata": {
                **body["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        await c.api.replace(path=f"{CRD_PATH}/{name}", body=body)
    await wait_established(c, name)


def loose_crd(*, group: str, plural: str, kind: str) -> dict[str, Any]:
    """A minimal CRD accepting any spec/status (for tests of the runtime, not the schema)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@dataclass(frozen=True)
class Crd:
    resource: Resource


@pytest.fixture(scope="session")
async def widget_crd(control_plane: ControlPlane) -> Crd:
    """A throwaway CRD with a unique group: tests the informer on a custom resource."""
    group = f"w{uuid.uuid4().hex[:8]}.test.openbao.org"
    c = await connect(settings_for(control_plane))
    try:
        await apply_crd(c, loose_crd(group=group, plural="widgets", kind="Widget"))
    finally:
        await c.close()
    return Crd(Resource(group=group, version="v1alpha1", plural="widgets", kind="Widget"))


@pytest.fixture(scope="session")
async def backup_crds(control_plane: ControlPlane) -> None:
    """The project's CRDs (charts/openbao-backup/crds/), plus loose stand-ins for any not
    written yet."""
    c = await connect(settings_for(control_plane))
    try:
        present: set[str] = set()
        for path in sorted(CRD_DIR.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    await apply_crd(c, doc)
                    present.add(doc["spec"]["names"]["plural"])
        for plural, kind in NEEDED_KINDS.items():
            if plural not in present:
                await apply_crd(c, loose_crd(group="backup.openbao.org", plural=plural, kind=kind))
    finally:
        await c.close()


@pytest.fixture
async def test_namespace(clients: KubeClients) -> AsyncIterator[str]:
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    await clients.api.create(path="/api/v1/namespaces", body={"metadata": {"name": name}})
    try:
        yield name
    finally:
        await clients.api.delete(path=f"/api/v1/namespaces/{name}")
