"""Benchmark: 1,000 clusters due at the same window (issue 13), the controller run as users run it.

Starts a private local control plane with the apiserver's audit log on, a real OpenBao, the
CRDs and the chart's RBAC (``manifests/install.yaml``). For each variant it creates N
OpenBaoClusters due at the same minute (plus T idle ones for manual triggers) in a fresh
namespace, then runs ``python -m controller`` as a **separate process** from a source tree
(this one, or ``--baseline REV`` exported with ``git archive``), authenticated as the chart's
ServiceAccount, with leader election on. Every API figure is read from the audit log, by the
ServiceAccount's user name (``scale_audit``), so an old revision is measured exactly as this
one is. It reports, per variant:

* **idle**: requests per minute between the controller's settling and the window, by kind;
* **burst**: when each executor Job was created after the window (first, median, last),
  Jobs per second to the last one, and the ratio to a raw client creating the minimal write
  set of a backup (record, Lease, Job) under the same token bucket in the same run;
* **writes**: per backup, by verb and resource, from the window to the last Job (launch-only
  variants) or to the last result (``capped``);
* **locks**: operation-lock Leases that went longer than their duration without a write
  while their Job ran (in launch-only variants no executor ends, so every lock is held from
  its acquire to the end of the measurement, which lasts a lock duration past the last Job);
* **cap**: the most executor Jobs running at once (a Job runs from its creation until the
  stand-in executor ended its pod), records per cluster for the window (exactly one,
  Succeeded, in ``capped``);
* **CPU**: the controller process's CPU seconds from the window to the end of the burst,
  per 1,000 backups; its RSS at the end;
* **triggers**: T manual triggers one after another on idle clusters while the burst's
  backups hold their locks, latency from the PATCH to the Job's create (p50, p99).

Variants: ``before`` (``--baseline``, default the last commit before issue 13's work;
launch-only: no executor ends, every lock must be renewed); ``after`` (this tree at its
defaults, 20 QPS: the global cap is what the renewal lane keeps locked, 100; executors end
after ``--capped-hold`` seconds); ``uncapped`` (this tree, launch-only, every cluster at once
with the renewal budget raised to cover 1,000 runs); ``capped`` (this tree,
``--max-concurrent-backups --cap`` at ``--capped-qps``, so 1,000 whole backups fit in
minutes).

Usage: .venv/bin/python hack/bench/controller_scale.py [--clusters 1000] [--variants ...]
Everything listens on 127.0.0.1; every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack")]

from bench import scale_audit as audit  # noqa: E402
from bench import scale_world as world  # noqa: E402
from bench.controller_memory import export_revision, stop  # noqa: E402
from bench.controller_sync import install_crds, ready, wait_for  # noqa: E402
from bench.scale_report import LOCK_SECONDS, Run, Variant, figures, print_report, scheduled_jobs  # noqa: E402
from devenv.audit import AUDIT_LOG  # noqa: E402
from devenv.controlplane import ControlPlane  # noqa: E402
from devenv.openbao import start_openbao  # noqa: E402
from devenv.procs import free_port  # noqa: E402

from controller import errors  # noqa: E402
from controller import logging as controller_logging  # noqa: E402
from controller.backup.decide.vocabulary import TRIGGER_ANNOTATION  # noqa: E402
from controller.kube.client import connect  # noqa: E402
from controller.kube.resources import BACKUP_GROUP as GROUP  # noqa: E402
from controller.kube.resources import BACKUP_VERSION as VERSION  # noqa: E402
from controller.settings import Settings  # noqa: E402
from tests.inprocess.harness import Kube  # noqa: E402

BEFORE_ISSUE_13 = "9f5f2c9"
"""The last commit before any of issue 13's work (the tree the issue's figures describe)."""
SETTLED_QUIET_SECONDS = 5.0
"""The controller has settled when it wrote nothing for this long."""


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


async def run_variant(
    v: Variant, *, kube: Kube, cp: ControlPlane, kubeconfig: Path, addr: str, a: Any
) -> Run:
    ns = f"scale-{v.name}"
    await kube.api.create(path="/api/v1/namespaces", body={"metadata": {"name": ns}})
    w = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=a.lead + 60)
    w = w.replace(second=0, microsecond=0)
    await world.create_clusters(
        kube, namespace=ns, n=a.clusters, addr=addr, schedule=world.daily(w)
    )
    await world.create_clusters(  # manual-trigger targets, idle during the burst
        kube, namespace=ns, n=a.triggers, addr=addr, schedule=world.NEVER_DURING_A_RUN, prefix="t"
    )
    with contextlib.suppress(errors.NotFound):
        await kube.api.request(
            method="DELETE",
            path=f"/apis/coordination.k8s.io/v1/namespaces/{world.RELEASE_NS}/leases/"
            f"{world.LEADER_LEASE}",
        )
    run = Run(
        v=v,
        ns=ns,
        window=w.timestamp(),
        tail=audit.AuditTail(cp.workdir / AUDIT_LOG, users=[world.USER]),
    )
    port = free_port()
    log = cp.workdir.parent / f"controller-{v.name}.log"
    argv = [sys.executable, "-m", "controller", "--kubeconfig", str(kubeconfig), "--namespace",
            ns, "--lease-namespace", world.RELEASE_NS, "--lease-name", world.LEADER_LEASE,
            "--identity", f"bench-{v.name}", "--bind-address", f"127.0.0.1:{port}",
            "--executor-image", "example.invalid/openbao-backup:bench", "--log-level", "warning",
            "--client-qps", str(v.qps), *v.args]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - one child, stopped below
            argv, cwd=v.tree, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(v.tree)}, start_new_session=True,
        )  # fmt: skip
    ps = psutil.Process(proc.pid)
    try:

        async def is_ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"{v.name}: the controller exited {proc.returncode}; see {log}")
            return await ready(port)

        await wait_for(is_ready, timeout=600, what=f"{v.name}: /readyz")
        say(f"{v.name}: ready")
        await settled(run)
        run.marks["settled"] = time.time()
        say(f"{v.name}: settled; idle until the window, {run.window - time.time():.0f} s")
        run.cpu["idle0"] = cpu_seconds(ps)
        await asyncio.sleep(max(0.0, run.window - 5 - time.time()))  # measuring idle
        run.marks["idle_end"] = time.time()
        run.cpu["window"] = cpu_seconds(ps)
        async with asyncio.TaskGroup() as tg:
            if v.hold is not None:
                run.executors = world.Executors(kube, namespace=ns, hold=v.hold)
                task = tg.create_task(run.executors.run())
            await burst(run, kube=kube, a=a, ps=ps)
            await triggers(run, kube=kube, n=a.triggers, budget=a.trigger_budget)
            if v.hold is not None:
                task.cancel()
        run.rss = ps.memory_info().rss
    finally:
        stop(proc, timeout=60)
    run.tail.read()
    return run


async def settled(run: Run) -> None:
    last = time.time()
    while time.time() - last < SETTLED_QUIET_SECONDS:
        writes = [r for r in run.tail.read() if r.write and r.name != world.LEADER_LEASE]
        if writes:
            last = max(r.at for r in writes)
        await asyncio.sleep(0.5)


async def burst(run: Run, *, kube: Kube, a: Any, ps: psutil.Process) -> None:
    deadline = time.time() + a.timeout
    while True:
        run.tail.read()
        jobs = scheduled_jobs(run)
        if len(jobs) >= a.clusters:
            break
        if time.time() > deadline:
            raise SystemExit(f"{run.v.name}: {len(jobs)} of {a.clusters} Jobs by the deadline")
        if int(time.time()) % 30 == 0:
            say(f"{run.v.name}: {len(jobs)} Jobs")
        await asyncio.sleep(0.5)
    run.marks["last_job"] = time.time()
    say(f"{run.v.name}: {a.clusters} Jobs, the last {run.marks['last_job'] - run.window:.1f} s")
    run.cpu["last_job"] = cpu_seconds(ps)
    if run.v.hold is None:  # locks are held past a whole lease duration after the last Job
        await asyncio.sleep(LOCK_SECONDS + 10)  # measuring renewals
    else:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{run.ns}/openbaobackups"
        while True:
            records = [r for r in await kube.items(path) if r["spec"]["cluster"].startswith("c")]
            phases = [str((r.get("status") or {}).get("phase")) for r in records]
            run.phases = {p: phases.count(p) for p in set(phases)}
            if len(records) >= a.clusters and all(p in {"Succeeded", "Failed"} for p in phases):
                break
            if time.time() > deadline:
                raise SystemExit(f"{run.v.name}: results by the deadline: {run.phases}")
            await asyncio.sleep(1.0)
        await settled(run)
        run.cpu["done"] = cpu_seconds(ps)
    run.marks["end"] = time.time()
    say(f"{run.v.name}: burst measured")


async def triggers(run: Run, *, kube: Kube, n: int, budget: float) -> None:
    """Up to ``n`` manual triggers, one after another, within ``budget`` seconds in all; a
    trigger whose Job did not come within the budget is recorded as ``unstarted``."""
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{run.ns}/openbaoclusters"
    deadline = time.time() + budget
    for i in range(n):
        if time.time() >= deadline:
            break
        name = world.cluster_name(i, prefix="t")
        sent = time.time()
        await kube.api.merge_patch(
            path=f"{base}/{name}", body={"metadata": {"annotations": {TRIGGER_ANNOTATION: "go"}}}
        )
        found: list[float] = []
        while not found and time.time() < deadline:
            jobs = audit.job_creations(run.tail.read(), namespace=run.ns)  # only what is new
            found.extend(t for k, t in jobs.items() if k.startswith(f"{name}-"))
            await asyncio.sleep(0.02)
        if found:
            run.triggers.append(found[0] - sent)
        else:
            run.unstarted += 1


async def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--triggers", type=int, default=30)
    p.add_argument("--trigger-budget", type=float, default=120.0, help="seconds, all triggers")
    p.add_argument("--variants", default="before,after,capped")
    p.add_argument("--baseline", default=BEFORE_ISSUE_13, help="git revision run as 'before'")
    p.add_argument("--cap", type=int, default=100, help="--max-concurrent-backups of 'capped'")
    p.add_argument("--capped-hold", type=float, default=10.0)
    p.add_argument("--capped-qps", type=float, default=100.0)
    p.add_argument("--qps", type=float, default=20.0, help="--client-qps of before/after")
    p.add_argument("--lead", type=float, default=120.0, help="seconds to settle before the window")
    p.add_argument("--timeout", type=float, default=1800.0, help="per burst")
    p.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True)
    a = p.parse_args()
    controller_logging.configure(log_format="console", level="error")
    work = Path(tempfile.mkdtemp(prefix="obb-scale-"))
    every_run = a.clusters * 3 / LOCK_SECONDS  # renewals/s that keep every cluster's lock
    variants = {
        "before": Variant("before", export_revision(a.baseline, work / "before"), qps=a.qps),
        # the defaults: the global cap is what the renewal lane keeps locked (100)
        "after": Variant("after", ROOT, hold=a.capped_hold, qps=a.qps),
        "uncapped": Variant(  # every cluster at once, renewal budget raised to cover it
            "uncapped",
            ROOT,
            ["--max-concurrent-backups", str(a.clusters), "--lock-renew-qps", str(every_run)],
            qps=a.qps,
        ),
        "capped": Variant(
            "capped",
            ROOT,
            ["--max-concurrent-backups", str(a.cap), "--client-burst", str(int(a.capped_qps))],
            hold=a.capped_hold,
            qps=a.capped_qps,
        ),
    }
    cp = ControlPlane(workdir=work / "cp", audit=True).start()
    bao = start_openbao(work, name="openbao")
    try:
        clients = await connect(
            Settings(kubeconfig=cp.kubeconfig, leader_elect=False, client_qps=500, client_burst=500)
        )
        kube = Kube(clients.api)
        try:
            await install_crds(clients)
            await world.install_rbac(clients.api)
            kubeconfig = world.controller_kubeconfig(cp, work / "sa.kubeconfig")
            results = {}
            for name in a.variants.split(","):
                run = await run_variant(
                    variants[name], kube=kube, cp=cp, kubeconfig=kubeconfig, addr=bao.addr, a=a
                )
                results[name] = figures(run, n=a.clusters)
            raw = {}
            for writes in (3, len(world.LAUNCH_SET)) if a.raw else ():
                ns = f"raw-{writes}"
                await kube.api.create(path="/api/v1/namespaces", body={"metadata": {"name": ns}})
                raw[writes] = await world.raw_client(
                    clients.api, namespace=ns, n=a.clusters, qps=a.qps, burst=30, writes=writes
                )
                say(f"raw client, {writes} writes per backup: {raw[writes]:.1f} s")
        finally:
            await clients.close()
    finally:
        bao.stop()
        cp.stop()
    print_report(results, raw=raw, n=a.clusters, qps=a.qps)
    print(f"\nwork directory (audit log, controller logs): {work}")


if __name__ == "__main__":
    asyncio.run(main())
