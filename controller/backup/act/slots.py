"""Executor-Job slots: the global cap and the per-storage-target cap on running backups.

The decision is :func:`controller.backup.decide.spread.admit`; this module keeps its inputs.

Guarantees:

* what runs is read from the records cache (the ``phase`` index: every ``Running`` record, our
  own writes included through the :class:`~.fresh.FreshView`), plus the launches admitted in
  this process that have not written ``Running`` yet (:meth:`LaunchSlots.admitted`), so two
  workers can never both take the last slot (admission and reservation happen without an
  ``await`` between them), and a restarted or failed-over controller counts the Jobs that run;
* the waiting launches are remembered per record with the time their window (or creation)
  became due, so admission is oldest due first across all clusters; an entry is dropped when
  its launch is admitted, when the record is no longer Pending, or when nobody asked for it
  within :data:`~controller.backup.decide.timing.SLOT_WAIT_STALE_SECONDS` (its cluster
  stopped waiting): the queue is bounded by the number of Pending records and never keeps a
  slot for a launch that went away;
* a cluster's reconcile that did not ask for a slot again takes its launches out of the queue
  (:meth:`LaunchSlots.wake`: its record started, was blocked by something else, or went
  away), so a launch waits only while its cluster keeps asking;
* when slots are free, :meth:`LaunchSlots.wake` names the clusters of the oldest waiting
  launches that may take them now (:func:`~controller.backup.decide.spread.admissible`:
  as many as slots are free, per-target cap respected), each once per time it asked: the
  backup manager returns them in its :class:`~controller.runner.Result` and the runner
  enqueues them, so a freed slot is taken within a reconcile, not at the waiting launch's
  timer (:func:`~controller.backup.decide.timing.cap_retry_delay`, now only the fallback);
  a woken launch keeps its slot in the count until its cluster reconciled, so one free slot
  never wakes two launches;
* the number of waiting launches is exported (``openbao_backup_queued``) on every change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from controller import metrics as metric_catalog
from controller.backup.act.fresh import FreshView
from controller.backup.decide.records import PENDING, RUNNING, phase_of
from controller.backup.decide.spread import Admission, Waiting, admissible, admit, target_key
from controller.backup.decide.timing import SLOT_WAIT_STALE_SECONDS
from controller.cache.store import key_of


@dataclass
class _Entry:
    """One waiting launch: its place in the order, its cluster's key, when and in which
    generation it last asked, and whether it was woken since."""

    waiting: Waiting
    cluster: str
    asked: dt.datetime
    generation: int
    woken: bool = False


class LaunchSlots:
    def __init__(
        self,
        *,
        backups: FreshView,
        by_phase: str,
        max_total: int,
        max_per_target: int,
    ) -> None:
        self._backups = backups
        self._by_phase = by_phase
        self.max_total = max_total
        self.max_per_target = max_per_target
        self._waiting: dict[str, _Entry] = {}
        self._starting: dict[str, str] = {}
        self._generation = 0
        metric_catalog.set_queued(0)

    def _running(self) -> list[str]:
        running = self._backups.by_index(self._by_phase, RUNNING)
        seen = {key_of(r) for r in running}
        targets = [target_key((r.get("status") or {}).get("target") or {}) for r in running]
        return targets + [t for k, t in self._starting.items() if k not in seen]

    def _prune(self, now: dt.datetime) -> None:
        for key, entry in list(self._waiting.items()):
            record = self._backups.get(key)
            stale = (now - entry.asked).total_seconds() > SLOT_WAIT_STALE_SECONDS
            if stale or record is None or phase_of(record) != PENDING:
                del self._waiting[key]

    def try_admit(
        self,
        *,
        record: str,
        cluster: str,
        due: dt.datetime,
        target: Mapping[str, Any],
        now: dt.datetime,
    ) -> Admission:
        """Admit ``record`` (``namespace/name``) of ``cluster`` (its key) now, or remember it
        as waiting."""
        self._prune(now)
        me = Waiting(due=due, record=record, target=target_key(target))
        self._waiting.pop(record, None)
        got = admit(
            candidate=me,
            waiting=[e.waiting for e in self._waiting.values()],
            running=self._running(),
            max_total=self.max_total,
            max_per_target=self.max_per_target,
        )
        if got.admitted:
            self._starting[record] = me.target
        else:
            self._generation += 1
            self._waiting[record] = _Entry(me, cluster, now, self._generation)
        metric_catalog.set_queued(len(self._waiting))
        return got

    def mark(self) -> int:
        """Taken when a cluster's reconcile starts; give it back to :meth:`wake`."""
        return self._generation

    def wake(self, *, cluster: str, mark: int, now: dt.datetime) -> tuple[str, ...]:
        """After a reconcile of ``cluster`` (begun at ``mark``): drop its launches that did not
        ask again, then the cluster keys of the waiting launches that may take a free slot
        now and were not woken since they last asked (oldest due first)."""
        for key, entry in list(self._waiting.items()):
            if entry.cluster == cluster and entry.generation <= mark:
                del self._waiting[key]
        metric_catalog.set_queued(len(self._waiting))
        running = self._running()
        if not self._waiting or (self.max_total and len(running) >= self.max_total):
            return ()  # the common case in a burst: every slot taken, nothing to sort
        self._prune(now)
        metric_catalog.set_queued(len(self._waiting))
        by_record = {e.waiting.record: e for e in self._waiting.values()}
        free = admissible(
            waiting=[e.waiting for e in by_record.values()],
            running=running,
            max_total=self.max_total,
            max_per_target=self.max_per_target,
        )
        keys: dict[str, None] = {}
        for item in free:
            entry = by_record[item.record]
            if not entry.woken:
                entry.woken = True
                keys[entry.cluster] = None
        return tuple(keys)

    @contextlib.contextmanager
    def admitted(self, record: str) -> Iterator[None]:
        """Hold the admitted launch's slot until it wrote ``Running`` or gave up."""
        try:
            yield
        finally:
            self._starting.pop(record, None)

    def __len__(self) -> int:
        return len(self._waiting)
