"""The shipped alert rules (the chart's plain rule file, the PrometheusRule's only source),
checked and unit-tested by Prometheus's own promtool.

Each ``tests/monitoring/*_test.yaml`` is a promtool rule-test file whose ``rule_files`` names
that file (relative to the test file, so ``promtool test rules`` runs it as it stands).
Expected alerts list their labels; their annotations are filled in from the rule
(``{{ $labels.x }}`` substituted) unless the test spells them out, so a test states what fires
and the rule file stays the one place the wording lives. Every alert must have a case where
it fires and a case where it must not.

promtool comes from Debian's ``prometheus`` package (hack/install-deps.sh installs it); in CI a
missing promtool is a failure, not a skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE = ROOT / "charts" / "openbao-backup" / "files" / "alerts.yaml"
TESTS = ROOT / "tests" / "monitoring"
CASES = sorted(TESTS.glob("*_test.yaml"))


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: run hack/install-deps.sh (Debian package prometheus)"
    return found


def _rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULE.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def _annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)

    return {k: " ".join(fill(str(v)).split()) for k, v in rule["annotations"].items()}


def _prepared(case: Path, tmp: Path) -> Path:
    rules = _rules()
    doc = yaml.safe_load(case.read_text())
    named = [(case.parent / f).resolve() for f in doc["rule_files"]]
    assert named == [RULE], f"{case.name} must test {RULE.relative_to(ROOT)}, not {named}"
    doc["rule_files"] = [str(RULE)]
    for test in doc["tests"]:
        for check in test.get("alert_rule_test", []):
            rule = rules[check["alertname"]]
            for alert in check.get("exp_alerts") or []:
                want = _annotations(rule, {k: str(v) for k, v in alert["exp_labels"].items()})
                given = alert.get("exp_annotations")
                alert["exp_annotations"] = (
                    want if given is None else {**given, "runbook_url": want["runbook_url"]}
                )
    out = tmp / case.name
    out.write_text(yaml.safe_dump(doc, width=10_000))
    return out


def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_alerts_fire_when_they_should(case: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", str(_prepared(case, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in CASES:
        for test in yaml.safe_load(case.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(_rules())
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


def test_every_alert_links_an_existing_runbook() -> None:
    for name, rule in _rules().items():
        url = rule["annotations"].get("runbook_url", "")
        assert url.endswith(f"/docs/runbooks/{name}.md"), name
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), name
