"""Session fixtures: the real servers every integration test talks to.

* ``control_plane``: etcd + kube-apiserver + kube-controller-manager (hack/devenv/controlplane.py)
* ``node_agent``: the local node agent that runs Job pods as local processes
* ``openbao``: a real, initialised and unsealed single-node Raft OpenBao
* ``s3_server`` / ``gcs_server`` / ``azurite_server``: moto, fake-gcs-server, Azurite
* ``s3_bucket`` / ``gcs_bucket`` / ``azure_container``: a fresh, empty bucket per test

Every server binds 127.0.0.1 on a free port and is stopped by PID at session end. A missing
binary or a server that dies is a test ERROR with the server's log tail, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.crds import load_crds
from devenv.nodeagent import NodeAgentProcess
from devenv.openbao import OpenBao, start_openbao
from devenv.storage import (
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    StorageServer,
    azurite_connection_string,
    create_gcs_bucket,
    start_azurite,
    start_fake_gcs,
    start_moto,
)
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="obb-test-"))
    yield path
    if os.environ.get("OBB_KEEP_TEST_DIR") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane(session_dir: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(workdir=session_dir / "control-plane").start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane, session_dir: Path) -> Iterator[NodeAgentProcess]:
    agent = NodeAgentProcess(
        kubeconfig=control_plane.kubeconfig, workdir=session_dir / "node-agent"
    ).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
async def kube_client(control_plane: ControlPlane) -> AsyncIterator[k8s.ApiClient]:
    """An admin ApiClient on the local control plane."""
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(control_plane.kubeconfig), client_configuration=cfg
    )
    async with k8s.ApiClient(configuration=cfg) as api:
        yield api


@pytest.fixture
async def namespace(kube_client: k8s.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace per test (deleted afterwards, without waiting)."""
    core = k8s.CoreV1Api(kube_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        await core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def openbao(session_dir: Path) -> Iterator[OpenBao]:
    bao = start_openbao(session_dir, name="openbao")
    try:
        yield bao
    finally:
        bao.stop()


@pytest.fixture(scope="session")
def s3_server(session_dir: Path) -> Iterator[StorageServer]:
    srv = start_moto(session_dir)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def gcs_server(session_dir: Path) -> Iterator[StorageServer]:
    srv = start_fake_gcs(session_dir)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def azurite_server(session_dir: Path) -> Iterator[StorageServer]:
    srv = start_azurite(session_dir)
    try:
        yield srv
    finally:
        srv.stop()


def _bucket_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_bucket(s3_server: StorageServer) -> str:
    import boto3  # moto[server] depends on boto3; a sync client is fine for setup

    s3_server.check_alive()
    name = _bucket_name("obb")
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        region_name=MOTO_REGION,
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def gcs_bucket(gcs_server: StorageServer) -> str:
    gcs_server.check_alive()
    name = _bucket_name("obb")
    create_gcs_bucket(gcs_server.endpoint, name)
    return name


@pytest.fixture
def azure_container(azurite_server: StorageServer) -> str:
    from azure.storage.blob import BlobServiceClient

    azurite_server.check_alive()
    name = _bucket_name("obb")
    svc = BlobServiceClient.from_connection_string(
        azurite_connection_string(azurite_server.endpoint)
    )
    svc.create_container(name)
    return name


# -- CRDs ---------------------------------------------------------------------------------


async def install_crds(api_client: k8s.ApiClient, *, timeout: float = 60.0) -> list[str]:
    """Create or replace every CRD and wait until each is Established with names accepted."""
    ext = k8s.ApiextensionsV1Api(api_client)
    names: list[str] = []
    for doc in load_crds():
        name = doc["metadata"]["name"]
        names.append(name)
        body: Any = doc
        try:
            await ext.create_custom_resource_definition(body)
        except ApiException as err:
            if err.status != 409:
                raise
            current = await ext.read_custom_resource_definition(name)
            meta = {**doc["metadata"], "resourceVersion": current.metadata.resource_version}
            body = {**doc, "metadata": meta}
            await ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = await ext.read_custom_resource_definition(name)
            conditions = {c.type: c for c in (crd.status.conditions or [])}
            established = conditions.get("Established")
            accepted = conditions.get("NamesAccepted")
            if (
                established is not None
                and established.status == "True"
                and accepted is not None
                and accepted.status == "True"
            ):
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"CRD {name} not Established after {timeout}s: "
                    + "; ".join(
                        f"{c.type}={c.status} {c.reason}: {c.message}" for c in conditions.values()
                    )
                )
            await asyncio.sleep(0.2)
    return names


@pytest.fixture(scope="session")
async def crds(kube_client: k8s.ApiClient) -> list[str]:
    """The names of the installed, Established CRDs (installed once per session)."""
    return await install_crds(kube_client)
