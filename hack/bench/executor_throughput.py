"""Throughput and peak memory of ``python -m executor backup`` vs a raw aiobotocore upload.

Not a test: a script that prints a table. For each size it

1. writes a real-format OpenBao snapshot archive (gzip level 0 of a tar with meta.json, a big
   state.bin, SHA256SUMS and a non-empty SHA256SUMS.sealed) to a work directory;
2. serves it from a local aiohttp "OpenBao" (sys/leader, sys/health, token lookup-self, and
   the snapshot streamed with chunked encoding, like the real one);
3. runs, as subprocesses against the same moto server (and optionally Azurite):
   * the executor (``python -m executor backup``: verify + hash + multipart with SHA-256 parts),
   * a raw uploader: aiohttp GET of the same stream -> aiobotocore multipart upload (or Azure
     stage_block/commit) with the same part size and concurrency, no verification;
4. reports MB/s of the transfer (first snapshot byte to upload complete, measured inside each
   process) and the peak RSS of each process (``os.wait4`` rusage of that child only).

Usage::

    .venv/bin/python hack/bench/executor_throughput.py [--sizes 256Mi,2Gi] [--targets s3,azure]
        [--part-size 16Mi] [--concurrency 4] [--workdir DIR] [--repeat 1]

moto holds 2-4x an object in memory when a multipart upload completes (it is reset after
every run); Azurite's in-memory store caps at ~12.6 GB and does not reclaim deleted blobs, so
moto is restarted for each size and Azurite for each run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "hack")]

from aiohttp import web  # noqa: E402
from devenv.storage import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    StorageServer,
    azurite_connection_string,
    start_azurite,
    start_moto,
)

from executor.contract import parse_size  # noqa: E402
from tests.executor.snapshots import write_big  # noqa: E402

RAW_UPLOADER = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, target, endpoint, bucket, key, part_size, concurrency):
    sem = asyncio.Semaphore(concurrency)
    tasks = []
    failed = []

    async def run(coro):
        try:
            return await coro
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            sem.release()

    async with aiohttp.ClientSession(auto_decompress=False) as http:
        if target == "s3":
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
            cfg = AioConfig(s3={"addressing_style": "path"},
                            request_checksum_calculation="when_required",
                            response_checksum_validation="when_required",
                            max_pool_connections=concurrency + 4)
            cm = get_session().create_client(
                "s3", endpoint_url=endpoint, region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing", config=cfg)
            client = await cm.__aenter__()
            upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]

            async def put(n, data):
                r = await client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                             PartNumber=n, Body=data)
                return {"PartNumber": n, "ETag": r["ETag"]}

            async def finish(parts):
                await client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
                await cm.__aexit__(None, None, None)
        else:
            from azure.storage.blob.aio import BlobServiceClient
            svc = BlobServiceClient.from_connection_string(endpoint)
            blob = svc.get_blob_client(bucket, key)

            async def put(n, data):
                bid = f"{n:08d}"
                await blob.stage_block(bid, data, length=len(data))
                return bid

            async def finish(ids):
                await blob.commit_block_list(sorted(ids))
                await svc.close()

        t0 = None
        buf = bytearray()
        n = 0
        async with http.get(url) as resp:
            async for chunk in resp.content.iter_chunked(1 << 20):
                if t0 is None:
                    t0 = time.monotonic()
                buf += chunk
                while len(buf) >= part_size:
                    part = bytes(buf[:part_size]); del buf[:part_size]
                    n += 1
                    await sem.acquire()
                    tasks.append(asyncio.create_task(run(put(n, part))))
        if buf:
            n += 1
            await sem.acquire()
            tasks.append(asyncio.create_task(run(put(n, bytes(buf)))))
        results = await asyncio.gather(*tasks)
        await finish(results)
        print(json.dumps({"seconds": time.monotonic() - t0}))

asyncio.run(main(*sys.argv[1:6], int(sys.argv[6]), int(sys.argv[7])))
"""


@dataclass
class Result:
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float


