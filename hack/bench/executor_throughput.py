"""Throughput, CPU seconds and peak RSS of ``python -m executor backup`` vs each raw client.

Not a test: a script that prints a table of figures as ratios against the raw client of the
same provider, measured in the same run against the same emulator. For each size it

1. writes a real-format OpenBao snapshot archive (gzip level 0 of a tar with meta.json, a big
   state.bin, SHA256SUMS and a non-empty SHA256SUMS.sealed) to a work directory;
2. serves it from a local aiohttp "OpenBao" (sys/leader, sys/health, token lookup-self, and
   the snapshot streamed with chunked encoding, like the real one);
3. for every run and every target (s3 = moto, gcs = fake-gcs-server, azure = Azurite, all
   from hack/devenv/storage.py, over plain HTTP; s3tls = moto over HTTPS with a test CA, the
   path taken against AWS: parts with a CRC32 and unsigned payloads; azuretls = Azurite over
   HTTPS with a test CA, the path taken against Azure: no per-block MD5; gcschunks = GCS against
   a raw client that sends the executor's chunk size instead of one request), uploads it
   once per side, each time from an empty bucket, as a subprocess: the executor (``python
   -m executor backup``: full verification, checksums, commit), the raw client
   (``executor_raw_upload.py``: the provider's own client, no verification) and, with
   ``--floor``, the floor (below). Each side goes first in turn from run to run, so drift of
   this shared machine falls on all of them;
4. reports medians over the runs: MiB/s of the transfer (first snapshot byte to upload
   complete, measured inside each process), CPU seconds (user + system) and peak RSS of
   that child alone (``os.wait4``); ``x`` is the median over runs of executor / raw within
   the SAME run (throughput: executor MiB/s / raw MiB/s), so load that changes between
   runs on a shared machine cancels out of the ratios.

``--floor`` adds a third side to every run, the *floor*: the raw client plus one SHA-256 pass
over every byte (``executor_raw_upload.py ... sha256``), the least any inline check of the
snapshot against its ``SHA256SUMS`` costs (``state.bin`` is nearly every byte of the
archive). ``floor x`` is floor / raw in the same run: a goal stated as a ratio to the raw
client with "full verification on" is out of reach for ANY verifying uploader when it is
below ``floor x``.

``pre`` is the peak RSS held before the first snapshot byte (read from ``/proc`` when the
child logs the stream's start): the interpreter, the libraries and the storage client, before
any part buffer. The "baseline" line is the peak RSS of a process that only imports what the
executor (or the raw client) imports for that provider.

Usage::

    .venv/bin/python hack/bench/executor_throughput.py [--sizes 256Mi,1Gi]
        [--targets s3,gcs,azure,s3tls,azuretls,gcschunks] [--runs 3] [--part-size 16Mi]
        [--concurrency 4] [--workdir DIR] [--floor]

``--part-size``/``--concurrency`` default to the executor's own defaults for each provider
(``executor.contract.DEFAULT_PART_SIZE``, OBB_CONCURRENCY); the raw client always uses the
same values as the executor (gcloud-aio-storage has no part size: it sends one request).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack"), str(ROOT / "hack" / "bench")]

from devenv.storage import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    azurite_connection_string,
)
from executor_bench_support import (  # noqa: E402
    TLS_TARGETS,
    Child,
    FakeOpenBao,
    Stores,
    provider,
    run_child,
)

from executor import contract  # noqa: E402
from tests.executor.snapshots import write_big  # noqa: E402

MiB = 1 << 20
RAW = str(Path(__file__).with_name("executor_raw_upload.py"))
DONE_EVENTS = ("multipart upload completed", "block blob committed", "resumable upload completed")
IMPORTS = {
    "s3": ("executor.storage.s3", "aiohttp, aiobotocore.session"),
    "s3tls": ("executor.storage.s3", "aiohttp, aiobotocore.session"),
    "gcs": ("executor.storage.gcs", "aiohttp, gcloud.aio.storage"),
    "gcschunks": ("executor.storage.gcs", "aiohttp"),
    "azure": ("executor.storage.azure", "aiohttp, azure.storage.blob.aio"),
    "azuretls": ("executor.storage.azure", "aiohttp, azure.storage.blob.aio"),
}


@dataclass(frozen=True)
class Sample:
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    #: Peak RSS held before the first snapshot byte (see ``run_child``'s ``mark``).
    before_mib: float


def _stamp(line: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(line["timestamp"]).timestamp()


def executor_env(
    target: str, *, endpoint: str, bucket: str, bao: str, work: Path, ca: Path | None = None
) -> dict[str, str]:
    token = work / "token"
    token.write_text("s.bench-token")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),
        "OBB_CLUSTER_NAMESPACE": "bench",
        "OBB_CLUSTER_NAME": "bao",
        "OBB_CLUSTER_UID": "u",
        "OBB_OPENBAO_ADDR": bao,
        "OBB_AUTH_METHOD": "token",
        "OBB_OPENBAO_TOKEN_FILE": str(token),
        "OBB_BUCKET": bucket,
        "OBB_PROVIDER": provider(target),
        "OBB_ENDPOINT": endpoint,
        "OBB_TERMINATION_MESSAGE_PATH": str(work / "termination"),
    }
    if ca is not None:
        env["OBB_STORAGE_CACERT"] = str(ca)
    if provider(target) == "s3":
        env.update(
            OBB_REGION=MOTO_REGION,
            AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
        )
    elif provider(target) == "gcs":
        env.update(OBB_EMULATOR="true")
    else:
        env.update(OBB_AZURE_ACCOUNT=AZURITE_ACCOUNT, AZURE_STORAGE_KEY=AZURITE_KEY)
    return env


def _before(child: Child) -> float:
    if child.rss_at_mark_mib is None:
        raise SystemExit(f"no first-byte mark in the child's output:\n{child.err[-3000:]}")
    return child.rss_at_mark_mib


async def run_executor(env: dict[str, str]) -> Sample:
    child = await run_child(
        [sys.executable, "-m", "executor", "backup"], env, mark=b"snapshot stream started"
    )
    lines = [json.loads(x) for x in child.err.splitlines() if x.startswith("{")]
    start = next((_stamp(x) for x in lines if x["event"] == "snapshot stream started"), None)
    end = next((_stamp(x) for x in lines if x["event"] in DONE_EVENTS), None)
    if child.code != 0 or start is None or end is None:
        raise SystemExit(f"executor failed (exit {child.code}):\n{child.err[-3000:]}")
    return Sample(end - start, child.cpu_seconds, child.peak_rss_mib, _before(child))


async def run_raw(argv: list[str], *, ca: Path | None = None) -> Sample:
    env = dict(os.environ)
    if ca is not None:
        env["AWS_CA_BUNDLE"] = env["BENCH_CA_BUNDLE"] = str(ca)
    child = await run_child([sys.executable, RAW, *argv], env, mark=b"first byte")
    if child.code != 0:
        raise SystemExit(f"raw uploader failed (exit {child.code}):\n{child.err[-3000:]}")
    seconds = json.loads(child.out.strip().splitlines()[-1])["seconds"]
    return Sample(seconds, child.cpu_seconds, child.peak_rss_mib, _before(child))


async def baselines(targets: list[str]) -> dict[str, tuple[float, float]]:
    """Peak RSS (MiB) of importing what each side needs for a provider: (executor, raw)."""
    out: dict[str, tuple[float, float]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for t in targets:
        ours, raw = IMPORTS[t]
        a = await run_child([sys.executable, "-c", f"import executor.__main__, {ours}"], env)
        b = await run_child([sys.executable, "-c", f"import {raw}"], env)
        out[t] = (a.peak_rss_mib, b.peak_rss_mib)
    return out


def in_flight(target: str, concurrency: int) -> int:
    """Parts a provider has in flight: GCS resumable chunks go one at a time."""
    return 1 if provider(target) == "gcs" else concurrency


def table(
    results: dict[tuple[str, str], dict[str, list[Sample]]],
    sizes: dict[str, int],
    part_size: Callable[[str], int],
    concurrency: int,
) -> list[str]:
    floor = any(sides.get("floor") for sides in results.values())
    fx = f" {'floor x':>7}" if floor else ""
    head = (
        f"{'target':6} {'size':>5} | {'MiB/s raw':>9} {'ours':>6} {'x':>5}{fx} | "
        f"{'CPU s raw':>9} {'ours':>6} {'x':>5}{fx} | {'RSS raw':>7} {'ours':>6} {'x':>5} "
        f"{'budget':>6} | {'pre raw':>7} {'ours':>4}"
    )
    rows = [head, "-" * len(head)]
    for (target, size_text), sides in results.items():
        mib = sizes[size_text] / MiB

        def med(side: str, attr: str, sides: dict[str, list[Sample]] = sides) -> float:
            return float(statistics.median(getattr(s, attr) for s in sides[side]))

        def ratio(attr: str, side: str = "ours", sides: dict[str, list[Sample]] = sides) -> float:
            """Median over runs of ``side`` / raw IN THE SAME RUN (robust to load drift)."""
            pairs = zip(sides[side], sides["raw"], strict=True)
            return float(statistics.median(getattr(o, attr) / getattr(r, attr) for o, r in pairs))

        def floor_col(attr: str, invert: bool = False) -> str:
            if not floor:
                return ""
            x = ratio(attr, "floor")
            return f" {1 / x if invert else x:7.2f}"

        tr, te = mib / med("raw", "seconds"), mib / med("ours", "seconds")
        cr, ce = med("raw", "cpu_seconds"), med("ours", "cpu_seconds")
        rr, re_ = med("raw", "peak_rss_mib"), med("ours", "peak_rss_mib")
        budget = 64 + in_flight(target, concurrency) * part_size(target) / MiB
        rows.append(
            f"{target:6} {size_text:>5} | {tr:9.1f} {te:6.1f} {1 / ratio('seconds'):5.2f}"
            f"{floor_col('seconds', invert=True)} | "
            f"{cr:9.2f} {ce:6.2f} {ratio('cpu_seconds'):5.2f}{floor_col('cpu_seconds')} | "
            f"{rr:7.0f} {re_:6.0f} {ratio('peak_rss_mib'):5.2f} {budget:6.0f} | "
            f"{med('raw', 'before_mib'):7.0f} {med('ours', 'before_mib'):4.0f}"
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="256Mi,1Gi")
    parser.add_argument("--targets", default="s3,gcs,azure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--part-size", default=None, help="default: the executor's")
    parser.add_argument("--concurrency", type=int, default=int(contract.CONCURRENCY.default or 4))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--floor", action="store_true", help="also run the raw client + one SHA-256 pass"
    )
    args = parser.parse_args()
    targets = args.targets.split(",")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="obb-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    def part_size_of(target: str) -> int:
        if args.part_size:
            return contract.parse_size(args.part_size)
        return contract.DEFAULT_PART_SIZE[provider(target)]

    sizes = {s: contract.parse_size(s) for s in args.sizes.split(",")}
    results: dict[tuple[str, str], dict[str, list[Sample]]] = {}
    stores = Stores(work, targets)
    started = time.monotonic()
    base = await baselines(targets)
    try:
        for size_text, state in sizes.items():
            stores.start()  # fresh servers per size: none keeps garbage of the last size
            archive = work / f"snapshot-{size_text}.snap"
            t = time.monotonic()
            sha, size = write_big(archive, state_size=state)
            sizes[size_text] = size
            print(
                f"# archive {size_text}: {size} bytes, sha256 {sha[:16]}..., "
                f"written in {time.monotonic() - t:.1f}s",
                flush=True,
            )
            bao = await FakeOpenBao(archive).start()
            try:
                for run in range(args.runs):
                    for target in targets:
                        names = ["raw", "floor", "ours"] if args.floor else ["raw", "ours"]
                        sides = results.setdefault((target, size_text), {n: [] for n in names})
                        bucket = f"bench-{size_text.lower()}-{run}"
                        k = run % len(names)
                        order = names[k:] + names[:k]  # each side first in turn
                        for side in order:
                            stores.fresh(target, bucket)
                            endpoint = stores.endpoint(target)
                            if side == "ours":
                                env = executor_env(
                                    target,
                                    endpoint=endpoint,
                                    bucket=bucket,
                                    bao=bao.url,
                                    work=work,
                                    ca=stores.ca if target in TLS_TARGETS else None,
                                )
                                env.update(
                                    OBB_PART_SIZE=str(part_size_of(target)),
                                    OBB_CONCURRENCY=str(args.concurrency),
                                )
                                sample = await run_executor(env)
                            else:
                                raw_endpoint = (
                                    azurite_connection_string(endpoint)
                                    if provider(target) == "azure"
                                    else endpoint
                                )
                                sample = await run_raw(
                                    [
                                        f"{bao.url}/v1/sys/storage/raft/snapshot",
                                        target,
                                        raw_endpoint,
                                        bucket,
                                        "raw/object.snap",
                                        str(part_size_of(target)),
                                        str(args.concurrency),
                                        "sha256" if side == "floor" else "none",
                                    ],
                                    ca=stores.ca if target in TLS_TARGETS else None,
                                )
                            sides[side].append(sample)
                            print(
                                f"  run {run + 1} {target:5} {size_text:>5} {side:5}: "
                                f"{size / MiB / sample.seconds:6.1f} MiB/s "
                                f"cpu {sample.cpu_seconds:6.2f}s "
                                f"rss {sample.peak_rss_mib:5.0f} MiB "
                                f"load {os.getloadavg()[0]:4.1f}",
                                flush=True,
                            )
            finally:
                await bao.stop()
            archive.unlink()
    finally:
        stores.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n# {dt.date.today()}: {args.runs} interleaved runs, medians; part size "
        + ", ".join(f"{t} {part_size_of(t) // MiB} MiB" for t in targets)
        + f"; concurrency {args.concurrency}; x = executor / raw client; "
        + ("floor x = raw client + one SHA-256 pass / raw client; " if args.floor else "")
        + f"budget = 64 MiB + parts in flight x part size; {time.monotonic() - started:.0f}s; "
        f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for target, (ours, raw) in base.items():
        print(f"# baseline (imports only) {target:5}: executor {ours:.0f} MiB, raw {raw:.0f} MiB")
    for row in table(results, sizes, part_size_of, args.concurrency):
        print(row)


if __name__ == "__main__":
    asyncio.run(main())
