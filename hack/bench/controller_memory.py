"""Benchmark: the controller's memory per cached object, against the objects' JSON size.

Starts a private local control plane (hack/devenv), installs the CRDs and creates what a
controller of 1,000 clusters caches (issue 13): N OpenBaoClusters with a full backup spec and
status, R succeeded OpenBaoBackups per cluster (status written through the subresource), one
suspended executor Job per cluster built by the controller's own ``jobspec.build_job``, and
one operation-lock Lease per cluster. Then, for each variant of the controller, it runs
``python -m controller`` as a **standby** (another holder owns the leader Lease, so the run
caches everything and writes nothing) and reports:

* time from process start to ``/readyz`` (every informer listed and synced);
* RSS at ``/readyz``, after settling, and the peak (``VmHWM``: the initial list's high-water
  mark), against the same build started with an empty namespace (its baseline);
* bytes per cached object ((settled RSS - baseline) / objects), as a ratio to the compact
  JSON of the objects as served (minus ``managedFields``) and of what the cache keeps (the
  projection), and to a raw client in this process holding the same listed objects as parsed
  ``dict``s (tracemalloc).

Variants: ``before`` (``--baseline REV``: the controller and executor packages of that git
revision, exported with ``git archive``), ``projection-off`` (this tree with
``OPENBAO_BACKUP_CACHE_PROJECTION=off``) and ``after`` (this tree).

Usage: .venv/bin/python hack/bench/controller_memory.py [--clusters 1000] [--records 30]
       [--baseline REV] [--keep]
Everything listens on 127.0.0.1; the control plane is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack")]

from bench.controller_sync import install_crds, ready, wait_for  # noqa: E402
from devenv.controlplane import ControlPlane  # noqa: E402
from devenv.procs import free_port  # noqa: E402

from controller import errors  # noqa: E402
from controller.app import INFORMED  # noqa: E402
from controller.backup.decide import jobspec, names, oplock, records  # noqa: E402
from controller.backup.decide.spec import parse_cluster  # noqa: E402
from controller.cache.projection import projection_for  # noqa: E402
from controller.cache.store import thaw  # noqa: E402
from controller.kube.client import KubeClients, connect  # noqa: E402
from controller.kube.resources import (  # noqa: E402
    JOB,
    LEASE,
    OPENBAO_BACKUP,
    OPENBAO_CLUSTER,
    format_microtime,
)
from controller.settings import Settings  # noqa: E402

NS, EMPTY_NS = "bench", "bench-empty"
LEADER_LEASE = "openbao-backup-controller"
CONCURRENCY = 64
LIST_TIMEOUT = 300.0
"""The bench's own request timeout: a page of 500 records on a loaded 2-core machine."""
SETTLE_SECONDS = 5.0
"""Wait after /readyz before the settled RSS: long enough for the last handler calls and the
list's garbage to go, short against the run."""

CLUSTER_SPEC: dict[str, Any] = {
    "tls": {"caConfigMapRef": {"name": "openbao-ca"}},
    "backup": {
        "schedule": "0 */6 * * *",
        "timeZone": "Europe/Berlin",
        "startingDeadlineSeconds": 3600,
        "target": {
            "provider": "s3",
            "bucket": "openbao-backups",
            "region": "eu-central-1",
            "pathPrefix": "prod",
            "credentialsSecretRef": {"name": "s3-credentials"},
        },
        "auth": {"jwt": {"role": "backup", "audience": "openbao"}},
        "retention": {"maxCount": 28, "maxAge": "30d"},
    },
}


def cluster_status(name: str, last: str) -> dict[str, Any]:
    at = "2026-12-06T12:01:02Z"
    return {
        "observedGeneration": 1,
        "backup": {
            "lastScheduleTime": "2026-12-06T12:00:00Z",
            "lastSuccessfulBackup": last,
            "lastSuccessTime": at,
            "lastAttemptRecord": last,
            "consecutiveFailures": 0,
        },
        "conditions": [
            {
                "type": t,
                "status": "True",
                "observedGeneration": 1,
                "lastTransitionTime": at,
                "reason": r,
                "message": m,
            }
            for t, r, m in (
                ("ConfigValid", "Valid", "the backup spec is valid"),
                ("BackupHealthy", "Succeeded", f"last backup {last} succeeded"),
            )
        ],
    }


def record_status(cluster: str, name: str, i: int) -> dict[str, Any]:
    key = f"prod/{NS}/{cluster}/{name}"
    return {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "key": f"{key}.snap.gz",
        "manifestKey": f"{key}.manifest.json",
        "size": 104_857_600 + i * 4096,
        "sha256": f"{hash((cluster, name)) & (2**256 - 1):064x}",
        "scheduledTime": "2026-12-06T12:00:00Z",
        "startTime": "2026-12-06T12:00:01Z",
        "completionTime": f"2026-12-06T12:01:{i % 60:02d}Z",
        "jobName": names.job_name(record=name, purpose=names.JobPurpose.BACKUP),
        "openbaoVersion": "2.1.0",
        "raftIndex": 10_000 + i,
        "raftTerm": 3,
        "durationSeconds": 61.5,
        "accounted": True,
        "target": CLUSTER_SPEC["backup"]["target"],
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "observedGeneration": 1,
                "lastTransitionTime": f"2026-12-06T12:01:{i % 60:02d}Z",
                "reason": "Verified",
                "message": "snapshot uploaded, checksums verified",
            }
        ],
    }


