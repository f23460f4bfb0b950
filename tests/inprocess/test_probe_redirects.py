"""The preflight probe reads only the address the spec names (issue 11: the preflight as a
network probe). A spec's address is kept off link-local and metadata addresses by admission
and the parser; an OpenBao "answer" that redirects elsewhere (say to 169.254.169.254) must not
take the probe there. Two real HTTP servers on loopback stand in for both ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from controller.backup.act.probe import probe_openbao


@dataclass
class Server:
    url: str
    hits: list[str] = field(default_factory=list)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def metadata() -> AsyncIterator[Server]:
    """Where a redirect points: records every request it gets."""
    server = Server(url="")

    async def anything(request: web.Request) -> web.Response:
        server.hits.append(request.path_qs)
        return web.json_response({"initialized": True, "sealed": False, "standby": False})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner, server.url = await _serve(app)
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def redirecting(metadata: Server) -> AsyncIterator[Server]:
    """An "OpenBao" that answers every read with a redirect to ``metadata``."""
    server = Server(url="")

    async def redirect(request: web.Request) -> web.Response:
        server.hits.append(request.path_qs)
        raise web.HTTPTemporaryRedirect(f"{metadata.url}/latest/meta-data/")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner, server.url = await _serve(app)
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_the_probe_never_follows_a_redirect(redirecting: Server, metadata: Server) -> None:
    probe = await probe_openbao(address=redirecting.url, ca_pem=None)
    assert [h.split("?")[0] for h in redirecting.hits] == ["/v1/sys/health"]
    assert metadata.hits == []
    assert not probe.reachable
    assert probe.error == "answer is not JSON"


async def test_the_probe_reads_the_named_address(metadata: Server) -> None:
    """The control: the same server named directly is read (and looks healthy)."""
    probe = await probe_openbao(address=metadata.url, ca_pem=None)
    assert probe.reachable and probe.initialized and not probe.sealed
    assert [h.split("?")[0] for h in metadata.hits] == ["/v1/sys/health", "/v1/sys/leader"]
