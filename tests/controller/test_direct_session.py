"""The controller's API clients ignore proxy variables and ~/.netrc (issue 13: aiohttp's
per-request environment look-ups cost a quarter of the controller's CPU under load)."""

from __future__ import annotations

import pytest
from devenv.controlplane import ControlPlane

from controller.kube.client import clients_from_configurations, load_configuration
from controller.kube.resources import NAMESPACE
from tests.controller.conftest import settings_for

pytestmark = pytest.mark.integration


async def test_api_requests_ignore_proxy_variables(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that refuses every connection: a request that consulted it would fail.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = settings_for(control_plane)
    cfg = await load_configuration(settings)
    clients = clients_from_configurations(settings, watch_cfg=cfg, api_cfg=cfg)
    try:
        for api in (clients.api, clients.watch):
            assert api.client.rest_client.pool_manager.trust_env is False
            got = await api.get(path=NAMESPACE.path(name="default"))
            assert got["metadata"]["name"] == "default"
    finally:
        await clients.close()
