"""The controller process: wires settings, clients, informers, election, runners, health.

Guarantees:

* informers for OpenBaoCluster, OpenBaoBackup and OpenBaoRestore
  (``backup.openbao.org/v1alpha1``) and for Jobs, Pods and Leases labelled
  ``app.kubernetes.io/managed-by=openbao-backup`` start at once in every replica and are
  supervised (restarted if they crash); standbys therefore keep warm caches;
* each reconciler of :func:`controller.reconcilers.registry` gets a runner; event handlers
  only enqueue keys. Workers run **only while this process leads** and only after every
  informer has synced; when leadership starts, every primary key is enqueued once;
* SIGTERM/SIGINT: stop taking work, let in-flight reconciles finish (``--drain-timeout``),
  release the lease so a standby takes over at once, stop informers, exit 0;
* every reconcile is gated on :meth:`LeaderElector.holds_lease_now` (leading, and renewed
  within the renew deadline by the local monotonic clock);
* leadership lost (renewal failed past the renew deadline, or another holder): workers are
  cancelled at once and :meth:`App.run` returns 1 (the process exits non-zero and is
  restarted as a standby);
* ``/healthz`` fails if a supervised informer keeps dying or the elector died; ``/readyz``
  passes once every informer has synced (standbys are ready too: they can take over).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from controller import errors, reconcilers
from controller.cache.informer import Informer, OnAdd, OnDelete, OnUpdate
from controller.cache.reflector import WatchOptions
from controller.cache.store import IndexFunc, JSONObject, key_of
from controller.health import HealthServer
from controller.kube.client import KubeClients, connect
from controller.kube.resources import (
    JOB,
    LEASE,
    MANAGED_BY_SELECTOR,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    OPENBAO_RESTORE,
    POD,
    Resource,
)
from controller.leaderelection.elector import LeaderElector
from controller.logging import get_logger
from controller.reconcilers.base import KeyMapper, ReconcilerSpec
from controller.runner import Runner
from controller.settings import Settings
from controller.supervisor import Supervisor

#: Every resource the controller caches, with its label selector (None: all objects).
INFORMED: tuple[tuple[Resource, str | None], ...] = (
    (OPENBAO_CLUSTER, None),
    (OPENBAO_BACKUP, None),
    (OPENBAO_RESTORE, None),
    (JOB, MANAGED_BY_SELECTOR),
    (POD, MANAGED_BY_SELECTOR),
    (LEASE, MANAGED_BY_SELECTOR),
)


def _enqueue_mapped(runner: Runner, mapper: KeyMapper) -> tuple[OnAdd, OnUpdate, OnDelete]:
    """Handlers that enqueue the keys ``mapper`` derives from an object (never the object)."""

    def on_add(obj: JSONObject) -> None:
        for key in mapper(obj):
            runner.enqueue(key)

    def on_update(old: JSONObject, new: JSONObject) -> None:
        keys = dict.fromkeys([*mapper(old), *mapper(new)])
        for key in keys:
            runner.enqueue(key)

    return on_add, on_update, on_add


def _own_key(obj: JSONObject) -> list[str]:
    return [key_of(obj)]


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        specs: tuple[ReconcilerSpec, ...] | None = None,
        clients: KubeClients | None = None,
    ) -> None:
        self.settings = settings
        self._specs = specs if specs is not None else reconcilers.registry()
        self._clients = clients
        self._log = get_logger(component="app", identity=settings.identity)
        self._stop = asyncio.Event()
        self._leading = asyncio.Event()
        self.informers: dict[Resource, Informer] = {}
        self.runners: list[Runner] = []
        self.health: HealthServer | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def _build(self, clients: KubeClients, gate: Callable[[], bool] | None) -> None:
        s = self.settings
        options = WatchOptions(
            page_size=s.list_page_size,
            timeout_min=s.watch_timeout_min,
            timeout_max=s.watch_timeout_max,
            inactivity_timeout=s.watch_inactivity_timeout,
            connect_timeout=s.connect_timeout,
        )
        indexers: dict[Resource, dict[str, IndexFunc]] = {}
        for spec in self._specs:
            for resource, funcs in spec.indexers.items():
                indexers.setdefault(resource, {}).update(funcs)
        for resource, selector in INFORMED:
            self.informers[resource] = Informer(
                api=clients.watch,
                resource=resource,
                namespaces=s.namespaces,
                label_selector=selector,
                options=options,
                resync_period=s.resync_period,
                indexers=indexers.get(resource),
            )
        ctx = reconcilers.Context(
            caches={r: i.cache for r, i in self.informers.items()}, api=clients.api, settings=s
        )
        for spec in self._specs:
            runner = Runner(
                name=spec.name,
                reconciler=spec.build(ctx),
                workers=s.workers,
                reconcile_timeout=s.reconcile_timeout,
                gate=gate,
            )
            self.runners.append(runner)
            wiring = [(spec.primary, _own_key)] + [(w.resource, w.to_keys) for w in spec.watches]
            for resource, mapper in wiring:
                on_add, on_update, on_delete = _enqueue_mapped(runner, mapper)
                self.informers[resource].add_handlers(
                    on_add=on_add, on_update=on_update, on_delete=on_delete
                )

    async def run(self) -> int:
        """Run until SIGTERM (returns 0) or lost leadership (returns 1)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        clients = self._clients or await connect(s)
        supervisor = Supervisor()
        host, port = s.bind_host_port
        self.health = HealthServer(host=host, port=port)
        elector_task: asyncio.Task[None] | None = None
        runner_tasks: list[asyncio.Task[None]] = []
        exit_code = 0
        try:
            elector = None
            if s.leader_elect:
                elector = LeaderElector(
                    api=clients.api,
                    namespace=s.lease_namespace,
                    name=s.lease_name,
                    identity=s.identity,
                    lease_duration=s.lease_duration,
                    renew_deadline=s.renew_deadline,
                    retry_period=s.retry_period,
                    on_started_leading=self._leading.set,
                )
            self._build(clients, elector.holds_lease_now if elector is not None else None)
            for resource, informer in self.informers.items():
                supervisor.start(f"informer:{resource.display}", informer.run)
                self.health.add_readiness(f"informer:{resource.display}", informer.has_synced)
            self.health.add_liveness("supervisor", supervisor.healthy)
            await self.health.start()

            if elector is not None:
                elector_task = asyncio.create_task(elector.run(), name="leader-election")
                self.health.add_liveness("leader-election", lambda: not elector_task.done())
            else:
                self._leading.set()

            stop_task = asyncio.create_task(self._stop.wait())
            lead_task = asyncio.create_task(self._lead_when_ready())
            waiting: set[asyncio.Task[None] | asyncio.Task[bool]] = {stop_task, lead_task}
            if elector_task is not None:
                waiting.add(elector_task)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if lead_task in done and lead_task.result() is None:
                runner_tasks = [
                    asyncio.create_task(r.run(), name=f"runner:{r.name}") for r in self.runners
                ]
                waiting.discard(lead_task)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            lead_task.cancel()

            if elector_task is not None and elector_task in done:
                exc = elector_task.exception()
                self._log.error("leadership lost; stopping at once", error=str(exc))
                for task in runner_tasks:
                    task.cancel()
                await asyncio.gather(*runner_tasks, return_exceptions=True)
                exit_code = 1
            else:
                self._log.info("shutting down", leading=self._leading.is_set())
                await asyncio.gather(
                    *(r.shutdown(drain_timeout=s.drain_timeout) for r in self.runners)
                )
                await asyncio.gather(*runner_tasks, return_exceptions=True)
                if elector_task is not None:
                    elector_task.cancel()
                    await asyncio.gather(elector_task, return_exceptions=True)
                if elector is not None:
                    await elector.release()
            stop_task.cancel()
        finally:
            if elector_task is not None and not elector_task.done():
                elector_task.cancel()
            await supervisor.stop()
            await self.health.stop()
            if self._clients is None:
                await clients.close()
        self._log.info("stopped", exit_code=exit_code)
        return exit_code

    async def _lead_when_ready(self) -> None:
        await self._leading.wait()
        self._log.info("leading; waiting for informers to sync")
        await asyncio.gather(*(i.wait_synced() for i in self.informers.values()))
        for runner, spec in zip(self.runners, self._specs, strict=True):
            for obj in self.informers[spec.primary].cache.list():
                runner.enqueue(key_of(obj))
        self._log.info("informers synced; starting workers")


async def main(settings: Settings) -> int:
    try:
        return await App(settings).run()
    except errors.ConfigError as exc:
        get_logger().error("configuration error", error=str(exc))
        return 2