class FakeOpenBao:
    """Serves sys/leader, sys/health, lookup-self and the snapshot file (chunked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeOpenBao:
        app = web.Application()
        app.router.add_get("/v1/sys/leader", self.leader)
        app.router.add_get("/v1/sys/health", self.health)
        app.router.add_get("/v1/auth/token/lookup-self", self.lookup)
        app.router.add_get("/v1/sys/storage/raft/snapshot", self.snapshot)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{int(self.runner.addresses[0][1])}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def leader(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"ha_enabled": True, "is_self": True, "leader_address": self.url, "active_time": "t0"}
        )

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"initialized": True, "sealed": False, "standby": False, "version": "bench"}
        )

    async def lookup(self, _: web.Request) -> web.Response:
        return web.json_response({"data": {}})

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/gzip"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        with self.path.open("rb") as f:
            while True:
                chunk = await loop.run_in_executor(None, f.read, 1 << 20)
                if not chunk:
                    break
                await resp.write(chunk)
        await resp.write_eof()
        return resp


async def run_child(argv: list[str], env: dict[str, str]) -> tuple[int, str, str, float, float]:
    """Run a child; (exit code, stdout, stderr, peak RSS MiB, CPU seconds) of that child.

    ``os.wait4`` gives the rusage of exactly that child, so it is started with Popen (an
    asyncio child watcher would reap it first) and waited for in a thread.
    """

    def wait() -> tuple[int, str, str, float, float]:
        proc = subprocess.Popen(
            argv, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        # Drain pipes in threads so the child never blocks on a full pipe.
        import threading

        chunks: dict[str, list[bytes]] = {"out": [], "err": []}

        def drain(name: str, stream: Any) -> None:
            for line in iter(stream.readline, b""):
                chunks[name].append(line)

        threads = [
            threading.Thread(target=drain, args=("out", proc.stdout)),
            threading.Thread(target=drain, args=("err", proc.stderr)),
        ]
        for t in threads:
            t.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        for t in threads:
            t.join()
        out, err = b"".join(chunks["out"]), b"".join(chunks["err"])
        return (
            proc.returncode,
            out.decode(),
            err.decode(),
            usage.ru_maxrss / 1024,
            usage.ru_utime + usage.ru_stime,
        )

    return await asyncio.to_thread(wait)


def _stamp(line: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(line["timestamp"]).timestamp()


async def run_executor(
    target: str,
    bao: FakeOpenBao,
    storage: StorageServer,
    bucket: str,
    part_size: int,
    concurrency: int,
    work: Path,
) -> Result:
    token = work / "token"
    token.write_text("s.bench-token")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),
        "OBB_CLUSTER_NAMESPACE": "bench",
        "OBB_CLUSTER_NAME": "bao",
        "OBB_CLUSTER_UID": "u",
        "OBB_OPENBAO_ADDR": bao.url,
        "OBB_AUTH_METHOD": "token",
        "OBB_OPENBAO_TOKEN_FILE": str(token),
        "OBB_BUCKET": bucket,
        "OBB_PART_SIZE": str(part_size),
        "OBB_CONCURRENCY": str(concurrency),
        "OBB_TERMINATION_MESSAGE_PATH": str(work / "termination"),
    }
    if target == "s3":
        env.update(
            OBB_PROVIDER="s3",
            OBB_ENDPOINT=storage.endpoint,
            OBB_REGION=MOTO_REGION,
            AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
        )
    else:
        env.update(
            OBB_PROVIDER="azure",
            OBB_ENDPOINT=storage.endpoint,
            OBB_AZURE_ACCOUNT=AZURITE_ACCOUNT,
            AZURE_STORAGE_KEY=AZURITE_KEY,
        )
    code, _, err, rss, cpu = await run_child([sys.executable, "-m", "executor", "backup"], env)
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    start = next((_stamp(x) for x in lines if x["event"] == "snapshot stream started"), None)
    end = next(
        (
            _stamp(x)
            for x in lines
            if x["event"] in ("multipart upload completed", "block blob committed")
        ),
        None,
    )
    if code != 0 or start is None or end is None:
        raise SystemExit(f"executor failed (exit {code}):\n{err[-3000:]}")
    return Result(seconds=end - start, peak_rss_mib=rss, cpu_seconds=cpu)


async def run_raw(
    target: str,
    bao: FakeOpenBao,
    storage: StorageServer,
    bucket: str,
    part_size: int,
    concurrency: int,
) -> Result:
    endpoint = storage.endpoint if target == "s3" else azurite_connection_string(storage.endpoint)
    argv = [
        sys.executable,
        "-c",
        RAW_UPLOADER,
        f"{bao.url}/v1/sys/storage/raft/snapshot",
        target,
        endpoint,
        bucket,
        "raw/object.snap",
        str(part_size),
        str(concurrency),
    ]
    code, out, err, rss, cpu = await run_child(argv, dict(os.environ))
    if code != 0:
        raise SystemExit(f"raw uploader failed (exit {code}):\n{err[-3000:]}")
    return Result(
        seconds=json.loads(out.strip().splitlines()[-1])["seconds"],
        peak_rss_mib=rss,
        cpu_seconds=cpu,
    )


def reset(target: str, storage: StorageServer, bucket: str) -> None:
    if target == "s3":
        req = urllib.request.Request(f"{storage.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=60).close()
        import boto3

        boto3.client(
            "s3",
            endpoint_url=storage.endpoint,
            region_name=MOTO_REGION,
            aws_access_key_id=MOTO_ACCESS_KEY,
            aws_secret_access_key=MOTO_SECRET_KEY,
        ).create_bucket(Bucket=bucket)
    else:
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient.from_connection_string(azurite_connection_string(storage.endpoint))
        for old in svc.list_containers():  # free Azurite's memory
            svc.delete_container(old.name)
        svc.create_container(bucket)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256Mi,2Gi")
    parser.add_argument("--targets", default="s3")
    parser.add_argument("--part-size", default="16Mi")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="obb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    part_size = parse_size(args.part_size)
    rows: list[str] = []
    servers: dict[str, StorageServer] = {}
    try:
        for size_text in args.sizes.split(","):
            # Fresh servers per size: Azurite's in-memory store never gives deleted blobs
            # back (it stops at ~12.6 GB), moto keeps garbage after a reset.
            for srv in servers.values():
                srv.stop()
            servers = {
                t: (start_moto(work) if t == "s3" else start_azurite(work))
                for t in args.targets.split(",")
            }
            state = parse_size(size_text)
            archive = work / f"snapshot-{size_text}.snap"
            t = time.monotonic()
            sha, size = write_big(archive, state_size=state)
            print(
                f"# archive {size_text}: {size} bytes, sha256 {sha[:16]}..., "
                f"written in {time.monotonic() - t:.1f}s",
                flush=True,
            )
            bao = await FakeOpenBao(archive).start()
            try:
                for target, storage in servers.items():
                    for run in range(args.repeat):
                        if target == "azure" and run > 0:  # Azurite never frees its store
                            storage.stop()
                            storage = servers[target] = start_azurite(work)
                        bucket = f"bench-{size_text.lower()}-{run}"
                        reset(target, storage, bucket)
                        raw = await run_raw(
                            target, bao, storage, bucket, part_size, args.concurrency
                        )
                        reset(target, storage, bucket)
                        ex = await run_executor(
                            target, bao, storage, bucket, part_size, args.concurrency, work
                        )
                        reset(target, storage, bucket)
                        mb = size / 1e6
                        row = (
                            f"{target:5} {size_text:>6} | raw {mb / raw.seconds:6.1f} MB/s "
                            f"rss {raw.peak_rss_mib:4.0f} MiB cpu {raw.cpu_seconds:5.1f}s "
                            f"| executor {mb / ex.seconds:6.1f} MB/s rss "
                            f"{ex.peak_rss_mib:4.0f} MiB cpu {ex.cpu_seconds:5.1f}s "
                            f"| ratio {raw.seconds / ex.seconds:4.2f}x"
                        )
                        print(row, flush=True)
                        rows.append(row)
            finally:
                await bao.stop()
            archive.unlink()
    finally:
        for srv in servers.values():
            srv.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n# part size {args.part_size}, concurrency {args.concurrency}; "
        "MB/s = archive bytes / (first byte .. upload complete); rss = peak of the child"
    )
    for row in rows:
        print(row)


if __name__ == "__main__":
    asyncio.run(main())
