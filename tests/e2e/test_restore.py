"""Restores through the API, end to end (issue 9, part 1).

The real controller process, the executor run by the node agent as each Job's pod, real
OpenBao, and moto / fake-gcs-server / Azurite. The restores are created and awaited with the
commands of docs/restore.md (``kubectl create -f -``, ``kubectl wait --for=jsonpath``), so
the guide's commands are proven too.

To observe ordering without sleeps, OpenBao is served through :class:`GateProxy`: a reverse
proxy that holds the snapshot request of a backup (``GET``) or of a restore (``POST``) until
the test releases it, so a Job "runs" exactly as long as the test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from devenv.controlplane import SA_ISSUER, ControlPlane
from devenv.openbao import OpenBao, start_openbao
from devenv.storage import AZURITE_ACCOUNT, StorageServer, azurite_connection_string
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from tests.e2e.conftest import GROUP, JWT_MOUNT, VERSION, Env, until
from tests.executor.harness import list_keys, read_object, write_object

pytestmark = pytest.mark.integration

SNAPSHOT = "/v1/sys/storage/raft/snapshot"
RESTORES = "openbaorestores"


# -- infrastructure ----------------------------------------------------------------------------


class GateProxy:
    """A reverse proxy to OpenBao on 127.0.0.1, in its own thread (so the test's blocking calls
    never stall it). A request whose (method, path) is held waits, before it reaches OpenBao,
    until :meth:`release`; everything else passes straight through."""

    _HOP = frozenset(
        {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host"}
    )

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gates: dict[tuple[str, str], asyncio.Event] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GateProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def hold(self, method: str, path: str) -> None:
        """From now on, requests at (method, path) wait (in effect when this returns)."""

        async def _hold() -> None:
            self._gates[(method, path)] = asyncio.Event()

        asyncio.run_coroutine_threadsafe(_hold(), self._loop).result(timeout=10)

    def release(self, method: str, path: str) -> None:
        """Let the held requests at (method, path), and all later ones, through."""

        async def _release() -> None:
            gate = self._gates.pop((method, path), None)
            if gate is not None:
                gate.set()

        asyncio.run_coroutine_threadsafe(_release(), self._loop).result(timeout=10)

    def waiting(self, method: str, path: str) -> int:
        """Requests held right now at (method, path)."""
        return self._waiting.get((method, path), 0)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = (request.method, request.path)
        gate = self._gates.get(key)
        if gate is not None:
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                await gate.wait()
            finally:
                self._waiting[key] -= 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as up:
            payload = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in self._HOP}
            return web.Response(status=up.status, body=payload, headers=out_headers)

    def stop(self) -> None:
        async def _stop() -> None:
            for gate in self._gates.values():
                gate.set()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class JobRecorder:
    """Every Job ever created in a namespace (list, then watch from that resourceVersion):
    name -> set of uids, and each uid's creationTimestamp."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.uids: dict[str, set[str]] = {}
        self.created: dict[str, dt.datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def _see(self, job: Any) -> None:
        meta = job.metadata
        self.uids.setdefault(meta.name, set()).add(meta.uid)
        self.created[meta.name] = meta.creation_timestamp

    async def start(self) -> JobRecorder:
        batch = k8s.BatchV1Api(self.api)
        listed = await batch.list_namespaced_job(self.namespace)
        for job in listed.items:
            self._see(job)
        self._task = asyncio.create_task(self._watch(str(listed.metadata.resource_version)))
        return self

    async def _watch(self, rv: str) -> None:
        batch = k8s.BatchV1Api(self.api)
        while True:
            w = watch.Watch()
            async for event in w.stream(
                batch.list_namespaced_job, self.namespace, resource_version=rv, timeout_seconds=50
            ):
                obj = event["object"]
                if event["type"] == "ERROR":
                    listed = await batch.list_namespaced_job(self.namespace)
                    for job in listed.items:
                        self._see(job)
                    rv = str(listed.metadata.resource_version)
                    break
                self._see(obj)
                rv = str(obj.metadata.resource_version)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def counts(self) -> dict[str, int]:
        """Job name -> how many Jobs of that name were ever created."""
        assert self._task is not None and not self._task.done(), "the Job watch stopped"
        return {name: len(uids) for name, uids in self.uids.items()}

    def ever(self, name: str) -> int:
        """How many Jobs of this name were ever created (fails if the watch broke)."""
        assert self._task is not None and not self._task.done(), "the Job watch stopped"
        return len(self.uids.get(name, ()))


async def kubectl(
    cp: ControlPlane, *args: str, stdin: str | None = None, check: bool = True
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(cp.kubectl),
        "--kubeconfig",
        str(cp.kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    code = proc.returncode
    assert code is not None
    if check and code != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {code}: {err.decode()}")
    return code, out.decode(), err.decode()


def restore_yaml(name: str, **spec: Any) -> str:
    """An OpenBaoRestore as docs/restore.md writes it (JSON is YAML)."""
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OpenBaoRestore",
            "metadata": {"name": name},
            "spec": spec,
        },
        indent=2,
    )


async def create_restore(cp: ControlPlane, env: Env, name: str, **spec: Any) -> None:
    """``kubectl -n <ns> create -f - <<'EOF' ... EOF`` (docs/restore.md)."""
    await kubectl(cp, "-n", env.namespace, "create", "-f", "-", stdin=restore_yaml(name, **spec))


async def kubectl_wait(
    cp: ControlPlane, env: Env, name: str, phase: str, *, timeout: int = 150
) -> dict[str, Any]:
    """``kubectl -n <ns> wait openbaorestore/<name> --for=jsonpath='{.status.phase}'=<phase>``
    (docs/restore.md); the restore's object afterwards. A timeout shows the status."""
    code, _, err = await kubectl(
        cp,
        "-n",
        env.namespace,
        "wait",
        f"openbaorestore/{name}",
        f"--for=jsonpath={{.status.phase}}={phase}",
        f"--timeout={timeout}s",
        check=False,
    )
    obj = await env.get(RESTORES, name)
    assert code == 0, f"kubectl wait {name} for {phase} failed: {err}\nstatus: {_status(obj)}"
    assert obj is not None
    return obj


async def wait_restore(env: Env, name: str, phases: set[str], timeout: float = 150) -> Any:
    async def probe() -> dict[str, Any] | None:
        obj = await env.get(RESTORES, name)
        return obj if _status(obj).get("phase") in phases else None

    return await until(probe, timeout=timeout, what=f"restore {name} in {phases}")


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    status: dict[str, Any] = (obj or {}).get("status") or {}
    return status


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in _status(obj).get("conditions") or ():
        if cond["type"] == ctype:
            return dict(cond)
    return None


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def job_names(env: Env) -> set[str]:
    return {j.metadata.name for j in await env.jobs()}


async def stays(
    probe: Callable[[], Awaitable[Any]], *, seconds: float, what: str, interval: float = 0.25
) -> None:
    """``probe`` stays truthy for ``seconds`` (polled); fail at the first falsy answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await probe():
            raise AssertionError(f"{what} no longer holds")
        await asyncio.sleep(interval)


async def settled(
    snapshot: Callable[[], Awaitable[Any]], *, quiet: float = 3.0, timeout: float = 30.0
) -> Any:
    """Poll ``snapshot`` until it returned the same value for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = await snapshot()
    since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = await snapshot()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"did not settle within {timeout}s; last: {last!r}")


