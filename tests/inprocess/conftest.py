"""Fixtures of the in-process orchestration tests (see ``harness``): a test-side raw client,
and per test a namespace watched by a fresh in-process controller App with a cluster in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller import logging as controller_logging
from controller.kube.client import connect
from controller.settings import Settings
from tests.inprocess.harness import Cluster, Kube, Running, auto_kubelet, run_controller


@pytest.fixture(scope="session", autouse=True)
def _quiet_controller_logs() -> None:
    """The in-process App logs like the real process (warnings and errors only here)."""
    controller_logging.configure(log_format="console", level="warning")


@pytest.fixture(scope="session")
async def kube(control_plane: ControlPlane, crds: list[str]) -> AsyncIterator[Kube]:
    """A raw JSON client with the admin identity (never faulted); CRDs installed."""
    clients = await connect(Settings(kubeconfig=control_plane.kubeconfig, leader_elect=False))
    try:
        k = Kube(clients.api)
        await k.ensure_node()
        yield k
    finally:
        await clients.close()


@dataclass
class World:
    kube: Kube
    kubeconfig: Path
    openbao_addr: str
    namespace: str
    controller: Running
    cluster: Cluster


@pytest.fixture
async def world(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> AsyncIterator[World]:
    """The App watching only this test's namespace, and an OpenBaoCluster in it (settled)."""
    async with run_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace) as ctl:
        cluster = Cluster(kube=kube, namespace=namespace, name="vault", openbao_addr=openbao.addr)
        await cluster.create()
        await ctl.settle()
        yield World(
            kube=kube,
            kubeconfig=control_plane.kubeconfig,
            openbao_addr=openbao.addr,
            namespace=namespace,
            controller=ctl,
            cluster=cluster,
        )
        ctl.check_alive()


@pytest.fixture
async def kubelet(world: World) -> AsyncIterator[None]:
    """Play a successful executor for every Job pod of the test's namespace."""
    task = asyncio.create_task(auto_kubelet(world.kube, world.namespace))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
