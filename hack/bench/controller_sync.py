"""Benchmark: how fast does the controller sync and handle events for 1,000 custom resources?

Starts a private local control plane (hack/devenv), installs the CRDs, creates N
OpenBaoCluster objects (no spec.backup: each reconcile is a cache read and one status
write), then runs ``python -m controller`` as a subprocess and measures:

* time from process start to ``/readyz`` (every informer listed and synced);
* time until every object was reconciled once (from the runner's metrics);
* events/s handled: N objects are patched at once, and the time until N more reconciles
  and N MODIFIED watch events were handled gives the rate;
* the controller's resident memory (RSS) after each phase.

Usage: .venv/bin/python hack/bench/controller_sync.py [--objects 1000] [--keep]
Everything listens on 127.0.0.1; the control plane is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack")]

from devenv.controlplane import ControlPlane  # noqa: E402
from devenv.crds import CRD_DIR  # noqa: E402
from devenv.procs import free_port  # noqa: E402

from controller import errors  # noqa: E402
from controller.kube.client import KubeClients, connect  # noqa: E402
from controller.kube.resources import OPENBAO_CLUSTER  # noqa: E402
from controller.settings import Settings  # noqa: E402

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CONTROLLER = "backup-manager"


async def install_crds(c: KubeClients) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                with contextlib.suppress(errors.AlreadyExists):
                    await c.api.create(path=CRD_PATH, body=doc)
                name = doc["metadata"]["name"]
                for _ in range(400):
                    crd = await c.api.get(path=f"{CRD_PATH}/{name}")
                    conds = (crd.get("status") or {}).get("conditions") or []
                    if any(x["type"] == "Established" and x["status"] == "True" for x in conds):
                        break
                    await asyncio.sleep(0.05)


async def bounded(n: int, limit: int, make: object) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with sem:
            await make(i)  # type: ignore[operator]

    await asyncio.gather(*(one(i) for i in range(n)))


async def scrape(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return out
    for line in text.splitlines():
        if not line.startswith("#") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_for(pred: object, *, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await pred():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    n: int = args.objects
    work = Path(tempfile.mkdtemp(prefix="obb-bench-"))
    cp = ControlPlane(workdir=work / "control-plane").start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(kubeconfig=cp.kubeconfig, client_qps=1000, client_burst=1000)
        c = await connect(settings)
        try:
            await install_crds(c)
            ns = "bench"
            await c.api.create(path="/api/v1/namespaces", body={"metadata": {"name": ns}})
            t0 = time.monotonic()

            async def create(i: int) -> None:
                await c.api.create(
                    path=OPENBAO_CLUSTER.path(namespace=ns),
                    body={
                        "apiVersion": OPENBAO_CLUSTER.api_version,
                        "kind": OPENBAO_CLUSTER.kind,
                        "metadata": {"name": f"b{i:05d}"},
                        "spec": {"address": "https://bao.bench.svc:8200"},
                    },
                )

            await bounded(n, 16, create)
            print(f"created {n} OpenBaoCluster objects in {time.monotonic() - t0:.2f}s")

            port = free_port()
            log = (work / "controller.log").open("wb")
            started = time.monotonic()
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
                [
                    sys.executable,
                    "-m",
                    "controller",
                    "--kubeconfig",
                    str(cp.kubeconfig),
                    "--lease-namespace",
                    ns,
                    "--bind-address",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "warning",
                    "--workers",
                    "4",
                    "--client-qps",
                    "500",
                    "--client-burst",
                    "500",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                start_new_session=True,
            )
            pid = proc.pid

            async def is_ready() -> bool:
                return await ready(port)

            t_ready = await wait_for(is_ready, timeout=120, what="/readyz")
            key = (
                f'controller_runtime_reconcile_total{{controller="{CONTROLLER}",result="success"}}'
            )
            mod = f'informer_events_total{{resource="{OPENBAO_CLUSTER.display}",type="MODIFIED"}}'

            async def reconciled(k: int) -> bool:
                return (await scrape(port)).get(key, 0) >= k

            async def first_pass() -> bool:
                return await reconciled(n)

            t_all = await wait_for(first_pass, timeout=300, what="first reconcile of all")
            t_all_total = time.monotonic() - started
            rss1 = psutil.Process(pid).memory_info().rss
            print(f"controller: process start -> /readyz (all informers synced): {t_ready:.2f}s")
            print(f"controller: process start -> {n} objects reconciled: {t_all_total:.2f}s")
            print(f"controller RSS after initial sync: {rss1 / 2**20:.1f} MiB")

            base = (await scrape(port)).get(mod, 0)
            ps = psutil.Process(pid)
            cpu0 = sum(ps.cpu_times()[:2])
            t1 = time.monotonic()

            async def patch(i: int) -> None:
                await c.api.merge_patch(
                    path=OPENBAO_CLUSTER.path(namespace=ns, name=f"b{i:05d}"),
                    body={"metadata": {"annotations": {"bench": "1"}}},
                )

            written: list[float] = []

            async def write_all() -> None:
                await bounded(n, 16, patch)
                written.append(time.monotonic() - t1)

            patching = asyncio.create_task(write_all())

            async def all_events() -> bool:
                m = await scrape(port)
                return m.get(mod, 0) - base >= n and m.get(key, 0) >= 2 * n

            await wait_for(all_events, timeout=300, what="events handled")
            await patching
            elapsed = time.monotonic() - t1
            cpu = sum(ps.cpu_times()[:2]) - cpu0
            rss2 = ps.memory_info().rss
            print(
                f"{n} updates (16 concurrent PATCHes took {written[0]:.2f}s): all watched and "
                f"reconciled after {elapsed:.2f}s = {n / elapsed:.0f} events/s end to end, "
                f"lag behind the writer {elapsed - written[0]:.2f}s"
            )
            print(
                f"controller CPU for those {n} events: {cpu:.2f}s "
                f"(~{n / max(cpu, 1e-9):.0f} events per CPU-second, incl. its /metrics scrapes)"
            )
            print(f"controller RSS after updates: {rss2 / 2**20:.1f} MiB")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            print(f"controller exit code after SIGTERM: {rc}")
            print(f"(reconcile of all {n} finished {t_all:.2f}s after /readyz)")
        finally:
            await c.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        cp.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    asyncio.run(main())
