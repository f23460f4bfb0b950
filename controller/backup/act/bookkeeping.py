"""The cluster's bookkeeping status: conditions and schedule fields, written only on change.

Guarantees:

* ``ConfigValid``, ``Suspended``, ``PreflightBlocked`` and ``Stalled`` always reflect this
  reconcile, with ``observedGeneration``, and so does the summary ``Ready``
  (:func:`~controller.backup.decide.conditions.with_ready`: its reason is the READY column's
  why, e.g. ``OpenBaoSealed`` or ``LockHeld`` while a due backup is blocked);
  ``nextScheduledBackup`` is the next window (or cleared);
* an invalid spec is never only a condition: whenever ``ConfigValid`` turns False (or its
  message changes) a Warning event ``InvalidSpec`` names the problem, and the gauge
  ``openbao_backup_config_valid`` (0/1) lets an alert fire; the schedule's cadence and the
  suspension are exported beside it (``openbao_backup_schedule_interval_seconds``,
  ``openbao_backup_suspended``) for the backup-age alert; a ``Stalled`` condition that
  turns True raises a ``ReconcileRetrying`` Warning event;
* nothing is written when nothing changed (no write storms, no needless watch events);
* outcome fields (last success, failures) are NOT written here: only
  :func:`controller.backup.act.running.account` writes them, when a Job reached a terminal result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.backup.act.deps import Deps
from controller.backup.decide import cadence
from controller.backup.decide import conditions as cond
from controller.cache.store import JSONObject


async def write_bookkeeping(
    deps: Deps,
    cluster_obj: JSONObject,
    *,
    config_error: str,
    next_window: Any,
    suspended: bool,
    blocked: str | None,
    extra: Mapping[str, Any],
    stalled: tuple[str, str] | None = None,
) -> None:
    d = deps
    now = d.now()
    gen = int(cluster_obj["metadata"].get("generation") or 0)
    current = cluster_obj.get("status") or {}
    conds = current.get("conditions")
    meta = cluster_obj["metadata"]
    metrics = d.metrics.get(f"{meta['namespace']}/{meta['name']}")
    if metrics is not None:
        metrics.config_valid(not config_error)
        spec = (cluster_obj.get("spec") or {}).get("backup") or {}
        gap = cadence.cached_gap(
            str(spec.get("schedule") or "") or None, str(spec.get("timeZone") or "UTC"), now.date()
        )
        metrics.schedule(interval=gap, suspended=suspended)
    was = cond.get_condition(conds, cond.CONFIG_VALID)
    if config_error and (
        was is None or was.get("status") != "False" or was.get("message") != config_error[:1024]
    ):
        await d.events.emit(
            obj=cluster_obj, type="Warning", reason="InvalidSpec", note=config_error
        )
    was_stalled = cond.get_condition(conds, cond.STALLED)
    if stalled is not None and (was_stalled is None or was_stalled.get("status") != "True"):
        await d.events.emit(
            obj=cluster_obj, type="Warning", reason="ReconcileRetrying", note=stalled[1]
        )
    conds = cond.set_condition(
        conds,
        type=cond.STALLED,
        status="True" if stalled else "False",
        reason=stalled[0] if stalled else "Progressing",
        message=stalled[1] if stalled else "",
        observed_generation=gen,
        now=now,
    )
    conds = cond.set_condition(
        conds,
        type=cond.CONFIG_VALID,
        status="False" if config_error else "True",
        reason="Invalid" if config_error else "Valid",
        message=config_error,
        observed_generation=gen,
        now=now,
    )
    conds = cond.set_condition(
        conds,
        type=cond.SUSPENDED,
        status="True" if suspended else "False",
        reason="Suspended" if suspended else "Active",
        message="scheduled backups are suspended" if suspended else "",
        observed_generation=gen,
        now=now,
    )
    reason, _, message = (blocked or "").partition(": ")
    conds = cond.set_condition(
        conds,
        type=cond.PREFLIGHT_BLOCKED,
        status="True" if blocked else "False",
        reason=reason or "Clear",
        message=message,
        observed_generation=gen,
        now=now,
    )
    conds = cond.with_ready(conds, observed_generation=gen, now=now)
    backup: dict[str, Any] = dict(extra)
    backup["nextScheduledBackup"] = cond.rfc3339(next_window) if next_window else None
    want = {"observedGeneration": gen, "conditions": conds}
    have_backup = current.get("backup") or {}
    changed_backup = {k: v for k, v in backup.items() if have_backup.get(k) != v}
    if changed_backup:
        want["backup"] = changed_backup
    if (
        not changed_backup
        and current.get("observedGeneration") == gen
        and _same_conditions(current.get("conditions"), conds)
    ):
        return
    await d.status.cluster(obj=cluster_obj, status=want)


def _same_conditions(a: Any, b: Any) -> bool:
    def norm(xs: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (
                c.get("type"),
                c.get("status"),
                c.get("reason"),
                c.get("message"),
                c.get("observedGeneration"),
            )
            for c in xs or ()
        )

    return norm(a) == norm(b)
