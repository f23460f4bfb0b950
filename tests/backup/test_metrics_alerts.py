"""The shipped alerts reference real metrics, and the age metric makes them fire for clusters
that never had a successful backup."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from controller import metrics

RULES = Path(__file__).resolve().parents[2] / "charts" / "openbao-backup" / "files" / "alerts.yaml"


def _registered() -> set[str]:
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_alert_uses_registered_metrics() -> None:
    probe = metrics.BackupMetrics(
        namespace="alerts", cluster="probe", created=0.0, now=lambda: 100.0
    )
    try:
        registered = _registered()
        doc = yaml.safe_load(RULES.read_text())
        exprs = [r["expr"] for g in doc["groups"] for r in g["rules"]]
        assert exprs
        for expr in exprs:
            for name in re.findall(r"\bopenbao_backup_[a-z_]+", expr):
                assert name in registered, f"{name} in {expr!r} is not a metric we export"
    finally:
        probe.remove()


def _sample(name: str, cluster: str) -> float | None:
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("cluster") == cluster:
                return float(sample.value)
    return None


def test_age_counts_from_creation_until_the_first_success() -> None:
    now = [1_000.0]
    m = metrics.BackupMetrics(
        namespace="alerts", cluster="never", created=400.0, now=lambda: now[0]
    )
    try:
        assert _sample("openbao_backup_age_seconds", "never") == 600.0
        assert _sample("openbao_backup_last_success_timestamp_seconds", "never") == 0.0
        assert _sample("openbao_backup_failure_total", "never") == 0.0  # pre-created at zero
        now[0] = 100_000.0
        assert _sample("openbao_backup_age_seconds", "never") == 99_600.0  # > a daily cadence
        m.succeeded(completed=99_000.0, duration=3.0, size=10)
        assert _sample("openbao_backup_age_seconds", "never") == 1_000.0
        m.failed(reason="storage", duration=None, consecutive=1)
        assert _sample("openbao_backup_consecutive_failures", "never") == 1.0
        m.lock(held_since=99_500.0)
        assert _sample("openbao_backup_lock_held_seconds", "never") == 500.0
    finally:
        m.remove()
    assert _sample("openbao_backup_age_seconds", "never") is None  # series removed