async def populate(c: KubeClients, *, clusters: int, per_cluster: int) -> None:
    api = c.api
    t0 = time.monotonic()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def limited(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        async with sem:
            return await call

    async def one_record(cluster: str, i: int) -> dict[str, Any]:
        rec_name = f"{cluster}-2026{i:08d}"
        raw = records.new_record(namespace=NS, cluster=cluster, name=rec_name, trigger="schedule")
        record = await limited(api.create(path=OPENBAO_BACKUP.path(namespace=NS), body=raw))
        await limited(
            api.merge_patch(
                path=OPENBAO_BACKUP.path(namespace=NS, name=rec_name, subresource="status"),
                body={"status": record_status(cluster, rec_name, i)},
            )
        )
        return record

    async def one_cluster(n: int) -> None:
        name = f"c{n:05d}"
        body = {
            "apiVersion": OPENBAO_CLUSTER.api_version,
            "kind": OPENBAO_CLUSTER.kind,
            "metadata": {"name": name, "namespace": NS},
            "spec": CLUSTER_SPEC,
        }
        cluster = await limited(api.create(path=OPENBAO_CLUSTER.path(namespace=NS), body=body))
        made = await asyncio.gather(*(one_record(name, i) for i in range(per_cluster)))
        record = made[-1]
        last = str(record["metadata"]["name"])
        await limited(
            api.merge_patch(
                path=OPENBAO_CLUSTER.path(namespace=NS, name=name, subresource="status"),
                body={"status": cluster_status(name, last)},
            )
        )
        job = jobspec.build_job(
            cluster=parse_cluster(cluster),
            record=record,
            job_name=names.job_name(record=last, purpose=names.JobPurpose.BACKUP),
            purpose="backup",
            image="ghcr.io/openbao/openbao-backup:0.1.0",
            ttl_seconds_after_finished=3600,
        )
        job["spec"]["suspend"] = True  # no pods: this control plane has no node
        await limited(api.create(path=JOB.path(namespace=NS), body=job))
        now = format_microtime(dt.datetime.now(dt.UTC))
        lease_call = api.create(
            path=LEASE.path(namespace=NS),
            body={
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {
                    "name": names.lease_name(cluster=name),
                    "labels": oplock.lease_labels(cluster=name),
                },
                "spec": {
                    "holderIdentity": f"backup/{last}",
                    "leaseDurationSeconds": 60,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            },
        )
        await limited(lease_call)

    await asyncio.gather(*(one_cluster(n) for n in range(clusters)))
    print(
        f"created {clusters} clusters, {clusters * per_cluster} records, {clusters} Jobs and "
        f"{clusters} Leases in {time.monotonic() - t0:.0f}s"
    )


async def list_all(c: KubeClients, path: str, query: list[tuple[str, str]]) -> list[Any]:
    """Every item, in pages of 500; retried while the resource's storage is initialising."""
    items: list[Any] = []
    cont = ""
    for _ in range(10_000):
        paged = [*query, ("limit", "500"), *([("continue", cont)] if cont else [])]
        try:
            page = await c.api.request(method="GET", path=path, query=paged)
        except errors.TooManyRequests:
            await asyncio.sleep(0.2)
            continue
        items.extend(page.get("items") or ())
        cont = str((page.get("metadata") or {}).get("continue") or "")
        if not cont:
            return items
    raise SystemExit(f"bench: listing {path} did not finish")


@dataclass
class Sizes:
    objects: int = 0
    served: int = 0  # compact JSON as served, minus managedFields
    projected: int = 0  # compact JSON of what the cache keeps
    raw_client: int = 0  # tracemalloc bytes of the same objects held as parsed dicts


def compact(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


async def measure_sizes(c: KubeClients) -> Sizes:
    sizes = Sizes()
    held: list[Any] = []
    gc.collect()
    tracemalloc.start()
    for resource, selector in INFORMED:
        query = [("labelSelector", selector)] if selector else []
        listing = await list_all(c, resource.path(), query)
        projection = projection_for(resource)
        for item in listing:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
            item["metadata"].pop("managedFields", None)
            sizes.objects += 1
            sizes.served += compact(item)
            sizes.projected += compact(thaw(projection.apply(item)))
        held.extend(listing)
        del listing
    gc.collect()
    sizes.raw_client = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return sizes


@dataclass
class Run:
    ready_s: float
    rss_ready: int
    rss_settled: int
    peak: int


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_controller(
    *, cp: ControlPlane, pythonpath: Path, env: dict[str, str], namespaces: str, log: Path
) -> Run:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "controller",
        "--kubeconfig",
        str(cp.kubeconfig),
        "--lease-namespace",
        NS,
        "--lease-duration",
        "3600",
        "--renew-deadline",
        "3000",
        "--retry-period",
        "10",
        "--bind-address",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    if namespaces:
        args += ["--namespace", namespaces]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - one child, polled below
            args,
            cwd=pythonpath,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "PYTHONPATH": str(pythonpath)},
            start_new_session=True,
        )
    try:
        ps = psutil.Process(proc.pid)

        async def is_ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"bench: the controller exited {proc.returncode}; see {log}")
            return await ready(port)

        ready_s = await wait_for(is_ready, timeout=600, what="/readyz")
        rss_ready = ps.memory_info().rss
        await asyncio.sleep(SETTLE_SECONDS)
        return Run(
            ready_s=ready_s,
            rss_ready=rss_ready,
            rss_settled=ps.memory_info().rss,
            peak=peak_rss(proc.pid),
        )
    finally:
        stop(proc, timeout=30)


