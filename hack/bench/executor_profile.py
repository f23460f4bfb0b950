"""Where the executor's CPU goes on one provider path: ``python -m executor backup`` under
cProfile (stdlib). cProfile sees the main thread only: work handed to threads (hashing)
shows as the loop's wait for it, so compare with the child's CPU seconds printed first.

Not a test. Serves a snapshot like ``executor_throughput.py``, runs ONE backup into a fresh
emulator under ``python -m cProfile`` and prints the functions with the most own time
(``tottime``) and the most cumulative time, plus the child's CPU seconds and peak RSS::

    .venv/bin/python hack/bench/executor_profile.py --target s3 --size 256Mi [--top 25]
        [--part-size 16Mi] [--concurrency 4] [--out /tmp/executor.prof] [--env K=V ...]
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack"), str(ROOT / "hack" / "bench")]

from executor_bench_support import FakeOpenBao, Stores, run_child  # noqa: E402
from executor_throughput import executor_env  # noqa: E402

from executor import contract  # noqa: E402
from tests.executor.snapshots import write_big  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--target", default="s3", choices=("s3", "gcs", "azure"))
    parser.add_argument("--size", default="256Mi")
    parser.add_argument("--part-size", default=None)
    parser.add_argument("--concurrency", default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--env", action="append", default=[], help="K=V for the executor")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="obb-profile-"))
    out = args.out or work / "executor.prof"
    stores = Stores(work, [args.target])
    stores.start()
    archive = work / "snapshot.snap"
    write_big(archive, state_size=contract.parse_size(args.size))
    bao = await FakeOpenBao(archive).start()
    try:
        stores.fresh(args.target, "profile")
        env = executor_env(
            args.target,
            endpoint=stores.endpoint(args.target),
            bucket="profile",
            bao=bao.url,
            work=work,
        )
        if args.part_size:
            env["OBB_PART_SIZE"] = args.part_size
        if args.concurrency:
            env["OBB_CONCURRENCY"] = args.concurrency
        env.update(item.split("=", 1) for item in args.env)
        child = await run_child(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "executor", "backup"], env
        )
    finally:
        await bao.stop()
        stores.stop()
        archive.unlink()
    if child.code != 0:
        raise SystemExit(f"executor failed (exit {child.code}):\n{child.err[-3000:]}")
    print(
        f"# {args.target} {args.size}: cpu {child.cpu_seconds:.2f}s, "
        f"rss {child.peak_rss_mib:.0f} MiB"
    )
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    asyncio.run(main())
