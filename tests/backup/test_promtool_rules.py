"""The shipped alert rules, checked and unit-tested by Prometheus's own promtool.

promtool comes from Debian's ``prometheus`` package (hack/install-deps.sh installs it); in CI a
missing promtool is a failure, not a skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
TESTS = ROOT / "tests" / "monitoring"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: run hack/install-deps.sh (Debian package prometheus)"
    return found


def _rules_file(tmp: Path) -> Path:
    spec = yaml.safe_load(RULE.read_text())["spec"]
    out = tmp / "rules.yaml"
    out.write_text(yaml.safe_dump(spec))
    return out


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(_rules_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_drill_alerts_fire_when_they_should(tmp_path: Path) -> None:
    _rules_file(tmp_path)
    case = tmp_path / "drill_rules_test.yaml"
    shutil.copy(TESTS / "drill_rules_test.yaml", case)
    proc = subprocess.run(
        [promtool(), "test", "rules", str(case)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
