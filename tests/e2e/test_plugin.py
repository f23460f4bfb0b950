"""``kubectl openbao-backup`` end to end: the real kubectl finds the plugin on PATH, and the
plugin backs up, lists, shows status and restores against the real
apiserver, controller, executor and OpenBao."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from devenv.controlplane import ControlPlane

from tests.e2e.conftest import JWT_MOUNT, Env
from tests.e2e.test_restore import restore_role

pytestmark = pytest.mark.integration

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def plugin(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl openbao-backup ARGS`` through the real kubectl's plugin discovery."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env["KUBECONFIG"] = str(cp.kubeconfig)
    return subprocess.run(
        [str(cp.kubectl), "openbao-backup", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


async def run_plugin(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(plugin, cp, *args)


async def test_backup_list_status_restore(env: Env, control_plane: ControlPlane) -> None:
    role = restore_role(env)
    await env.create_cluster("bao", auth={"jwt": {"mount": JWT_MOUNT, "role": role}})
    ns = env.namespace

    done = await run_plugin(control_plane, "backup", "bao", "-n", ns, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "created" in out and "phase: Running" in out, out
    # (the node agent serves no pod logs: following the executor's progress lines is proven
    # on a real kubelet, tests/realnode/test_real_pods.py)
    assert " Succeeded: backups/" in out and "verified" in out, out
    name = out.split("openbaobackup/", 1)[1].split(" ", 1)[0]
    record = await env.get("openbaobackups", name)
    assert record is not None and record["status"]["phase"] == "Succeeded"
    assert record["spec"]["trigger"] == "kubectl-openbao-backup"

    listed = await run_plugin(control_plane, "list", "-n", ns)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:6] == ["NAME", "CLUSTER", "PHASE", "AGE", "SIZE", "VERIFIED"]
    assert any(r.split()[0] == name and "Succeeded" in r and " yes " in r for r in rows), rows

    status = await run_plugin(control_plane, "status", "bao", "-n", ns)
    assert status.returncode == 0, status.stderr
    assert "Schedule:         manual only" in status.stdout
    assert record["status"]["key"] in status.stdout
    assert "Failures in a row: 0" in status.stdout

    missing = await run_plugin(control_plane, "restore", "bao", "--backup", "nope", "-n", ns)
    assert missing.returncode == 2 and "404" in missing.stderr + missing.stdout, missing

    restored = await run_plugin(
        control_plane, "restore", "bao", "--backup", name, "-n", ns, "--wait"
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "openbaorestore/" in restored.stdout and " Succeeded" in restored.stdout


async def test_unknown_cluster_is_a_clear_error(env: Env, control_plane: ControlPlane) -> None:
    got = await run_plugin(control_plane, "backup", "nope", "-n", env.namespace)
    assert got.returncode == 2
    assert 'openbaoclusters.backup.openbao.org "nope" not found' in got.stderr, got.stderr
