"""``python -m executor drill``: a backup of the session OpenBao restored into a scratch OpenBao
started by the real ``SERVER_SCRIPT`` (``sh``, a subprocess), unsealed with the live cluster's
keys, its freshness marker read back. Real OpenBao and moto; every process stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from devenv.openbao import OpenBao, bao_binary
from devenv.procs import Server, free_port
from devenv.storage import StorageServer

from executor.contract import load_config, parse_unseal_keys
from executor.drill import SERVER_SCRIPT
from executor.errors import ConfigurationError
from executor.layout import Manifest
from tests.executor.harness import (
    ROOT,
    Run,
    cluster_env,
    read_object,
    run_executor,
    storage_env,
    token_env,
    write_object,
)
from tests.executor.test_marker import backup_with_marker, kv_mount, stored_manifest

VERIFICATION, CONFIGURATION = 15, 10


@dataclass
class Scratch:
    """The drill pod's OpenBao container: SERVER_SCRIPT under ``sh``."""

    server: Server
    addr: str
    done_file: Path

    def exit_code(self, timeout: float = 30) -> int:
        assert self.server.proc is not None
        return self.server.proc.wait(timeout=timeout)

    def initialized(self) -> bool:
        with urllib.request.urlopen(f"{self.addr}/v1/sys/init", timeout=10) as resp:
            return bool(json.loads(resp.read())["initialized"])


@pytest.fixture
async def scratch(tmp_path: Path) -> AsyncIterator[Callable[[], Scratch]]:
    started: list[Scratch] = []

    def start() -> Scratch:
        port = free_port()
        home = tmp_path / f"drill-{uuid.uuid4().hex[:6]}"
        (home / "shared").mkdir(parents=True)
        done = home / "shared" / "done"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(
            {
                "PATH": f"{bao_binary().parent}:{env.get('PATH', '/usr/bin:/bin')}",
                "DRILL_DIR": str(home / "data"),
                "DRILL_PORT": str(port),
                "DRILL_DONE_FILE": str(done),
            }
        )
        srv = Server(
            "drill-server", ["sh", "-c", SERVER_SCRIPT], home / "server.log", env=env
        ).start()
        s = Scratch(server=srv, addr=f"http://127.0.0.1:{port}", done_file=done)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.server.stop()


def keys_file(tmp: Path, content: str) -> Path:
    path = tmp / f"unseal-{uuid.uuid4().hex[:6]}"
    path.write_text(content)
    return path


async def drill(
    scratch: Scratch,
    openbao: OpenBao,
    s3_server: StorageServer,
    bucket: str,
    tmp: Path,
    *,
    key: str,
    unseal: Path | None,
    done_file: Path | None = None,
) -> Run:
    env = {
        **cluster_env(),
        # The login to the RESTORED copy: the live cluster's root token is valid there.
        **token_env(scratch.addr, openbao.root_token, tmp),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=bucket),
        "OBB_DRILL_KEY": key,
        "OBB_DRILL_ADDR": scratch.addr,
        "OBB_DRILL_DONE_FILE": str(done_file or scratch.done_file),
    }
    del env["OBB_OPENBAO_ADDR"]
    if unseal is not None:
        env["OBB_UNSEAL_KEYS_FILE"] = str(unseal)
    return await run_executor("drill", env, tmp=tmp)


async def marked_backup(
    openbao: OpenBao,
    s3_server: StorageServer,
    bucket: str,
    tmp: Path,
    *,
    name: str,
    path: str | None = None,
) -> tuple[Run, Manifest]:
    path = path or f"{kv_mount(openbao, version=2)}/data/marker"
    run = await backup_with_marker(openbao, s3_server, bucket, tmp, path=path, name=name)
    assert run.code == 0, run.stderr
    return run, stored_manifest(s3_server, bucket, run)


