"""Bad configuration ends with exit code 10, a report and a message naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from executor.__main__ import main
from executor.report import Report
from tests.executor.harness import ROOT, run_executor


def good_env(tmp: Path) -> dict[str, str]:
    token = tmp / "token"
    token.write_text("s.sometoken123")
    return {
        "OBB_CLUSTER_NAMESPACE": "ns",
        "OBB_CLUSTER_NAME": "bao",
        "OBB_CLUSTER_UID": "u",
        "OBB_OPENBAO_ADDR": "http://127.0.0.1:1",
        "OBB_AUTH_METHOD": "token",
        "OBB_OPENBAO_TOKEN_FILE": str(token),
        "OBB_PROVIDER": "s3",
        "OBB_BUCKET": "bkt",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "shh-secret-value",
        "OBB_TERMINATION_MESSAGE_PATH": str(tmp / "term"),
    }


def run_main(
    mode: str, env: dict[str, str], tmp: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, Report, str]:
    code = main([mode], env)
    out = capsys.readouterr()
    report = Report.from_json((tmp / "term").read_text())
    assert out.out.strip() == (tmp / "term").read_text()
    return code, report, out.err


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"OBB_OPENBAO_ADDR": None}, "OBB_OPENBAO_ADDR: is required"),
        (
            {"OBB_CLUSTER_NAME": None, "OBB_BUCKET": None},
            "OBB_CLUSTER_NAME: is required; OBB_BUCKET: is required",
        ),
        (
            {"OBB_OPENBAO_TOKEN_FILE": "/nonexistent/token"},
            "OBB_OPENBAO_TOKEN_FILE: cannot read /nonexistent/token",
        ),
        ({"OBB_PROVIDER": "dropbox"}, "OBB_PROVIDER: must be one of s3, gcs, azure"),
        ({"OBB_PART_SIZE": "12 apples"}, "OBB_PART_SIZE"),
    ],
)
def test_bad_backup_configuration(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str | None],
    fragment: str,
) -> None:
    env = good_env(tmp_path)
    for k, v in change.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    code, report, err = run_main("backup", env, tmp_path, capsys)
    assert code == 10
    assert report.outcome == "failed"
    assert report.error is not None
    assert report.error.error_class == "configuration"
    assert fragment in report.error.message
    assert report.key is None
    assert "shh-secret-value" not in err + report.to_json()


def test_unreadable_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = good_env(tmp_path)
    Path(env["OBB_OPENBAO_TOKEN_FILE"]).chmod(0)
    import os

    if os.geteuid() == 0:  # root reads anything: use a directory instead
        env["OBB_OPENBAO_TOKEN_FILE"] = str(tmp_path)
    code, report, _ = run_main("backup", env, tmp_path, capsys)
    assert code == 10
    assert report.error is not None
    assert "OBB_OPENBAO_TOKEN_FILE: cannot read" in report.error.message


def test_delete_key_outside_prefix_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = good_env(tmp_path)
    env["OBB_DELETE_KEYS"] = json.dumps(
        ["ns/bao/20250101T000000Z-deadbeef.snap", "ns/other/20250101T000000Z-deadbeef.snap"]
    )
    code, report, _ = run_main("delete", env, tmp_path, capsys)
    assert code == 10
    assert report.mode == "delete"
    assert report.error is not None
    assert "outside this cluster's prefix 'ns/bao/'" in report.error.message
    assert report.deleted_keys is None


def test_usage_error_for_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot"], {}) == 10
    assert "usage" in capsys.readouterr().err
    assert main([], {}) == 10


@pytest.mark.integration
async def test_subprocess_missing_everything(tmp_path: Path) -> None:
    run = await run_executor("restore", {}, tmp=tmp_path)
    assert run.code == 10
    assert run.report.error is not None
    message = run.report.error.message
    for name in (
        "OBB_CLUSTER_NAMESPACE",
        "OBB_PROVIDER",
        "OBB_BUCKET",
        "OBB_OPENBAO_ADDR",
        "OBB_AUTH_METHOD",
        "OBB_RESTORE_KEY",
    ):
        assert name in message
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert lines[-1]["event"] == "finished"
    assert lines[-1]["error_class"] == "configuration"


def test_module_runs_without_network_imports() -> None:
    """The executor must never import the controller."""
    code = (
        "import sys, executor.__main__, executor.backup, executor.restore, executor.delete;"
        "print([m for m in sys.modules if m == 'controller' or m.startswith('controller.')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True
    )
    assert out.stdout.strip() == "[]"
