"""``python -m executor drill`` for a live cluster that auto-unseals (transit seal).

A "KMS" OpenBao with the transit engine and a key ``autounseal``; a "live" OpenBao sealed by
that key (Raft, recovery shares, unsealed by itself) holding a freshness marker, backed up to
moto; the drill's scratch server is the real ``SERVER_SCRIPT`` given the same seal stanza as
``DRILL_SEAL_CONFIG``, and must come back unsealed by itself with the marker. Real processes
only; every process stopped by PID (fixtures and ``Server.stop``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from devenv.openbao import OpenBao, bao_binary
from devenv.openbao_autounseal import (
    start_openbao_autounseal,
    start_transit_kms,
    transit_seal_stanza,
)
from devenv.procs import Server, free_port
from devenv.storage import StorageServer

from executor.contract import load_config
from executor.drill import SERVER_SCRIPT
from executor.errors import ConfigurationError
from tests.executor.harness import Run, cluster_env, run_executor, storage_env, token_env
from tests.executor.test_marker import backup_with_marker, kv_mount, stored_manifest

CONFIGURATION = 10


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[OpenBao]:
    bao = start_transit_kms(tmp_path, name="kms")
    try:
        yield bao
    finally:
        bao.stop()


@pytest.fixture
def seal_file(tmp_path: Path, kms: OpenBao) -> Path:
    """The live cluster's seal stanza, as the controller would mount it from a Secret."""
    path = tmp_path / "seal" / "seal.hcl"
    path.parent.mkdir()
    path.write_text(transit_seal_stanza(kms))
    path.chmod(0o600)
    return path


@pytest.fixture
def live(tmp_path: Path, seal_file: Path) -> Iterator[OpenBao]:
    bao = start_openbao_autounseal(tmp_path, seal=seal_file.read_text(), name="live", kv=False)
    try:
        yield bao
    finally:
        bao.stop()


@pytest.fixture
def scratch_servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for srv in started:
            srv.stop()


def start_scratch(
    tmp: Path, started: list[Server], *, seal_config: Path | None
) -> tuple[Server, str, Path]:
    """SERVER_SCRIPT under ``sh`` (the drill pod's OpenBao container)."""
    port = free_port()
    home = tmp / f"drill-{uuid.uuid4().hex[:6]}"
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
    if seal_config is not None:
        env["DRILL_SEAL_CONFIG"] = str(seal_config)
    srv = Server("drill-server", ["sh", "-c", SERVER_SCRIPT], home / "server.log", env=env)
    started.append(srv)
    srv.start()
    return srv, f"http://127.0.0.1:{port}", done


async def run_drill(
    live: OpenBao,
    s3_server: StorageServer,
    bucket: str,
    tmp: Path,
    *,
    addr: str,
    done: Path,
    key: str,
    auto_unseal: bool,
) -> Run:
    env = {
        **cluster_env(),
        # The login to the RESTORED copy: the live cluster's root token is valid there.
        **token_env(addr, live.root_token, tmp),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=bucket),
        "OBB_DRILL_KEY": key,
        "OBB_DRILL_ADDR": addr,
        "OBB_DRILL_DONE_FILE": str(done),
        "OBB_DRILL_AUTO_UNSEAL": "true" if auto_unseal else "false",
        "OBB_DRILL_START_TIMEOUT": "60",
    }
    del env["OBB_OPENBAO_ADDR"]
    return await run_executor("drill", env, tmp=tmp)