@pytest.mark.integration
async def test_drill_restores_unseals_and_matches_the_marker(
    openbao: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch: Callable[[], Scratch],
) -> None:
    backup, manifest = await marked_backup(openbao, s3_server, s3_bucket, tmp_path, name="a")
    assert backup.report.key is not None
    assert manifest.marker is not None
    server = scratch()
    run = await drill(
        server,
        openbao,
        s3_server,
        s3_bucket,
        tmp_path,
        key=backup.report.key,
        unseal=keys_file(tmp_path, openbao.unseal_key + "\n"),
    )
    assert run.code == 0, run.stderr
    r = run.report
    assert (r.mode, r.outcome, r.key, r.sha256, r.size, r.raft_index) == (
        "drill",
        "succeeded",
        backup.report.key,
        manifest.sha256,
        manifest.size,
        manifest.raftIndex,
    )
    assert r.marker == manifest.marker
    assert r.drill is not None
    assert (r.drill.unsealed, r.drill.marker_checked, r.drill.marker_matched, r.drill.partial) == (
        True,
        True,
        True,
        False,
    )
    assert openbao.unseal_key not in run.stderr + run.raw_report
    # The executor created the done file; the server's script stopped bao and exited 0.
    assert server.done_file.exists()
    assert server.exit_code() == 0


@pytest.mark.integration
async def test_drill_detects_an_object_whose_data_is_not_its_manifests(
    openbao: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch: Callable[[], Scratch],
) -> None:
    """Backup A (marker a), then backup B (marker b). A's object is replaced by B's valid
    snapshot and A's manifest rewritten to B's sha256/size/Raft facts, keeping A's marker:
    every byte check passes, only the data read back tells."""
    path = f"{kv_mount(openbao, version=2)}/data/marker"  # ONE marker path for both
    a, manifest_a = await marked_backup(
        openbao, s3_server, s3_bucket, tmp_path, name="a", path=path
    )
    b, manifest_b = await marked_backup(
        openbao, s3_server, s3_bucket, tmp_path, name="b", path=path
    )
    assert a.report.key is not None
    assert a.report.manifest_key is not None
    assert b.report.key is not None
    data_b = read_object("s3", endpoint=s3_server.endpoint, bucket=s3_bucket, key=b.report.key)
    forged = replace(
        manifest_a,
        sha256=manifest_b.sha256,
        size=manifest_b.size,
        raftIndex=manifest_b.raftIndex,
        raftTerm=manifest_b.raftTerm,
        raftConfigurationIndex=manifest_b.raftConfigurationIndex,
    )
    write_object("s3", endpoint=s3_server.endpoint, bucket=s3_bucket, key=a.report.key, data=data_b)
    write_object(
        "s3",
        endpoint=s3_server.endpoint,
        bucket=s3_bucket,
        key=a.report.manifest_key,
        data=forged.to_json().encode(),
    )

    server = scratch()
    unseal = keys_file(tmp_path, json.dumps({"unseal_keys_b64": [openbao.unseal_key]}))
    run = await drill(
        server, openbao, s3_server, s3_bucket, tmp_path, key=a.report.key, unseal=unseal
    )
    assert run.code == VERIFICATION, run.stderr
    r = run.report
    assert r.error is not None
    assert r.error.error_class == "verification"
    assert r.error.message.startswith("marker mismatch:"), r.error.message
    assert r.marker == manifest_a.marker
    assert r.drill is not None
    assert (r.drill.unsealed, r.drill.marker_checked, r.drill.marker_matched) == (True, True, False)
    assert server.exit_code() == 0


@pytest.mark.integration
async def test_drill_without_unseal_keys_is_a_partial_success(
    openbao: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch: Callable[[], Scratch],
) -> None:
    backup, manifest = await marked_backup(openbao, s3_server, s3_bucket, tmp_path, name="p")
    assert backup.report.key is not None
    server = scratch()
    run = await drill(
        server, openbao, s3_server, s3_bucket, tmp_path, key=backup.report.key, unseal=None
    )
    assert run.code == 0, run.stderr
    r = run.report
    assert r.outcome == "succeeded"
    assert (r.sha256, r.size, r.raft_index) == (manifest.sha256, manifest.size, manifest.raftIndex)
    assert r.drill is not None
    assert (r.drill.unsealed, r.drill.marker_checked, r.drill.marker_matched, r.drill.partial) == (
        False,
        False,
        None,
        True,
    )
    assert "PARTIAL" in run.stderr
    assert server.exit_code() == 0


