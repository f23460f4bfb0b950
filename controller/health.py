"""The HTTP endpoints of the process: ``/metrics``, ``/healthz``, ``/readyz``.

Guarantees:

* one aiohttp server on ``--bind-address`` (default ``127.0.0.1:8080``; ``0.0.0.0:8080`` in a
  cluster); it serves only these three GET endpoints and never an object body;
* ``/metrics`` is the Prometheus text exposition of :data:`controller.metrics.REGISTRY`;
* ``/healthz`` (liveness) is 200 while every liveness check passes (supervised tasks alive,
  no task dying repeatedly), else 500 listing the failed checks by name;
* ``/readyz`` (readiness) is 200 once every readiness check passes (every informer synced);
* checks are plain callables ``() -> bool`` injected by the application, so this module
  knows nothing about informers or supervisors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from controller.logging import get_logger
from controller.metrics import exposition

Check = Callable[[], bool]


def _run_checks(checks: Mapping[str, Check]) -> tuple[bool, list[str]]:
    failed: list[str] = []
    for name, check in checks.items():
        try:
            ok = check()
        except Exception:
            ok = False
        if not ok:
            failed.append(name)
    return not failed, failed


class HealthServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        liveness: Mapping[str, Check] | None = None,
        readiness: Mapping[str, Check] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._liveness = dict(liveness or {})
        self._readiness = dict(readiness or {})
        self._runner: web.AppRunner | None = None
        self._log = get_logger(component="health")
        self.bound_port: int | None = None

    def add_liveness(self, name: str, check: Check) -> None:
        self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        self._readiness[name] = check

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._answer(self._liveness)

    async def _readyz(self, _request: web.Request) -> web.Response:
        return self._answer(self._readiness)

    @staticmethod
    def _answer(checks: Mapping[str, Check]) -> web.Response:
        ok, failed = _run_checks(checks)
        if ok:
            return web.Response(text="ok\n")
        return web.Response(status=500, text="failed: " + ", ".join(failed) + "\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        self._log.info("serving health and metrics", host=self._host, port=self.bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