@pytest.mark.integration
async def test_drill_of_an_auto_unseal_cluster_unseals_itself_and_matches_the_marker(
    kms: OpenBao,
    seal_file: Path,
    live: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch_servers: list[Server],
) -> None:
    seal = live.api("GET", "sys/seal-status", token="")
    assert seal["type"] == "transit"
    assert seal["recovery_seal"] is True

    path = f"{kv_mount(live, version=2)}/data/openbao-backup/marker"
    backup = await backup_with_marker(live, s3_server, s3_bucket, tmp_path, path=path, name="au")
    assert backup.code == 0, backup.stderr
    manifest = stored_manifest(s3_server, s3_bucket, backup)
    assert backup.report.key is not None
    assert manifest.marker is not None

    server, addr, done = start_scratch(tmp_path, scratch_servers, seal_config=seal_file)
    run = await run_drill(
        live,
        s3_server,
        s3_bucket,
        tmp_path,
        addr=addr,
        done=done,
        key=backup.report.key,
        auto_unseal=True,
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
    # The seal stanza (it holds the KMS token) never appears in the executor's output.
    output = run.stdout + run.stderr + run.raw_report
    stanza = transit_seal_stanza(kms)
    assert stanza not in output
    assert kms.root_token not in output
    assert live.root_token not in output
    # The executor created the done file; the server's script stopped bao and exited 0.
    assert done.exists()
    assert server.proc is not None
    assert server.proc.wait(timeout=30) == 0
    # The scratch server's log names the seal file, never its content.
    assert kms.root_token not in _read(server.log_path)


@pytest.mark.integration
async def test_auto_unseal_drill_without_the_seal_stanza_is_a_configuration_error(
    live: OpenBao,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
    scratch_servers: list[Server],
) -> None:
    """OBB_DRILL_AUTO_UNSEAL=true but the scratch server got no DRILL_SEAL_CONFIG (Shamir):
    refused before the scratch server is initialised."""
    path = f"{kv_mount(live, version=2)}/data/marker"
    backup = await backup_with_marker(live, s3_server, s3_bucket, tmp_path, path=path, name="x")
    assert backup.code == 0, backup.stderr
    assert backup.report.key is not None
    server, addr, done = start_scratch(tmp_path, scratch_servers, seal_config=None)
    run = await run_drill(
        live,
        s3_server,
        s3_bucket,
        tmp_path,
        addr=addr,
        done=done,
        key=backup.report.key,
        auto_unseal=True,
    )
    assert run.code == CONFIGURATION, run.stderr
    assert run.report.error is not None
    assert "DRILL_SEAL_CONFIG" in run.report.error.message
    assert run.report.drill is not None
    assert run.report.drill.unsealed is False
    assert server.proc is not None
    assert server.proc.wait(timeout=30) == 0


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def test_server_script_refuses_an_unreadable_seal_config(tmp_path: Path) -> None:
    import subprocess

    env = {
        "PATH": f"{bao_binary().parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "DRILL_DIR": str(tmp_path / "data"),
        "DRILL_PORT": str(free_port()),
        "DRILL_DONE_FILE": str(tmp_path / "done"),
        "DRILL_SEAL_CONFIG": str(tmp_path / "missing.hcl"),
    }
    out = subprocess.run(
        ["sh", "-c", SERVER_SCRIPT], env=env, capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 1
    assert b"DRILL_SEAL_CONFIG" in out.stderr


def test_auto_unseal_configuration(tmp_path: Path) -> None:
    env = {
        **cluster_env(),
        **token_env("http://127.0.0.1:18200", "t", tmp_path),
        **storage_env("s3", endpoint="http://127.0.0.1:1", bucket="obb-test"),
        "OBB_DRILL_KEY": "team-a/bao/20261121T233045Z-0123abcd.snap",
        "OBB_DRILL_ADDR": "http://127.0.0.1:18200",
        "OBB_DRILL_DONE_FILE": str(tmp_path / "done"),
    }
    del env["OBB_OPENBAO_ADDR"]
    cfg = load_config(mode="drill", environ=env)
    assert cfg.drill is not None
    assert cfg.drill.auto_unseal is False
    cfg = load_config(mode="drill", environ={**env, "OBB_DRILL_AUTO_UNSEAL": "true"})
    assert cfg.drill is not None
    assert cfg.drill.auto_unseal is True
    assert cfg.to_env()["OBB_DRILL_AUTO_UNSEAL"] == "true"
    rebuilt = (
        cfg.to_env()
        | {k: v for k, v in env.items() if not k.startswith("OBB_")}
        | {"OBB_OPENBAO_TOKEN_FILE": env["OBB_OPENBAO_TOKEN_FILE"]}
    )
    assert load_config(mode="drill", environ=rebuilt) == cfg
    with pytest.raises(ConfigurationError, match="OBB_DRILL_AUTO_UNSEAL"):
        load_config(mode="drill", environ={**env, "OBB_DRILL_AUTO_UNSEAL": "maybe"})
