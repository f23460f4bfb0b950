"""The failure model of the reconcile loop, carried out: guard a step, fail a record, back off.

What each kind of failure means is decided by :mod:`controller.backup.decide.failures` and
documented in :mod:`controller.reconcilers.backups` and docs/backup-manager.md; this module
does it.

Guarantees:

* :meth:`Guard.step` runs one step and never lets its exception escape (cancellation aside):
  the failure is classified once, logged (with the traceback for a bug), counted in
  ``openbao_backup_reconcile_errors_total{step,kind}`` and remembered in the :class:`Pass`;
* a terminal or bug failure of the restore step fails that OpenBaoRestore
  (:meth:`Guard.fail_restore`), which is never retried;
* a terminal or bug failure of a per-record step fails that record (:meth:`Guard.fail`):
  its Job is cancelled, it ends ``Failed`` with the failure's reason and message, it is
  counted on the cluster, and the lock it held is released, all in the same reconcile;
* a launch refused outright (not a timeout or 5xx, after which the Job may exist) releases
  the lock before the retry;
* :meth:`Guard.requeue_after` keeps a streak per (cluster, step): a step failing again is
  retried after 1, 2, 4 ... 300 s, and :meth:`Guard.stalled` names a step that failed
  ``RETRY_SURFACE_AFTER`` passes in a row, for the ``Stalled`` condition.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from controller import metrics as metric_catalog
from controller.backup.act import outcome, restoring, running
from controller.backup.act.deps import Deps
from controller.backup.act.lock import me
from controller.backup.decide import failures
from controller.backup.decide.failures import Failure, Kind, Step
from controller.backup.decide.records import name_of
from controller.backup.decide.timing import MIN_REQUEUE_SECONDS, RETRY_SURFACE_AFTER, retry_delay
from controller.cache.store import JSONObject
from controller.logging import get_logger

T = TypeVar("T")
_log = get_logger(controller="backup-manager", component="guard")


@dataclasses.dataclass
class Pass:
    """The state of one reconcile of one cluster key."""

    key: str
    namespace: str
    name: str
    cluster_obj: JSONObject | None
    records: dict[str, JSONObject]
    waits: list[float] = dataclasses.field(default_factory=list)
    failed: list[tuple[Step, Failure]] = dataclasses.field(default_factory=list)
    backup_status: dict[str, Any] = dataclasses.field(default_factory=dict)

    def wait(self, seconds: float | None) -> None:
        if seconds is not None:
            self.waits.append(max(MIN_REQUEUE_SECONDS, seconds))


class Guard:
    def __init__(self, *, deps: Deps) -> None:
        self.deps = deps
        self._streaks: dict[tuple[str, Step], int] = {}

    async def step(
        self,
        run: Pass,
        step: Step,
        fn: Callable[[], Awaitable[T]],
        *,
        record: JSONObject | None = None,
    ) -> T | None:
        """Run one step; classify, count and surface its failure. None if it failed."""
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the one place every step's failure is classified
            failure = failures.classify(exc)
            run.failed.append((step, failure))
            metric_catalog.reconcile_step_error(step=step.value, kind=failure.kind.value)
            log = _log.error if failure.kind is Kind.BUG else _log.warning
            log(
                "reconcile step failed",
                key=run.key,
                step=step.value,
                kind=failure.kind.value,
                reason=failure.reason,
                error=failure.message,
                record=name_of(record) if record is not None else None,
                exc_info=failure.kind is Kind.BUG,
            )
            if record is None:
                return None
            if step is Step.RESTORE and failure.kind is not Kind.TRANSIENT:
                await self.fail_restore(run, record, failure)
            elif step.per_record and failure.kind is not Kind.TRANSIENT:
                await self.fail(run, record, failure)
            elif step is Step.LAUNCH and not failure.ambiguous:
                await self._release_quietly(run, record)
            return None

    async def fail(self, run: Pass, record: JSONObject, failure: Failure) -> None:
        """End ``record`` as Failed (counted), cancel its Job, release what it held."""
        d, rec = self.deps, name_of(record)

        async def fail() -> None:
            await running.cancel(d, namespace=run.namespace, record=rec)
            updated = await outcome.fail_record(
                d, record=record, reason=failure.reason, message=failure.message
            )
            run.records[rec] = updated
            run.cluster_obj = await outcome.finish(d, record=updated, cluster_obj=run.cluster_obj)

        await self.step(run, Step.FINISH, fail)

    async def fail_restore(self, run: Pass, restore: JSONObject, failure: Failure) -> None:
        """End an OpenBaoRestore as Failed (never retried) and let go of what it held."""
        d = self.deps

        async def fail() -> None:
            updated = await restoring.fail(
                d, restore=restore, reason=failure.reason, message=failure.message
            )
            await restoring.finish(d, restore=updated)

        await self.step(run, Step.FINISH, fail)

    async def _release_quietly(self, run: Pass, record: JSONObject) -> None:
        d = self.deps
        await self.step(
            run,
            Step.FINISH,
            lambda: d.lock.release(
                namespace=run.namespace, cluster=run.name, me=me(name_of(record)), now=d.now()
            ),
        )

    def stalled(self, run: Pass) -> tuple[str, str] | None:
        """The (step, message) to surface as ``Stalled``: a step that failed in this pass and
        in the RETRY_SURFACE_AFTER - 1 passes before it."""
        surfaced = [
            (step, failure)
            for step, failure in run.failed
            if self._streaks.get((run.key, step), 0) + 1 >= RETRY_SURFACE_AFTER
        ]
        if not surfaced:
            return None
        step, failure = surfaced[0]
        return step.title, f"{step.value}: {failure.message}"

    def requeue_after(self, run: Pass) -> float | None:
        """Update the per-step failure streaks; a timed requeue (retry backoff included)."""
        failed_steps = {step for step, _ in run.failed}
        for step in Step:
            if step in failed_steps:
                self._streaks[(run.key, step)] = self._streaks.get((run.key, step), 0) + 1
            else:
                self._streaks.pop((run.key, step), None)
        if failed_steps:
            run.waits.append(retry_delay(max(self._streaks[(run.key, s)] for s in failed_steps)))
        return min(run.waits) if run.waits else None
