"""The figures of one scale-benchmark variant, read from what the run recorded and from the
audit log, and the printed table (``controller_scale.py``).

Guarantees: every figure is computed here from :class:`Run` alone, by the pure functions of
``scale_audit``; nothing here talks to the API server.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scale_audit as audit
from bench import scale_world as world
from bench.scale_world import LAUNCH_SET

LOCK_SECONDS = 60  # the default --operation-lock-seconds of both trees


@dataclass
class Variant:
    name: str
    tree: Path
    args: list[str] = field(default_factory=list)
    hold: float | None = None  # seconds an executor pod runs; None: never ends
    qps: float = 20.0


@dataclass
class Run:
    v: Variant
    ns: str
    window: float
    tail: audit.AuditTail
    executors: world.Executors | None = None
    marks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    triggers: list[float] = field(default_factory=list)
    rss: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    unstarted: int = 0  # triggers whose Job did not come within the trigger budget


def figures(run: Run, *, n: int) -> dict[str, Any]:
    ev, w = run.tail.events, run.window
    end = run.marks["end"]
    jobs = scheduled_jobs(run)
    times = sorted(t - w for t in jobs.values())
    done_at = run.marks["end"] if run.v.hold is not None else run.marks["last_job"]
    writes = audit.writes_by_kind(audit.between(ev, w - 5, done_at))
    ended = run.executors.ended if run.executors else {}
    ends = {f"{k.split('-')[0]}-openbao-oplock": ended.get(k, end) for k in jobs}
    gaps = audit.lease_gaps(ev, namespace=run.ns, ends=ends)
    idle = audit.between(ev, run.marks["settled"], run.marks["idle_end"])
    idle_min = max(1e-9, (run.marks["idle_end"] - run.marks["settled"]) / 60)
    per_cluster: dict[str, int] = {}
    for k in jobs:
        per_cluster[k.split("-")[0]] = per_cluster.get(k.split("-")[0], 0) + 1
    cpu_end = run.cpu.get("done", run.cpu["last_job"])
    trig = sorted(run.triggers)
    return {
        "jobs": len(jobs),
        "first": times[0],
        "median": statistics.median(times),
        "last": times[-1],
        "jobs_per_s": len(jobs) / times[-1],
        "writes": writes,
        "writes_per_backup": sum(writes.values()) / n,
        "max_gap": max(gaps.values(), default=0.0),
        "lapsed": sum(1 for g in gaps.values() if g > LOCK_SECONDS),
        "leases": len(gaps),
        "max_running": audit.overlap((jobs[k], ended.get(k, end)) for k in jobs),
        "once": sum(1 for c in per_cluster.values() if c == 1),
        "cpu_per_1000": (cpu_end - run.cpu["window"]) * 1000 / n,
        "idle_per_min": len(idle) / idle_min,
        "idle_kinds": audit.idle_kinds(idle, leader_lease=world.LEADER_LEASE),
        "idle_minutes": idle_min,
        "idle_cpu": run.cpu["window"] - run.cpu["idle0"],
        "rss_mib": run.rss / 2**20,
        "trigger_p50": statistics.median(trig) * 1000 if trig else float("nan"),
        "trigger_p99": trig[min(len(trig) - 1, round(0.99 * (len(trig) - 1)))] * 1000
        if trig
        else float("nan"),
        "phases": run.phases,
        "triggers": f"{len(trig)} started, {run.unstarted} not within the budget",
    }


def print_report(
    results: dict[str, dict[str, Any]], *, raw: dict[int, float], n: int, qps: float
) -> None:
    nan = float("nan")
    rate_min, rate_same = n / raw.get(3, nan), n / raw.get(len(LAUNCH_SET), nan)
    print(
        f"\n{n} clusters due at one window; a raw client at {qps:g} QPS launches {n} backups "
        f"at {rate_min:.2f} Jobs/s writing the minimal set (x min: record, Lease, Job) and at "
        f"{rate_same:.2f} Jobs/s writing the controller's launch set (x same: "
        + ", ".join(LAUNCH_SET)
        + ")"
    )
    head = (
        f"{'variant':<8} {'jobs':>5} {'first':>6} {'median':>7} {'last':>6} {'Jobs/s':>7} "
        f"{'x min':>6} {'x same':>6} {'wr/bkp':>7} {'lapsed':>9} {'maxgap':>7} {'maxrun':>7} "
        f"{'once':>5} "
        f"{'CPU/1k':>7} {'idle/min':>9} {'trig p50':>9} {'p99 ms':>7} {'RSS':>6}"
    )
    print(head + "\n" + "-" * len(head))
    for name, r in results.items():
        print(
            f"{name:<8} {r['jobs']:>5} {r['first']:>6.1f} {r['median']:>7.1f} {r['last']:>6.1f} "
            f"{r['jobs_per_s']:>7.2f} {r['jobs_per_s'] / rate_min:>6.2f} "
            f"{r['jobs_per_s'] / rate_same:>6.2f} "
            f"{r['writes_per_backup']:>7.1f} {r['lapsed']:>4}/{r['leases']:<4} "
            f"{r['max_gap']:>7.1f} {r['max_running']:>7} {r['once']:>5} {r['cpu_per_1000']:>7.1f} "
            f"{r['idle_per_min']:>9.1f} {r['trigger_p50']:>9.0f} {r['trigger_p99']:>7.0f} "
            f"{r['rss_mib']:>6.0f}"
        )
    for name, r in results.items():
        print(f"\n{name}: writes from the window to the end of the burst, per backup:")
        for kind, count in sorted(r["writes"].items(), key=lambda kv: -kv[1]):
            print(f"  {kind:<40} {count / n:>6.2f}")
        print(
            f"{name}: idle {r['idle_minutes']:.1f} min, {r['idle_cpu']:.2f} CPU-s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(r["idle_kinds"].items()))
        )
        print(f"{name}: manual triggers: {r['triggers']}")
        if r["phases"]:
            print(f"{name}: record phases at the end: {r['phases']}")


def scheduled_jobs(run: Run) -> dict[str, float]:
    """The scheduled backups' Jobs created at or after the window (name -> when)."""
    jobs = audit.job_creations(run.tail.events, namespace=run.ns)
    return {k: t for k, t in jobs.items() if k.startswith("c") and t >= run.window}