async def event_reasons(env: Env, kind: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the events of one object."""
    out = await k8s.CoreV1Api(env.api).list_namespaced_event(env.namespace)
    return [
        (str(e.type), str(e.reason), str(e.message or ""))
        for e in out.items
        if e.involved_object.kind == kind and e.involved_object.name == name
    ]


async def occurrences(env: Env, name: str) -> dict[str, int]:
    """reason -> how often it was emitted on the OpenBaoRestore ``name`` (a repeated event
    is one Event object with a series count)."""
    out = await k8s.CoreV1Api(env.api).list_namespaced_event(env.namespace)
    counts: dict[str, int] = {}
    for e in out.items:
        if e.involved_object.kind == "OpenBaoRestore" and e.involved_object.name == name:
            seen = max(e.count or 1, e.series.count if e.series else 1)
            counts[str(e.reason)] = counts.get(str(e.reason), 0) + seen
    return counts


async def has_event(env: Env, name: str, type_: str, reason: str) -> list[tuple[str, str, str]]:
    """Wait for a ``type_``/``reason`` event on the OpenBaoRestore ``name`` (the controller
    emits it after the status write that ``kubectl wait`` sees); all its events then."""

    async def probe() -> list[tuple[str, str, str]] | None:
        events = await event_reasons(env, "OpenBaoRestore", name)
        return events if any(t == type_ and r == reason for t, r, _ in events) else None

    got: list[tuple[str, str, str]] = await until(
        probe, timeout=30, what=f"{type_} event {reason} on {name}"
    )
    return got


# -- world ----------------------------------------------------------------------------------


def restore_role(env: Env) -> str:
    """A JWT role for the namespace's executor Jobs whose policy may also restore."""
    role = f"restore-{env.namespace}"
    env.openbao.jwt_role(
        mount=JWT_MOUNT,
        role=role,
        subject=f"system:serviceaccount:{env.namespace}:default",
        audience="openbao",
        policy=env.openbao.setup_restore_policy(),
    )
    return role


async def create_cluster(
    env: Env,
    name: str,
    *,
    role: str,
    target: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    body = env.cluster_body(name)
    backup = body["spec"]["backup"]
    backup["auth"]["jwt"]["role"] = role
    if target is not None:
        backup["target"] = target
    if address is not None:
        body["spec"]["address"] = address
    await env.custom.create_namespaced_custom_object(
        GROUP, VERSION, env.namespace, "openbaoclusters", body
    )


async def secret(env: Env, name: str, data: dict[str, str]) -> None:
    await k8s.CoreV1Api(env.api).create_namespaced_secret(
        env.namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=data)
    )


async def storage_target(
    env: Env, provider: str, request: pytest.FixtureRequest
) -> tuple[dict[str, Any], StorageServer, str]:
    """The cluster's target for ``provider``, its credentials Secret created as a Job gets it
    (controller/backup/decide/jobspec.py): S3 keys and Azure connection string by envFrom, the
    GCS credentials file as a Secret volume (``credentials.json``)."""
    if provider == "s3":
        target = env.cluster_body("x")["spec"]["backup"]["target"]
        return target, env.s3, env.bucket
    if provider == "gcs":
        server: StorageServer = request.getfixturevalue("gcs_server")
        bucket: str = request.getfixturevalue("gcs_bucket")
        # fake-gcs-server: the emulator mode sends no credentials; the file is still mounted.
        await secret(
            env,
            "gcs-credentials",
            {"credentials.json": json.dumps({"type": "service_account", "project_id": "dev"})},
        )
        target = {
            "provider": "gcs",
            "endpoint": server.endpoint,
            "bucket": bucket,
            "pathPrefix": "backups",
            "gcs": {"emulator": True},
            "credentialsSecretRef": {"name": "gcs-credentials"},
        }
        return target, server, bucket
    server = request.getfixturevalue("azurite_server")
    container: str = request.getfixturevalue("azure_container")
    await secret(
        env,
        "azure-credentials",
        {"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(server.endpoint)},
    )
    target = {
        "provider": "azure",
        "endpoint": server.endpoint,
        "pathPrefix": "backups",
        "azure": {"storageAccount": AZURITE_ACCOUNT, "container": container},
        "credentialsSecretRef": {"name": "azure-credentials"},
    }
    return target, server, container


async def backup_now(env: Env, cluster: str, value: str) -> dict[str, Any]:
    """Trigger a backup with the annotation; the Succeeded record."""
    before = {b["metadata"]["name"] for b in await env.backups(cluster)}
    await env.trigger(cluster, value)

    async def new_record() -> str | None:
        names = {b["metadata"]["name"] for b in await env.backups(cluster)} - before
        return next(iter(names), None)

    name = await until(new_record, what=f"the record of trigger {value}")
    done = await env.wait_phase(name, {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


@pytest.fixture
def cp(control_plane: ControlPlane) -> ControlPlane:
    return control_plane


@pytest.fixture
async def jobs(env: Env) -> AsyncIterator[JobRecorder]:
    rec = await JobRecorder(env.api, env.namespace).start()
    try:
        yield rec
    finally:
        await rec.stop()


@pytest.fixture
def kv_path(env: Env) -> str:
    return f"restore-e2e/{env.namespace}"


# -- 1. same cluster: back to a backup, and back again -------------------------------------


@pytest.mark.parametrize("provider", ["s3", "gcs", "azure"])
async def test_restore_and_undo(
    env: Env, cp: ControlPlane, kv_path: str, provider: str, request: pytest.FixtureRequest
) -> None:
    target, server, bucket = await storage_target(env, provider, request)
    await create_cluster(env, "bao", role=restore_role(env), target=target)
    env.openbao.kv_put(kv_path, {"value": "v1"})
    record = await backup_now(env, "bao", "before-change")
    env.openbao.kv_put(kv_path, {"value": "v2"})

    # docs/restore.md, 1: create the restore, wait for Succeeded
    await create_restore(cp, env, "back", cluster="bao", backupName=record["metadata"]["name"])
    done = await kubectl_wait(cp, env, "back", "Succeeded")
    assert env.openbao.kv_get(kv_path) == {"value": "v1"}
    status = done["status"]
    assert status["key"] == record["status"]["key"]
    assert status["sha256"] == record["status"]["sha256"]
    assert status["safetySnapshot"] == "back-pre-restore"
    verified = condition(done, "Verified")
    assert verified is not None and verified["status"] == "True", status
    for ctype in ("Validated", "SafetySnapshotTaken", "Restored"):
        got = condition(done, ctype)
        assert got is not None and got["status"] == "True", (ctype, status)

    safety = await env.get("openbaobackups", "back-pre-restore")
    assert safety is not None
    assert safety["status"]["phase"] == "Succeeded", safety["status"]
    assert safety["spec"]["trigger"] == "pre-restore"
    assert safety["spec"]["deletionPolicy"] == "Retain"
    assert safety["status"]["key"] != record["status"]["key"]
    stored = list_keys(provider, endpoint=server.endpoint, bucket=bucket)
    assert {record["status"]["key"], safety["status"]["key"]} <= set(stored), stored

    # "If the result is not what you wanted, restore the safety snapshot the same way"
    # (no safety snapshot of its own: one per provider is enough, and it costs a backup)
    await create_restore(
        cp, env, "undo", cluster="bao", backupName="back-pre-restore", safetySnapshot=False
    )
    await kubectl_wait(cp, env, "undo", "Succeeded")
    assert env.openbao.kv_get(kv_path) == {"value": "v2"}

    _, table, _ = await kubectl(cp, "-n", env.namespace, "get", RESTORES)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["NAME", "CLUSTER", "SOURCE", "PHASE", "SAFETY"], table
    assert lines[1].split()[:5] == [
        "back",
        "bao",
        record["metadata"]["name"],
        "Succeeded",
        "back-pre-restore",
    ], table
    assert lines[2].split()[:4] == ["undo", "bao", "back-pre-restore", "Succeeded"], table


# -- 2. a tampered object is refused before OpenBao is touched -----------------------------


async def test_tampered_snapshot_refused_in_validating(
    env: Env, cp: ControlPlane, kv_path: str, jobs: JobRecorder
) -> None:
    await create_cluster(env, "bao", role=restore_role(env))
    env.openbao.kv_put(kv_path, {"value": "v1"})
    record = await backup_now(env, "bao", "to-tamper")
    env.openbao.kv_put(kv_path, {"value": "v2"})
    key, manifest_key = record["status"]["key"], record["status"]["manifestKey"]
    where = {"endpoint": env.s3.endpoint, "bucket": env.bucket}

    data = bytearray(read_object("s3", key=key, **where))
    data[len(data) // 2] ^= 0x01
    write_object("s3", key=key, data=bytes(data), **where)
    manifest = json.loads(read_object("s3", key=manifest_key, **where))

    async def refused(name: str) -> None:
        await create_restore(cp, env, name, cluster="bao", backupName=record["metadata"]["name"])
        done = await kubectl_wait(cp, env, name, "Failed")
        status = done["status"]
        assert status["failureReason"] == "verification", status
        assert status["validationJob"] == f"{name}-verify"
        assert condition(done, "Validated") is None, status
        assert "safetySnapshot" not in status, status
        assert jobs.ever(f"{name}-verify") == 1
        assert jobs.ever(f"{name}-restore") == 0, jobs.uids
        assert await env.get("openbaobackups", f"{name}-pre-restore") is None
        events = await has_event(env, name, "Warning", "RestoreFailed")
        reasons = [r for _, r, _ in events]
        assert "RestoreValidating" in reasons, reasons
        assert "RestoreValidated" not in reasons, reasons
        assert env.openbao.kv_get(kv_path) == {"value": "v2"}

    # one byte flipped: the manifest's sha256 no longer matches
    await refused("flipped")

    # the manifest rewritten to the tampered object's sha256 and size: the archive's own
    # checksums (gzip CRC, the snapshot's SHA256SUMS) still catch it
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["size"] = len(data)
    write_object("s3", key=manifest_key, data=json.dumps(manifest).encode(), **where)
    await refused("rewritten")
    assert await job_names(env) == {
        f"{record['metadata']['name']}-backup",
        "flipped-verify",
        "rewritten-verify",
    }


# -- 3. the operation lock between restores, backups and deletions -------------------------


@pytest.fixture
def gate(openbao: OpenBao) -> Iterator[GateProxy]:
    proxy = GateProxy(openbao.addr).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_restore_backup_and_delete_wait_for_each_other(
    env: Env, cp: ControlPlane, kv_path: str, jobs: JobRecorder, gate: GateProxy
) -> None:
    await create_cluster(env, "bao", role=restore_role(env), address=gate.url)
    env.openbao.kv_put(kv_path, {"value": "v1"})
    first = await backup_now(env, "bao", "one")
    first_name = first["metadata"]["name"]

    # (a) a restore created while a backup Job runs waits for it
    gate.hold("GET", SNAPSHOT)
    await env.trigger("bao", "two")

    async def running_backup() -> str | None:
        if gate.waiting("GET", SNAPSHOT) < 1:
            return None
        running = [b for b in await env.backups("bao") if _status(b).get("phase") == "Running"]
        return str(running[0]["metadata"]["name"]) if running else None

    second_name = await until(running_backup, what="a backup Job held in its snapshot request")
    await create_restore(
        cp, env, "during-backup", cluster="bao", backupName=first_name, safetySnapshot=False
    )

    async def restore_blocked() -> dict[str, Any] | None:
        cond = condition(await env.get(RESTORES, "during-backup"), "Blocked")
        ok = cond and cond["status"] == "True" and f"backup/{second_name}" in cond["message"]
        return cond if ok else None

    blocked = await until(restore_blocked, what="the restore Blocked by the running backup")
    assert blocked["reason"] == "LockHeld"
    assert jobs.ever("during-backup-restore") == 0
    assert _status(await env.get("openbaobackups", second_name)).get("phase") == "Running"
    gate.release("GET", SNAPSHOT)
    second = await env.wait_phase(second_name, {"Succeeded", "Failed"})
    assert second["status"]["phase"] == "Succeeded", second["status"]
    done = await kubectl_wait(cp, env, "during-backup", "Succeeded")
    assert parse_time(second["status"]["completionTime"]) <= jobs.created["during-backup-restore"]
    assert parse_time(done["status"]["startTime"]) < parse_time(second["status"]["completionTime"])
    assert env.openbao.kv_get(kv_path) == {"value": "v1"}

    # (b) a backup triggered during a restore waits; (c) so does deleting a backup's snapshot
    env.openbao.kv_put(kv_path, {"value": "v2"})
    gate.hold("POST", SNAPSHOT)
    await create_restore(
        cp, env, "hold", cluster="bao", backupName=first_name, safetySnapshot=False
    )

    async def restore_posting() -> bool:
        return gate.waiting("POST", SNAPSHOT) >= 1

    await until(restore_posting, what="the restore Job held in its snapshot upload")
    assert _status(await env.get(RESTORES, "hold")).get("phase") == "Restoring"
    before = {b["metadata"]["name"] for b in await env.backups("bao")}
    await env.trigger("bao", "three")
    await kubectl(cp, "-n", env.namespace, "delete", "openbaobackup", second_name, "--wait=false")

    async def backup_blocked() -> tuple[str, dict[str, Any]] | None:
        for b in await env.backups("bao"):
            if b["metadata"]["name"] in before:
                continue
            cond = condition(b, "Blocked")
            if cond and cond["status"] == "True" and "restore/hold" in cond["message"]:
                return str(b["metadata"]["name"]), cond
        return None

    third_name, third_blocked = await until(
        backup_blocked, what="the triggered backup Blocked by restore/hold"
    )
    assert third_blocked["reason"] == "LockHeld"
    lease = await k8s.CoordinationV1Api(env.api).read_namespaced_lease(
        "bao-openbao-oplock", env.namespace
    )
    assert lease.spec.holder_identity == "restore/hold"

    async def nothing_else_runs() -> bool:
        names = set(jobs.counts())
        deleting = await env.get("openbaobackups", second_name)
        return (
            f"{third_name}-backup" not in names
            and f"{second_name}-delete" not in names
            and deleting is not None
            and gate.waiting("POST", SNAPSHOT) == 1
        )

    # the deletion has no condition to wait for: it must stay un-started while we look
    await stays(nothing_else_runs, seconds=3, what="no backup or delete Job during the restore")
    gate.release("POST", SNAPSHOT)
    held = await kubectl_wait(cp, env, "hold", "Succeeded")
    restored_at = parse_time(held["status"]["completionTime"])
    assert env.openbao.kv_get(kv_path) == {"value": "v1"}
    third = await env.wait_phase(third_name, {"Succeeded", "Failed"})
    assert third["status"]["phase"] == "Succeeded", third["status"]

    async def deleted() -> bool:
        return await env.get("openbaobackups", second_name) is None

    await until(deleted, what=f"{second_name} deleted after the restore")
    assert jobs.created[f"{third_name}-backup"] >= restored_at
    assert jobs.created[f"{second_name}-delete"] >= restored_at
    assert jobs.ever("hold-restore") == 1 and jobs.ever("during-backup-restore") == 1


# -- 4. force: a fresh OpenBao gets another cluster's snapshot -----------------------------


async def test_force_restore_into_fresh_openbao(
    env: Env, cp: ControlPlane, kv_path: str, tmp_path: Path
) -> None:
    role = restore_role(env)
    await create_cluster(env, "bao", role=role)
    env.openbao.kv_put(kv_path, {"value": "v1"})
    record = await backup_now(env, "bao", "for-rebuild")
    key = record["status"]["key"]
    env.openbao.kv_put(kv_path, {"value": "v2"})

    fresh = await asyncio.to_thread(start_openbao, tmp_path, name="fresh")
    try:
        assert cp.pki is not None
        fresh.setup_jwt_auth(
            mount=JWT_MOUNT, public_key_pem=cp.pki.sa_pub.read_text(), issuer=SA_ISSUER
        )
        fresh.jwt_role(
            mount=JWT_MOUNT,
            role=role,
            subject=f"system:serviceaccount:{env.namespace}:default",
            audience="openbao",
            policy=fresh.setup_restore_policy(),
        )
        await create_cluster(env, "rebuilt", role=role, address=fresh.addr)
        # docs/restore.md, 2 and 3: another cluster's snapshot, named by its key
        await create_restore(
            cp,
            env,
            "rebuild",
            cluster="rebuilt",
            key=key,
            force=True,
            allowForeignKey=True,
            safetySnapshot=False,
        )
        done = await kubectl_wait(cp, env, "rebuild", "Succeeded")
        unseal = condition(done, "UnsealRequired")
        assert unseal is not None and unseal["status"] == "True", done["status"]
        assert condition(done, "Verified") is None, done["status"]
        await has_event(env, "rebuild", "Warning", "UnsealRequired")
        assert fresh.health().get("sealed") is True

        # unseal with the key of the cluster the snapshot came from
        fresh.unseal(env.openbao.unseal_key)
        fresh.root_token = env.openbao.root_token
        assert fresh.kv_get(kv_path) == {"value": "v1"}
    finally:
        await asyncio.to_thread(fresh.stop)
    assert env.openbao.kv_get(kv_path) == {"value": "v2"}  # the source cluster untouched


# -- 5. a failed restore stays failed ------------------------------------------------------


async def test_failed_restore_is_never_retried(
    env: Env, cp: ControlPlane, kv_path: str, jobs: JobRecorder
) -> None:
    await create_cluster(env, "bao", role=restore_role(env))
    env.openbao.kv_put(kv_path, {"value": "v1"})
    record = await backup_now(env, "bao", "for-denied")
    env.openbao.kv_put(kv_path, {"value": "v2"})
    # spec.auth: the backup-only role (snapshot read, no update): OpenBao refuses the upload
    await create_restore(
        cp,
        env,
        "denied",
        cluster="bao",
        backupName=record["metadata"]["name"],
        safetySnapshot=False,
        auth={"jwt": {"mount": JWT_MOUNT, "role": env.role, "audience": "openbao"}},
    )
    done = await kubectl_wait(cp, env, "denied", "Failed")
    assert done["status"]["failureReason"] == "auth", done["status"]
    assert "permission denied" in done["status"]["message"], done["status"]

    async def snapshot() -> tuple[Any, ...]:
        obj = await env.get(RESTORES, "denied")
        meta = (obj or {}).get("metadata") or {}
        return (
            meta.get("resourceVersion"),
            _status(obj).get("phase"),
            tuple(sorted(jobs.counts().items())),
            tuple(sorted((await occurrences(env, "denied")).items())),
        )

    _, phase, ever, emitted = await settled(snapshot, quiet=4)
    assert phase == "Failed"
    assert dict(ever).get("denied-restore") == 1, ever
    assert dict(emitted).get("RestoreFailed") == 1, emitted
    assert dict(emitted).get("RestoreStarted") == 1, emitted
    assert env.openbao.kv_get(kv_path) == {"value": "v2"}
    lease = await k8s.CoordinationV1Api(env.api).read_namespaced_lease(
        "bao-openbao-oplock", env.namespace
    )
    assert not lease.spec.holder_identity  # released


# -- 6. bad input --------------------------------------------------------------------------


async def test_bad_sources_fail_with_reason(env: Env, cp: ControlPlane, jobs: JobRecorder) -> None:
    await create_cluster(env, "bao", role=env.role)
    cases = {
        "missing": ({"cluster": "bao", "backupName": "no-such-backup"}, "BackupNotFound"),
        "outside": (
            {"cluster": "bao", "key": f"backups/{env.namespace}/other/20260101T000000Z-x.snap"},
            "KeyOutsidePrefix",
        ),
        "orphan": ({"cluster": "ghost", "backupName": "anything"}, "ClusterNotFound"),
    }
    for name, (spec, _) in cases.items():
        await create_restore(cp, env, name, **spec)
    for name, (_, reason) in cases.items():
        done = await kubectl_wait(cp, env, name, "Failed", timeout=60)
        assert done["status"]["failureReason"] == reason, done["status"]
        events = await has_event(env, name, "Warning", "RestoreFailed")
        assert any(reason in m for t, r, m in events if r == "RestoreFailed"), events
    assert jobs.counts() == {}

    code, _, err = await kubectl(
        cp,
        "-n",
        env.namespace,
        "create",
        "-f",
        "-",
        stdin=restore_yaml("dotdot", cluster="bao", key=f"backups/{env.namespace}/../x.snap"),
        check=False,
    )
    assert code != 0
    assert "key must not contain a '..' path segment" in err, err
    assert await env.get(RESTORES, "dotdot") is None
