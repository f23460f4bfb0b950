"""Lock renewals off the workqueue: every running backup's Lease renewed on its own clock.

Under load the cluster keys wait in one FIFO workqueue behind every other due cluster; a
renewal that is a timed requeue of its cluster's key arrives late, and a Lease can lapse while
its Job still runs (issue 13: 844 of 1,000 Leases went past their duration). The renewer is a
separate path.

Guarantees:

* each held lock (``hold``) is renewed ``leaseDurationSeconds / 3`` after the previous
  renewal, earliest due first, by one task that runs only while this process reconciles
  (:meth:`Renewer.run`, started and cancelled with the runner's workers, so a replica that
  lost leadership stops renewing at once);
* renewals use their own client and write budget (``--lock-renew-qps``), never the queue of
  cluster keys or the bulk write budget; with ``--max-concurrent-backups`` the settings refuse
  a budget that cannot renew every allowed run within a third of the duration;
* a failed renewal (any error: the API server, a timeout, a conflict) is counted in
  ``openbao_backup_reconcile_errors_total{step="renewal"}``, logged, and retried after
  :data:`~controller.backup.decide.timing.RENEW_RETRY_SECONDS`, two more attempts fit before the
  Lease lapses; it never fails the run: the Job's result decides the run, and a lock that was
  lost is simply no longer renewed (the protocol's rule, docs/operation-lock.md);
* a lock is dropped when its run finishes (:meth:`Renewer.drop`, with the release) and is
  never renewed for a run that is no longer ``Running`` (``still_running``, checked before
  every renewal: a record deleted from under it cannot keep the Lease forever); the running
  step registers it again after a restart or failover (its first renewal at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable

from controller import metrics as metric_catalog
from controller.backup.act.lock import OperationLock
from controller.backup.decide import failures
from controller.backup.decide.failures import Step
from controller.backup.decide.timing import RENEW_RETRY_SECONDS
from controller.logging import get_logger

_log = get_logger(controller="backup-manager", component="renewer")


class Renewer:
    def __init__(
        self,
        *,
        lock: OperationLock,
        now: Callable[[], dt.datetime],
        still_running: Callable[[str, str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = lock
        self._still_running = still_running
        self._now = now
        self._clock = clock
        self._held: dict[tuple[str, str], tuple[str, float]] = {}
        self._changed: asyncio.Event | None = None

    def hold(self, *, namespace: str, cluster: str, me: str, after: float) -> None:
        """Renew ``me``'s lock of ``cluster`` from ``after`` seconds on (kept if already held
        by ``me``: the schedule of a held lock does not move)."""
        key = (namespace, cluster)
        current = self._held.get(key)
        if current is not None and current[0] == me:
            return
        self._held[key] = (me, self._clock() + after)
        self._poke()

    def drop(self, *, namespace: str, cluster: str, me: str) -> None:
        """Stop renewing ``me``'s lock of ``cluster`` (another holder's entry stays)."""
        current = self._held.get((namespace, cluster))
        if current is not None and current[0] == me:
            del self._held[(namespace, cluster)]
            self._poke()

    def held(self) -> dict[tuple[str, str], str]:
        return {key: me for key, (me, _) in self._held.items()}

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def run(self) -> None:
        """Renew due locks until cancelled."""
        self._changed = asyncio.Event()
        try:
            while True:
                self._changed.clear()
                due = min(self._held.items(), key=lambda kv: kv[1][1], default=None)
                wait = None if due is None else due[1][1] - self._clock()
                if wait is None or wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=wait)
                    continue
                assert due is not None
                (namespace, cluster), (me, _) = due
                if not self._still_running(namespace, me):
                    del self._held[(namespace, cluster)]  # its run ended or went away
                    continue
                after = await self._renew(namespace=namespace, cluster=cluster, me=me)
                if self._held.get((namespace, cluster), (None,))[0] == me:
                    self._held[(namespace, cluster)] = (me, self._clock() + after)
        finally:
            self._changed = None

    async def _renew(self, *, namespace: str, cluster: str, me: str) -> float:
        try:
            return await self._lock.renew(
                namespace=namespace, cluster=cluster, me=me, now=self._now()
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is retried: a renewal never fails the run
            failure = failures.classify(exc)
            metric_catalog.reconcile_step_error(step=Step.RENEWAL.value, kind=failure.kind.value)
            _log.warning(
                "lock renewal failed; retrying",
                namespace=namespace,
                cluster=cluster,
                holder=me,
                kind=failure.kind.value,
                error=failure.message,
            )
            return RENEW_RETRY_SECONDS