def stop(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM the controller, wait ``timeout`` s for its drain, then SIGKILL."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def export_revision(rev: str, dest: Path) -> Path:
    """The controller and executor packages of ``rev`` in ``dest`` (git archive | tar)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "controller", "executor"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


async def leader_held_elsewhere(c: KubeClients) -> None:
    now = format_microtime(dt.datetime.now(dt.UTC))
    await c.api.create(
        path=LEASE.path(namespace=NS),
        body={
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {"name": LEADER_LEASE},
            "spec": {
                "holderIdentity": "bench-other-replica",
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
            },
        },
    )


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--records", type=int, default=30, help="OpenBaoBackups per cluster")
    parser.add_argument("--baseline", default="", help="git revision to run as 'before'")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--reuse", type=Path, help="a work directory kept by --keep: its objects, no creation"
    )
    args = parser.parse_args()
    work = args.reuse or Path(tempfile.mkdtemp(prefix="obb-membench-"))
    cp = ControlPlane(workdir=work / "control-plane").start()
    try:
        c = await connect(
            Settings(
                kubeconfig=cp.kubeconfig,
                client_qps=5000,
                client_burst=5000,
                request_timeout=LIST_TIMEOUT,
            ),
        )
        try:
            if args.reuse is None:
                await install_crds(c)
                for ns in (NS, EMPTY_NS):
                    await c.api.create(path="/api/v1/namespaces", body={"metadata": {"name": ns}})
                await leader_held_elsewhere(c)
                await populate(c, clusters=args.clusters, per_cluster=args.records)
            saved = work / "sizes.json"
            if args.reuse is not None and saved.exists():  # the same objects: measured once
                sizes = Sizes(**json.loads(saved.read_text()))
            else:
                sizes = await measure_sizes(c)
                saved.write_text(json.dumps(dataclasses.asdict(sizes)))
        finally:
            await c.close()
        n = sizes.objects
        print(
            f"cached objects: {n}; compact JSON per object: {sizes.served / n:.0f} B as served "
            f"(minus managedFields), {sizes.projected / n:.0f} B projected; a raw client "
            f"holding them as parsed dicts: {sizes.raw_client / n:.0f} B per object"
        )
        variants: list[tuple[str, Path, dict[str, str]]] = []
        if args.baseline:
            variants.append(("before", export_revision(args.baseline, work / "before"), {}))
        variants.append(("projection-off", ROOT, {"OPENBAO_BACKUP_CACHE_PROJECTION": "off"}))
        variants.append(("after", ROOT, {}))
        rows = []
        for label, path, env in variants:
            log = work / f"controller-{label}.log"
            empty = await run_controller(
                cp=cp, pythonpath=path, env=env, namespaces=EMPTY_NS, log=log
            )
            full = await run_controller(cp=cp, pythonpath=path, env=env, namespaces="", log=log)
            per = (full.rss_settled - empty.rss_settled) / n
            rows.append((label, empty, full, per))
        print()
        header = (
            "variant          readyz_s  base_MiB  ready_MiB  settled_MiB  peak_MiB  "
            "B/obj  x_served_json  x_projected_json  x_raw_client"
        )
        print(header)
        for label, empty, full, per in rows:
            print(
                f"{label:<16} {full.ready_s:>8.1f}  {mib(empty.rss_settled):>8}  "
                f"{mib(full.rss_ready):>9}  {mib(full.rss_settled):>11}  {mib(full.peak):>8}  "
                f"{per:>5.0f}  {per / (sizes.served / n):>13.2f}  "
                f"{per / (sizes.projected / n):>16.2f}  {per / (sizes.raw_client / n):>12.2f}"
            )
    finally:
        cp.stop()
        if args.keep or args.reuse:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
