"""Benchmark: N clusters due in the same minute (issue 13): Job start times and lock renewals.

Starts a private local control plane and a real OpenBao (hack/devenv), installs the CRDs and
creates N OpenBaoClusters with the same daily schedule, all pointing at that OpenBao. Then,
for each variant, the real controller ``App`` runs in this process (its clock moved to one
second after the window, as the in-process tests do) and the bench measures:

* when each executor Job was created, after the window (first, median, last), and the writes
  per backup (the App's client counts them);
* how long each operation-lock Lease went without renewal while its Job ran (no kubelet runs
  the Jobs: every Job runs for the whole measurement), and how many Leases went past their
  duration;
* a raw client creating the same N Jobs at the same write budget in the same run: the
  controller's last Job time is printed as a ratio to it (1.0 = the API budget is the only
  limit).

Variants: ``renewer`` (this tree), ``requeue-renewals`` (the renewal lane off: renewals are
timed requeues of the cluster key, as before issue 13), and ``capped`` (``--max-concurrent-
backups N/2``: the second half waits for slots).

Usage: PYTHONPATH=hack .venv/bin/python hack/bench/controller_burst.py [--clusters 200]
       [--lock-seconds 15] [--hold 40] [--variants renewer,requeue-renewals,capped]
Everything listens on 127.0.0.1; the control plane and OpenBao are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack")]

from bench.controller_sync import install_crds  # noqa: E402
from devenv.controlplane import ControlPlane  # noqa: E402
from devenv.openbao import start_openbao  # noqa: E402

from controller import logging as controller_logging  # noqa: E402
from controller.app import App  # noqa: E402
from controller.backup.act.deps import utcnow  # noqa: E402
from controller.kube.client import KubeApi, TokenBucket, connect  # noqa: E402
from controller.reconcilers.backups import BackupManager  # noqa: E402
from controller.settings import Settings  # noqa: E402
from tests.inprocess.harness import Cluster, Kube, faulty_clients  # noqa: E402
from tests.inprocess.harness import Faults as Calls  # noqa: E402

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SAMPLE_SECONDS = 1.0
"""How often the Leases are read: finer shows shorter gaps, costs more reads."""


def manager(app: App) -> BackupManager:
    for runner in app.runners:
        if isinstance(runner._reconciler, BackupManager):
            return runner._reconciler
    raise RuntimeError("no backup manager")


async def raw_jobs(api: KubeApi, namespace: str, n: int, qps: float, burst: int) -> float:
    """Seconds a raw client takes to create n Jobs at the same write budget."""
    throttled = api.with_throttle(TokenBucket(qps=qps, burst=burst))
    start = time.monotonic()

    async def one(i: int) -> None:
        await throttled.create(
            path=f"/apis/batch/v1/namespaces/{namespace}/jobs",
            body={
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": f"raw-{i:05d}"},
                "spec": {
                    "suspend": True,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "x", "image": "example.invalid/x"}],
                        }
                    },
                },
            },
        )

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - start


async def variant(
    *, name: str, cp: ControlPlane, kube: Kube, addr: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    ns = await kube.create_namespace()
    window = utcnow().replace(second=0, microsecond=0) + dt.timedelta(minutes=5)
    for i in range(0, n, 50):
        await asyncio.gather(
            *(_cluster(kube, ns, f"c{j:05d}", addr, window) for j in range(i, min(n, i + 50)))
        )
    overrides: dict[str, Any] = {"operation_lock_seconds": args.lock_seconds}
    if name == "capped":
        overrides["max_concurrent_backups"] = max(1, n // 2)
        overrides["lock_renew_qps"] = max(5.0, n * 3 / args.lock_seconds)
    settings = Settings(
        kubeconfig=cp.kubeconfig,
        namespaces=(ns,),
        leader_elect=False,
        bind_address="127.0.0.1:0",
        identity=f"bench-{name}",
        executor_image="example.invalid/openbao-backup:bench",
        log_level="error",
        **overrides,
    )
    calls = Calls()
    clients = await faulty_clients(settings, calls)
    app = App(settings, clients=clients)
    task = asyncio.create_task(app.run())
    try:
        while not (app.runners and all(i.has_synced() for i in app.informers.values())):
            await asyncio.sleep(0.1)
        m = manager(app)
        if name == "requeue-renewals":
            m.deps.renewer = None
        offset = window + dt.timedelta(seconds=1) - utcnow()
        m.deps.now = lambda: utcnow() + offset
        start = time.monotonic()
        for runner in app.runners:  # every cluster looks again now (as at the window)
            for key in [f"{ns}/c{j:05d}" for j in range(n)]:
                runner.enqueue(key)
        gaps: dict[str, float] = {}
        last_seen: dict[str, tuple[str, float]] = {}
        jobs_at: dict[str, float] = {}
        deadline = start + args.hold
        while time.monotonic() < deadline:
            now = time.monotonic()
            for job in await kube.items(f"/apis/batch/v1/namespaces/{ns}/jobs"):
                jobs_at.setdefault(job["metadata"]["name"], now - start)
            for lease in await kube.items(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"):
                key = lease["metadata"]["name"]
                spec = lease.get("spec") or {}
                if not spec.get("holderIdentity"):
                    continue
                renew = str(spec.get("renewTime"))
                prev = last_seen.get(key)
                if prev is None or prev[0] != renew:
                    last_seen[key] = (renew, now)
                gaps[key] = max(gaps.get(key, 0.0), now - last_seen[key][1])
            await asyncio.sleep(SAMPLE_SECONDS)
        writes = sum(1 for c in calls.calls if c.verb in WRITES)
        times = sorted(jobs_at.values())
        return {
            "jobs": len(times),
            "first": times[0] if times else float("nan"),
            "median": statistics.median(times) if times else float("nan"),
            "last": times[-1] if times else float("nan"),
            "writes_per_job": writes / max(1, len(times)),
            "max_gap": max(gaps.values(), default=0.0),
            "lapsed": sum(1 for g in gaps.values() if g > args.lock_seconds),
            "leases": len(gaps),
            "qps": settings.client_qps,
            "burst": settings.client_burst,
            "ns": ns,
        }
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=60)
        await clients.close()
        await kube.delete_namespace(ns)


async def _cluster(kube: Kube, ns: str, name: str, addr: str, window: dt.datetime) -> None:
    c = Cluster(kube=kube, namespace=ns, name=name, openbao_addr=addr)
    body = c.body()
    body["spec"]["backup"]["schedule"] = f"{window.minute} {window.hour} * * *"
    await kube.api.create(path=f"{c.base}/openbaoclusters", body=body)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--lock-seconds", type=int, default=15)
    p.add_argument("--hold", type=float, default=40.0, help="seconds measured per variant")
    p.add_argument("--variants", default="renewer,requeue-renewals,capped")
    args = p.parse_args()
    controller_logging.configure(log_format="console", level="error")
    with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        cp = ControlPlane(workdir=Path(tmp) / "cp").start()
        bao = start_openbao(Path(tmp), name="openbao")
        try:
            clients = await connect(Settings(kubeconfig=cp.kubeconfig, leader_elect=False))
            kube = Kube(clients.api)
            try:
                await install_crds(clients)
                results = {}
                for name in args.variants.split(","):
                    results[name] = await variant(
                        name=name, cp=cp, kube=kube, addr=bao.addr, n=args.clusters, args=args
                    )
                ref = results[next(iter(results))]
                raw_ns = await kube.create_namespace()
                raw = await raw_jobs(clients.api, raw_ns, args.clusters, ref["qps"], ref["burst"])
                await kube.delete_namespace(raw_ns)
            finally:
                await clients.close()
        finally:
            bao.stop()
            cp.stop()
    print(
        f"\n{args.clusters} clusters due at once, lock {args.lock_seconds} s, measured "
        f"{args.hold:.0f} s each; raw client: {args.clusters} Jobs in {raw:.1f} s"
    )
    print(
        f"{'variant':<18} {'jobs':>5} {'first s':>8} {'median s':>9} {'last s':>7} "
        f"{'last/raw':>9} {'writes/job':>11} {'max gap s':>10} {'lapsed':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<18} {r['jobs']:>5} {r['first']:>8.1f} {r['median']:>9.1f} "
            f"{r['last']:>7.1f} {r['last'] / raw:>9.2f} {r['writes_per_job']:>11.1f} "
            f"{r['max_gap']:>10.1f} {r['lapsed']:>4}/{r['leases']:<3}"
        )


if __name__ == "__main__":
    asyncio.run(main())