@pytest.mark.integration
async def test_tampered_object_never_reaches_the_scratch_server(
    openbao: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch: Callable[[], Scratch],
) -> None:
    backup, _ = await marked_backup(openbao, s3_server, s3_bucket, tmp_path, name="t")
    key = backup.report.key
    assert key is not None
    data = bytearray(read_object("s3", endpoint=s3_server.endpoint, bucket=s3_bucket, key=key))
    data[len(data) // 2] ^= 0xFF
    write_object("s3", endpoint=s3_server.endpoint, bucket=s3_bucket, key=key, data=bytes(data))

    server = scratch()
    # The executor signals a done file of its own, so the scratch server stays up to be
    # inspected afterwards.
    own_done = tmp_path / "executor-done"
    run = await drill(
        server,
        openbao,
        s3_server,
        s3_bucket,
        tmp_path,
        key=key,
        unseal=keys_file(tmp_path, openbao.unseal_key),
        done_file=own_done,
    )
    assert run.code == VERIFICATION, run.stderr
    assert run.report.error is not None
    assert run.report.error.error_class == "verification"
    assert run.report.drill is not None
    assert run.report.drill.unsealed is False
    assert own_done.exists()
    await asyncio.to_thread(_wait_answers, server)
    assert server.initialized() is False, "the scratch server was touched"
    server.done_file.touch()
    assert server.exit_code() == 0


def _wait_answers(server: Scratch) -> None:
    def probe() -> bool:
        try:
            server.initialized()
            return True
        except OSError:
            return False

    server.server.wait_until(probe, timeout=30, what="sys/init answers")


def test_a_bad_configuration_still_creates_the_done_file(tmp_path: Path) -> None:
    done = tmp_path / "done"
    term = tmp_path / "term"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OBB_DRILL_DONE_FILE": str(done),
        "OBB_TERMINATION_MESSAGE_PATH": str(term),
        "OBB_DRILL_ADDR": "http://openbao.example:8200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "executor", "drill"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == CONFIGURATION
    assert done.exists()
    message = json.loads(term.read_text())["error"]["message"]
    assert "OBB_DRILL_KEY: is required" in message
    assert "OBB_DRILL_ADDR: must be a loopback address" in message


def test_drill_configuration(tmp_path: Path) -> None:
    env = {
        **cluster_env(),
        **token_env("http://127.0.0.1:18200", "t", tmp_path),
        **storage_env("s3", endpoint="http://127.0.0.1:1", bucket="obb-test"),
        "OBB_DRILL_KEY": "team-a/bao/20261121T233045Z-0123abcd.snap",
        "OBB_DRILL_ADDR": "http://127.0.0.1:18200",
        "OBB_DRILL_DONE_FILE": str(tmp_path / "done"),
        "OBB_UNSEAL_KEYS_FILE": str(keys_file(tmp_path, '["a2V5MQ==", "6b657932"]')),
    }
    del env["OBB_OPENBAO_ADDR"]
    cfg = load_config(mode="drill", environ=env)
    assert cfg.drill is not None
    assert cfg.openbao is not None
    assert cfg.openbao.addr == "http://127.0.0.1:18200"
    assert cfg.drill.unseal_keys == ("a2V5MQ==", "6b657932")
    assert "a2V5MQ==" not in repr(cfg)
    rebuilt = (
        cfg.to_env()
        | {k: v for k, v in env.items() if not k.startswith("OBB_")}
        | {"OBB_OPENBAO_TOKEN_FILE": env["OBB_OPENBAO_TOKEN_FILE"]}
    )
    assert load_config(mode="drill", environ=rebuilt) == cfg
    with pytest.raises(ConfigurationError, match="neither hex nor base64"):
        load_config(
            mode="drill",
            environ={**env, "OBB_UNSEAL_KEYS_FILE": str(keys_file(tmp_path, "not a key!\n"))},
        )
    with pytest.raises(ConfigurationError, match="loopback"):
        load_config(mode="drill", environ={**env, "OBB_DRILL_ADDR": "http://10.0.0.1:8200"})


def test_unseal_key_formats() -> None:
    assert parse_unseal_keys("k1==\n\nk2==\n") == ("k1==", "k2==")
    assert parse_unseal_keys('{"unseal_keys_b64": ["a2V5"], "root_token": "x"}') == ("a2V5",)
    assert parse_unseal_keys('{"keys": ["abcd"]}') == ("abcd",)
    with pytest.raises(ValueError, match="no unseal keys"):
        parse_unseal_keys("\n")
