"""The kubectl plugin's output, on tables of objects (pure: controller/plugin/views.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller.plugin import views
from executor.report import PROGRESS_EVENT, STREAMED_EVENT

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (26_112, "25.5 KiB"),
        (5 * 1024**3, "5.0 GiB"),
        (None, "-"),
        (-1, "-"),
        (True, "-"),
        ("12", "-"),
    ],
)
def test_size(value: object, text: str) -> None:
    assert views.size(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"), (200000, "2d")],
)
def test_age(seconds: int, text: str) -> None:
    when = (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert views.age(when, now=NOW) == text


def test_age_of_garbage_is_a_dash() -> None:
    assert views.age("yesterday", now=NOW) == "-"
    assert views.age(None, now=NOW) == "-"


def record(name: str, created: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"cluster": "vault"},
        "status": status,
    }


VERIFIED = [{"type": "Complete", "status": "True", "reason": "Verified"}]


def test_catalog_newest_first_with_verified_column() -> None:
    old = record(
        "a", "2026-11-29T12:00:00Z", phase="Succeeded", size=2048, key="k/a", conditions=VERIFIED
    )
    new = record("b", "2026-11-30T11:59:00Z", phase="Failed")
    drilled = record(
        "c", "2026-11-30T11:00:00Z", phase="Succeeded", verification={"result": "Passed"}
    )
    lines = views.catalog([old, new, drilled], now=NOW, namespaces=False).splitlines()
    assert lines[0].split() == ["NAME", "CLUSTER", "PHASE", "AGE", "SIZE", "VERIFIED", "KEY"]
    assert [ln.split()[0] for ln in lines[1:]] == ["b", "c", "a"]
    assert lines[1].split() == ["b", "vault", "Failed", "60s", "-", "no", "-"]
    assert lines[2].split()[-2] == "drill:Passed"
    assert lines[3].split() == ["a", "vault", "Succeeded", "24h", "2.0", "KiB", "yes", "k/a"]


def test_catalog_all_namespaces_and_empty() -> None:
    one = record("a", "2026-11-30T11:00:00Z", phase="Running")
    assert views.catalog([one], now=NOW, namespaces=True).splitlines()[1].split()[0] == "ns"
    assert views.catalog([], now=NOW, namespaces=False) == "No backups found."


def test_cluster_status_shows_schedule_success_failures_and_conditions() -> None:
    cluster = {
        "metadata": {"name": "vault", "namespace": "ns"},
        "spec": {"backup": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin", "suspend": True}},
        "status": {
            "backup": {
                "lastBackupTime": "2026-11-30T09:00:00Z",
                "lastBackupName": "p/ns/vault/x.snap",
                "lastBackupSize": 3 * 1024 * 1024,
                "consecutiveFailures": 2,
                "lastFailureReason": "storage: bucket gone",
            },
            "conditions": [
                {
                    "type": "ConfigValid",
                    "status": "True",
                    "reason": "Valid",
                    "lastTransitionTime": "2026-11-30T11:00:00Z",
                    "message": "ok",
                }
            ],
        },
    }
    running = record("r", "2026-11-30T11:59:00Z", phase="Running")
    text = views.cluster_status(cluster, [running], now=NOW)
    assert "Schedule:         0 3 * * * (Europe/Berlin)  [suspended]" in text
    assert "Last success:     3h ago  p/ns/vault/x.snap  3.0 MiB" in text
    assert "Failures in a row: 2  (last: storage: bucket gone)" in text
    assert "In progress:      r" in text
    assert "ConfigValid   True     Valid    60m" in text


def test_cluster_status_never_succeeded_manual_only() -> None:
    text = views.cluster_status({"metadata": {"name": "v", "namespace": "n"}}, [], now=NOW)
    assert "Schedule:         manual only" in text
    assert "Last success:     never" in text
    assert "In progress:      none" in text


def test_progress_lines() -> None:
    assert views.progress_line({"event": "logged in"}) is None
    assert (
        views.progress_line(
            {"event": PROGRESS_EVENT, "bytes": 3 << 20, "bytes_per_second": 1 << 20}
        )
        == "streaming: 3.0 MiB so far (1.0 MiB/s)"
    )
    line = views.progress_line(
        {"event": STREAMED_EVENT, "bytes": 4096, "bytes_per_second": 2048, "seconds": 2.0}
    )
    assert line == "streamed 4.0 KiB in 2.0 s (2.0 KiB/s)"


def test_outcome_lines() -> None:
    ok = record("b", "x", phase="Succeeded", key="k", size=1024, sha256="ab" * 32)
    assert (
        views.outcome(ok)
        == "openbaobackup/b Succeeded: k (1.0 KiB, sha256 abababababab…, verified)"
    )
    bad = record("b", "x", phase="Failed", failureReason="OOMKilled", message="out of memory")
    assert views.outcome(bad) == "openbaobackup/b Failed: OOMKilled: out of memory"
