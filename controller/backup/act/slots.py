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
* the number of waiting launches is exported (``openbao_backup_queued``) on every change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from controller import metrics as metric_catalog
from controller.backup.act.fresh import FreshView
from controller.backup.decide.records import PENDING, RUNNING, phase_of
from controller.backup.decide.spread import Admission, Waiting, admit, target_key
from controller.backup.decide.timing import SLOT_WAIT_STALE_SECONDS
from controller.cache.store import key_of


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
        self._waiting: dict[str, tuple[Waiting, dt.datetime]] = {}
        self._starting: dict[str, str] = {}
        metric_catalog.set_queued(0)

    def _running(self) -> list[str]:
        running = self._backups.by_index(self._by_phase, RUNNING)
        seen = {key_of(r) for r in running}
        targets = [target_key((r.get("status") or {}).get("target") or {}) for r in running]
        return targets + [t for k, t in self._starting.items() if k not in seen]

    def _prune(self, now: dt.datetime) -> None:
        for key, (_, asked) in list(self._waiting.items()):
            record = self._backups.get(key)
            stale = (now - asked).total_seconds() > SLOT_WAIT_STALE_SECONDS
            if stale or record is None or phase_of(record) != PENDING:
                del self._waiting[key]

    def try_admit(
        self, *, record: str, due: dt.datetime, target: Mapping[str, Any], now: dt.datetime
    ) -> Admission:
        """Admit ``record`` (``namespace/name``) now, or remember it as waiting."""
        self._prune(now)
        me = Waiting(due=due, record=record, target=target_key(target))
        self._waiting.pop(record, None)
        got = admit(
            candidate=me,
            waiting=[w for w, _ in self._waiting.values()],
            running=self._running(),
            max_total=self.max_total,
            max_per_target=self.max_per_target,
        )
        if got.admitted:
            self._starting[record] = me.target
        else:
            self._waiting[record] = (me, now)
        metric_catalog.set_queued(len(self._waiting))
        return got

    @contextlib.contextmanager
    def admitted(self, record: str) -> Iterator[None]:
        """Hold the admitted launch's slot until it wrote ``Running`` or gave up."""
        try:
            yield
        finally:
            self._starting.pop(record, None)

    def __len__(self) -> int:
        return len(self._waiting)
