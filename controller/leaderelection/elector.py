"""The async half of leader election: :class:`LeaderElector` reads and writes the Lease.

Guarantees:

* expiry follows :mod:`controller.leaderelection.lease`: each read is observed at the local
  monotonic time it returned, never judged by the remote ``renewTime``;
* every write is a PUT carrying the ``resourceVersion`` that was read (a compare-and-swap);
  409 Conflict means another candidate won the race, which is normal flow, not an error;
* the leader renews every ``retry_period``; if it has not renewed successfully for
  ``renew_deadline`` (< ``lease_duration``), or sees another holder, it stops leading:
  :meth:`LeaderElector.run` raises :class:`~controller.errors.LeadershipLost` and the
  process must exit non-zero. Because ``renew_deadline < lease_duration``, the old leader
  stops before any other candidate can consider the lease expired;
* :meth:`LeaderElector.release` on clean shutdown writes holder ``""`` and duration 1 so a
  standby takes over at once; it only writes if we still hold the lease;
* ``on_started_leading`` / ``on_stopped_leading`` callbacks run synchronously on transitions;
* :meth:`LeaderElector.holds_lease_now` is the per-reconcile guard: it is false as soon as the
  last successful renewal is older than the renew deadline, even if the renew loop has not
  run yet (a paused process must not act on stale leadership when it wakes up).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

from controller import errors, metrics
from controller.kube.client import KubeApi
from controller.kube.resources import LEASE
from controller.leaderelection.lease import (
    Decision,
    LeaseRecord,
    Observation,
    decide,
    next_record,
    observe,
    release_record,
)
from controller.logging import get_logger
from controller.queue.clock import Clock, RealClock

JITTER_FACTOR = 1.2


class LeaderElector:
    def __init__(
        self,
        *,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Clock | None = None,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not lease_duration > renew_deadline > JITTER_FACTOR * retry_period > 0:
            raise errors.ConfigError(
                "need lease_duration > renew_deadline > 1.2 x retry_period > 0"
            )
        self._api = api
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._clock: Clock = clock or RealClock()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._rng = rng or random.Random()
        self._observation: Observation | None = None
        self._resource_version = ""
        self._leading = False
        self._last_renew: float | None = None
        self._log = get_logger(
            component="leaderelection", lease=f"{namespace}/{name}", identity=identity
        )
        metrics.set_leader(name, leading=False)

    @property
    def is_leader(self) -> bool:
        return self._leading

    def holds_lease_now(self) -> bool:
        """True only while leading *and* the last successful renewal is younger than the
        renew deadline, by the local monotonic clock.

        Workers check this before every reconcile: a process that was paused (SIGSTOP, a VM
        freeze, a long GC) wakes up with overdue timers and buffered watch events; without
        this check it could reconcile before its renew loop notices the lease expired.
        """
        if not self._leading or self._last_renew is None:
            return False
        return self._clock.monotonic() - self._last_renew < self._renew_deadline

    @property
    def observed_holder(self) -> str:
        return self._observation.record.holder if self._observation else ""

    def _path(self, *, named: bool = True) -> str:
        return LEASE.path(namespace=self._namespace, name=self._name if named else None)

    async def try_acquire_or_renew(self) -> bool:
        """One round: read the lease, decide, write with CAS. True if we hold it now."""
        now_mono = self._clock.monotonic()
        try:
            lease = await self._api.get(path=self._path())
        except errors.NotFound:
            record = next_record(
                None, identity=self.identity, duration=self._duration, now=self._clock.now()
            )
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": record.to_spec(),
            }
            try:
                created = await self._api.create(path=self._path(named=False), body=body)
            except errors.AlreadyExists:
                return False
            self._remember(created, self._clock.monotonic())
            return True
        self._remember(lease, now_mono)
        assert self._observation is not None
        decision = decide(self._observation, identity=self.identity, now=now_mono)
        if decision is Decision.WAIT:
            return False
        record = next_record(
            self._observation.record,
            identity=self.identity,
            duration=self._duration,
            now=self._clock.now(),
        )
        body = dict(lease)
        body["metadata"] = {**lease.get("metadata", {}), "resourceVersion": self._resource_version}
        body["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
        try:
            updated = await self._api.replace(path=self._path(), body=body)
        except errors.Conflict:
            return False
        self._remember(updated, self._clock.monotonic())
        return True

    def _remember(self, lease: Mapping[str, Any], now: float) -> None:
        record = LeaseRecord.from_spec(lease.get("spec"))
        self._observation = observe(self._observation, record, now=now)
        self._resource_version = str((lease.get("metadata") or {}).get("resourceVersion") or "")

    async def _attempt(self, *, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            self._log.warning("lease request timed out")
        except errors.KubeError as exc:
            self._log.warning("lease request failed", error=str(exc), error_type=type(exc).__name__)
        return False

    async def acquire(self) -> None:
        """Return once we hold the lease (retrying every retry_period with jitter)."""
        last_holder = None
        while True:
            if await self._attempt(timeout=self._renew_deadline):
                return
            holder = self.observed_holder
            if holder != last_holder:
                self._log.info("lease held by another candidate", holder=holder)
                last_holder = holder
            await self._clock.sleep(self._retry * (1 + (JITTER_FACTOR - 1) * self._rng.random()))

    async def run(self) -> None:
        """Acquire, lead, and renew until leadership is lost (raises LeadershipLost)."""
        await self.acquire()
        self._last_renew = self._clock.monotonic()
        self._set_leading(True)
        try:
            await self._renew_loop()
        finally:
            self._set_leading(False)
        raise errors.LeadershipLost(f"lost lease {self._namespace}/{self._name}")

    async def _renew_loop(self) -> None:
        last_renew = self._last_renew or self._clock.monotonic()
        while True:
            await self._clock.sleep(self._retry)
            remaining = last_renew + self._renew_deadline - self._clock.monotonic()
            if remaining <= 0:
                self._log.error("failed to renew lease within the renew deadline")
                return
            if await self._attempt(timeout=remaining):
                last_renew = self._last_renew = self._clock.monotonic()
                continue
            if self._observation is not None and self._observation.record.holder not in (
                "",
                self.identity,
            ):
                self._log.error(
                    "lease taken by another candidate", holder=self._observation.record.holder
                )
                return
            if self._clock.monotonic() - last_renew >= self._renew_deadline:
                self._log.error("failed to renew lease within the renew deadline")
                return

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        metrics.set_leader(self._name, leading=leading)
        self._log.info("started leading" if leading else "stopped leading")
        callback = self._on_started if leading else self._on_stopped
        if callback is not None:
            callback()

    async def release(self) -> bool:
        """Give the lease up if we hold it (clean shutdown). True if released."""
        was_leading = self._leading
        self._set_leading(False)
        self._last_renew = None
        try:
            async with asyncio.timeout(self._renew_deadline):
                lease = await self._api.get(path=self._path())
                record = LeaseRecord.from_spec(lease.get("spec"))
                if record.holder != self.identity:
                    return False
                body = dict(lease)
                body["spec"] = {
                    **(lease.get("spec") or {}),
                    **release_record(record, now=self._clock.now()).to_spec(),
                }
                await self._api.replace(path=self._path(), body=body)
        except (errors.KubeError, TimeoutError) as exc:
            self._log.warning("could not release lease", error=str(exc), was_leading=was_leading)
            return False
        self._log.info("released lease")
        return True
