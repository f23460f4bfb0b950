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

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from devenv.controlplane import ControlPlane
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
