"""CPU seconds, peak RSS and throughput of ``python -m executor backup`` under env variants.

Not a test. For choosing defaults (part size, concurrency) and trying tunables: serves one
snapshot like ``executor_throughput.py`` and runs the executor once per variant per run,
variants interleaved (their order rotates every run) so a shared machine's drift falls on
all of them; prints each run and the medians::

    .venv/bin/python hack/bench/executor_variants.py --target s3 --size 256Mi --runs 3 \\
        --variant base: --variant c5:OBB_CONCURRENCY=5 \\
        --variant p32:OBB_PART_SIZE=32Mi,OBB_CONCURRENCY=2

A variant is ``NAME:K=V,K=V`` (``NAME:`` alone: the executor's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack"), str(ROOT / "hack" / "bench")]

from executor_bench_support import FakeOpenBao, Stores  # noqa: E402
from executor_throughput import Sample, executor_env, run_executor  # noqa: E402

from executor import contract  # noqa: E402
from tests.executor.snapshots import write_big  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--target", default="s3", choices=("s3", "gcs", "azure"))
    parser.add_argument("--size", default="256Mi")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME:K=V,K=V")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant or ["default:"]]
    work = Path(tempfile.mkdtemp(prefix="obb-variants-"))
    stores = Stores(work, [args.target])
    stores.start()
    archive = work / "snapshot.snap"
    size = contract.parse_size(args.size)
    write_big(archive, state_size=size)
    bao = await FakeOpenBao(archive).start()
    samples: dict[str, list[Sample]] = {name: [] for name, _ in variants}
    try:
        for run in range(args.runs):
            shift = run % len(variants)
            for name, extra in variants[shift:] + variants[:shift]:
                stores.fresh(args.target, "variants")
                env = executor_env(
                    args.target,
                    endpoint=stores.endpoint(args.target),
                    bucket="variants",
                    bao=bao.url,
                    work=work,
                )
                env.update(extra)
                s = await run_executor(env)
                samples[name].append(s)
                print(
                    f"run {run + 1} {name:>12}: {size / (1 << 20) / s.seconds:7.1f} MiB/s "
                    f"cpu {s.cpu_seconds:5.2f} s rss {s.peak_rss_mib:4.0f} MiB",
                    flush=True,
                )
    finally:
        await bao.stop()
        stores.stop()
        archive.unlink()
    print(f"# medians over {args.runs} runs, {args.target} {args.size}")
    for name, got in samples.items():
        print(
            f"{name:>12}: {size / (1 << 20) / statistics.median(s.seconds for s in got):7.1f} "
            f"MiB/s cpu {statistics.median(s.cpu_seconds for s in got):5.2f} s "
            f"rss {statistics.median(s.peak_rss_mib for s in got):4.0f} MiB"
        )


if __name__ == "__main__":
    asyncio.run(main())
