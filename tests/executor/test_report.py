"""The result report: exact schema, size limit, strict parsing, exit codes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from executor.report import EXIT_CODES, MAX_BYTES, Report, ReportError

T0 = dt.datetime(2026, 11, 21, 23, 30, 45, 123000, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=12.5)

FIELDS = {
    "v",
    "mode",
    "outcome",
    "key",
    "manifestKey",
    "size",
    "sha256",
    "startedAt",
    "finishedAt",
    "durationSeconds",
    "openbaoVersion",
    "raftIndex",
    "raftTerm",
    "deletedKeys",
    "error",
}


def success() -> Report:
    return Report(
        mode="backup",
        outcome="succeeded",
        started_at=T0,
        finished_at=T1,
        key="p/ns/c/20261121T233045Z-0123abcd.snap",
        manifest_key="p/ns/c/20261121T233045Z-0123abcd.snap.manifest.json",
        size=1234,
        sha256="a" * 64,
        openbao_version="2.7.2",
        raft_index=35,
        raft_term=3,
    )


def test_exact_schema_and_values() -> None:
    data = json.loads(success().to_json())
    assert set(data) == FIELDS
    assert data["v"] == 1
    assert data["startedAt"] == "2026-11-21T23:30:45.123Z"
    assert data["finishedAt"] == "2026-11-21T23:30:57.623Z"
    assert data["durationSeconds"] == 12.5
    assert data["error"] is None
    assert data["deletedKeys"] is None


def test_round_trip() -> None:
    r = success()
    assert Report.from_json(r.to_json()) == r
    failed = Report(
        mode="delete",
        outcome="failed",
        started_at=T0,
        finished_at=T1,
        deleted_keys=("a.snap",),
        error=ReportError("storage", "boom"),
    )
    assert Report.from_json(failed.to_json()) == failed
    assert failed.exit_code == 14


def test_exit_codes() -> None:
    assert EXIT_CODES == {
        "configuration": 10,
        "auth": 11,
        "leader": 12,
        "snapshot": 13,
        "storage": 14,
        "verification": 15,
        "internal": 1,
    }
    assert success().exit_code == 0


def test_outcome_and_error_must_agree() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Report(mode="backup", outcome="failed", started_at=T0, finished_at=T1)
    with pytest.raises(ValueError, match="outcome"):
        Report(
            mode="backup",
            outcome="succeeded",
            started_at=T0,
            finished_at=T1,
            error=ReportError("internal", "x"),
        )


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(success().to_json())
    data["future"] = {"anything": [1, 2]}
    assert Report.from_json(json.dumps(data)) == success()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 2),
        ("v", True),
        ("mode", "backupp"),
        ("outcome", "ok"),
        ("size", "12"),
        ("size", 1.5),
        ("size", True),
        ("raftIndex", "35"),
        ("key", 5),
        ("deletedKeys", "a"),
        ("deletedKeys", [1]),
        ("startedAt", "yesterday"),
        ("startedAt", "2026-11-21T23:30:45"),
        ("durationSeconds", "1"),
        ("error", "boom"),
        ("error", {"class": "nope", "message": ""}),
        ("error", {"class": "storage", "message": 3}),
    ],
)
def test_wrong_types_are_rejected(field: str, value: object) -> None:
    data = json.loads(success().to_json())
    data[field] = value
    with pytest.raises(ValueError, match=r"."):
        Report.from_json(json.dumps(data))


def test_not_json_is_rejected() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        Report.from_json("exit status 1")
    with pytest.raises(ValueError, match="not a JSON object"):
        Report.from_json("[1]")


def test_long_error_is_shortened_and_still_parses() -> None:
    message = 'é\n"' * 5000  # escapes cost up to 6 bytes per character
    r = Report(
        mode="restore",
        outcome="failed",
        started_at=T0,
        finished_at=T1,
        key="k.snap",
        error=ReportError("verification", message),
    )
    text = r.to_json()
    assert len(text.encode()) <= MAX_BYTES
    back = Report.from_json(text)
    assert back.error is not None
    assert back.error.error_class == "verification"
    assert back.error.message.endswith("[...]")
    assert back.key == "k.snap"


def test_huge_deleted_keys_are_cut_with_a_note() -> None:
    keys = tuple(f"prefix/ns/cluster/20261121T233045Z-{i:08x}.snap" for i in range(200))
    r = Report(mode="delete", outcome="succeeded", started_at=T0, finished_at=T1, deleted_keys=keys)
    text = r.to_json()
    assert len(text) <= MAX_BYTES
    back = Report.from_json(text)
    assert back.outcome == "failed"
    assert back.error is not None
    assert "deletedKeys truncated" in back.error.message
    assert back.deleted_keys is not None
    assert back.deleted_keys == keys[: len(back.deleted_keys)]


def test_output_is_ascii() -> None:
    r = Report(
        mode="backup",
        outcome="failed",
        started_at=T0,
        finished_at=T1,
        error=ReportError("internal", "ünïcødé ☃"),
    )
    text = r.to_json()
    assert text.isascii()
    assert Report.from_json(text).error == ReportError("internal", "ünïcødé ☃")
