"""Pieces of ``executor_throughput.py``: a served snapshot, measured children, the servers.

* :class:`FakeOpenBao` serves ``sys/leader``, ``sys/health``, ``lookup-self`` and one snapshot
  file with chunked encoding, the way OpenBao streams a snapshot;
* :func:`run_child` runs one process and returns ITS rusage (``os.wait4`` of that pid): CPU
  seconds (user + system) and peak RSS (``ru_maxrss``), so every figure is per run;
* :class:`Stores` starts moto, fake-gcs-server and Azurite (hack/devenv/storage.py) and
  empties them between uploads so every upload sees the same server state; target
  ``s3tls`` is moto over HTTPS with a certificate of a fresh test CA (:attr:`Stores.ca`),
  the path production takes against AWS; ``azuretls`` is Azurite over HTTPS with a
  certificate of the same CA, the path production takes against Azure.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiohttp import web
from devenv.certs import Pki, make_pki
from devenv.storage import (
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    StorageServer,
    azurite_connection_string,
    create_gcs_bucket,
    start_azurite,
    start_fake_gcs,
    start_moto,
)

ROOT = Path(__file__).resolve().parents[2]
_SERVE_CHUNK = 1 << 20


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
            while chunk := await loop.run_in_executor(None, f.read, _SERVE_CHUNK):
                await resp.write(chunk)
        await resp.write_eof()
        return resp


@dataclass(frozen=True)
class Child:
    code: int
    out: str
    err: str
    peak_rss_mib: float
    cpu_seconds: float
    #: Peak RSS when the child first wrote ``mark`` to stderr (None: no mark asked or seen).
    rss_at_mark_mib: float | None = None


def _peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def run_child(argv: list[str], env: dict[str, str], *, mark: bytes | None = None) -> Child:
    """Run ``argv``; its exit code, output and OWN rusage (``os.wait4`` on its pid: the child
    is started with Popen, not asyncio, whose child watcher would reap it first). With
    ``mark``, also its peak RSS so far (``VmHWM``) read the moment a stderr line holding
    ``mark`` arrives: the executor's "snapshot stream started", the raw client's "first
    byte", so the figure is what was held before the first snapshot byte."""

    def wait() -> Child:
        proc = subprocess.Popen(
            argv, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        chunks: dict[str, list[bytes]] = {"out": [], "err": []}
        at_mark: list[float | None] = []

        def drain(name: str, stream: IO[bytes]) -> None:
            for line in iter(stream.readline, b""):
                if mark is not None and name == "err" and not at_mark and mark in line:
                    at_mark.append(_peak_rss_mib(proc.pid))
                chunks[name].append(line)

        assert proc.stdout is not None
        assert proc.stderr is not None
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
        return Child(
            code=proc.returncode,
            out=b"".join(chunks["out"]).decode(),
            err=b"".join(chunks["err"]).decode(),
            peak_rss_mib=usage.ru_maxrss / 1024,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            rss_at_mark_mib=at_mark[0] if at_mark else None,
        )

    return await asyncio.to_thread(wait)


#: Bench targets served over HTTPS with the run's test CA (:attr:`Stores.ca`).
TLS_TARGETS = ("s3tls", "azuretls")


def provider(target: str) -> str:
    """The executor's provider for a bench target (``s3tls``/``azuretls``: over HTTPS;
    ``gcschunks``: GCS against a raw client that sends the executor's chunks)."""
    return {"s3tls": "s3", "gcschunks": "gcs", "azuretls": "azure"}.get(target, target)


class Stores:
    """One running emulator per target; ``fresh`` gives an empty bucket for the next upload.

    Azurite's in-memory store never gives deleted blobs back (it stops at ~12.6 GB), so it is
    restarted for every upload; moto is reset (``/moto-api/reset``); fake-gcs-server's
    objects are deleted (its memory backend frees them)."""

    def __init__(self, work: Path, targets: list[str]) -> None:
        self.work = work
        self.servers: dict[str, StorageServer] = {}
        self.targets = targets
        self.ca: Path | None = None
        self._pki_made: Pki | None = None

    def start(self) -> None:
        self.stop()
        for t in self.targets:
            self.servers[t] = self._start(t)

    def _start(self, target: str) -> StorageServer:
        """A new server for ``target``; the TLS targets' certificates come from :meth:`_pki`."""
        kind = provider(target)
        if kind == "gcs":
            return start_fake_gcs(self.work)
        start = start_moto if kind == "s3" else start_azurite
        return start(self.work, tls=self._pki() if target in TLS_TARGETS else None)

    def _pki(self) -> Pki:
        """One test CA for every TLS target of the run (:attr:`ca`)."""
        if self._pki_made is None:
            self._pki_made = make_pki(self.work / "pki")
            self.ca = self._pki_made.ca_cert
        return self._pki_made

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stop()
        self.servers.clear()

    def endpoint(self, target: str) -> str:
        return self.servers[target].endpoint

    def fresh(self, target: str, bucket: str) -> None:
        endpoint = self.endpoint(target)
        if provider(target) == "s3":
            ca = str(self.ca) if target in TLS_TARGETS and self.ca else None
            ctx = ssl.create_default_context(cafile=ca) if ca else None
            req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
            urllib.request.urlopen(req, timeout=60, context=ctx).close()
            import boto3

            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=MOTO_REGION,
                aws_access_key_id=MOTO_ACCESS_KEY,
                aws_secret_access_key=MOTO_SECRET_KEY,
                verify=ca,
            ).create_bucket(Bucket=bucket)
        elif provider(target) == "gcs":
            self._empty_gcs(endpoint)
            create_gcs_bucket(endpoint, bucket)
        else:
            self.servers[target].stop()
            self.servers[target] = self._start(target)
            from azure.storage.blob import BlobServiceClient

            svc = BlobServiceClient.from_connection_string(
                azurite_connection_string(self.endpoint(target)),
                connection_verify=str(self.ca) if target in TLS_TARGETS else True,
            )
            svc.create_container(bucket)

    @staticmethod
    def _empty_gcs(endpoint: str) -> None:
        with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=60) as resp:
            buckets = [b["name"] for b in json.loads(resp.read()).get("items", [])]
        for bucket in buckets:
            url = f"{endpoint}/storage/v1/b/{bucket}/o"
            with urllib.request.urlopen(url, timeout=60) as resp:
                names = [o["name"] for o in json.loads(resp.read()).get("items", [])]
            for name in names:
                quoted = urllib.parse.quote(name, safe="")
                req = urllib.request.Request(f"{url}/{quoted}", method="DELETE")
                urllib.request.urlopen(req, timeout=60).close()
            req = urllib.request.Request(f"{endpoint}/storage/v1/b/{bucket}", method="DELETE")
            urllib.request.urlopen(req, timeout=60).close()
