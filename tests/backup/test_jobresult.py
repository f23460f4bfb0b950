"""decide.jobresult: Job + pod status -> one result, for every shape of failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.backup.decide.jobresult import (
    EXIT_CLASSES,
    MAX_MESSAGE,
    JobPhase,
    Reason,
    clean,
    interpret,
    parse_report,
)
from executor.report import Report, ReportError

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def report(
    *,
    mode: str = "backup",
    error: tuple[str, str] | None = None,
    key: str | None = "b/ns/prod/20260601T120000Z-0123abcd.snap",
) -> Report:
    return Report(
        mode=mode,  # type: ignore[arg-type]
        outcome="failed" if error else "succeeded",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=12.5),
        key=key,
        manifest_key=f"{key}.manifest.json" if key and not error else None,
        size=None if error else 1234,
        sha256=None if error else SHA,
        openbao_version="2.4.1",
        raft_index=42,
        raft_term=3,
        error=ReportError(error[0], error[1]) if error else None,  # type: ignore[arg-type]
    )


OK = report().to_json()


def job(
    condition: str | None = None,
    reason: str = "",
    message: str = "",
    *,
    deadline: int | None = 3600,
    status: str = "True",
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if condition == "Failed":
        conditions.append({"type": "FailureTarget", "status": "True", "reason": reason})
    if condition == "Complete":
        conditions.append({"type": "SuccessCriteriaMet", "status": "True"})
    if condition:
        conditions.append(
            {"type": condition, "status": status, "reason": reason, "message": message}
        )
    spec: dict[str, Any] = {"backoffLimit": 0}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "metadata": {"name": "prod-202606011200-backup"},
        "spec": spec,
        "status": {"conditions": conditions},
    }


def pod(
    *,
    exit_code: int | None = 0,
    message: object = OK,
    phase: str = "Succeeded",
    reason: str = "",
    pod_reason: str = "",
    pod_message: str = "",
    name: str = "prod-202606011200-backup-abcde",
    created: str = "2026-06-01T12:00:01Z",
    disrupted: str | None = None,
    running: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if pod_reason:
        status["reason"] = pod_reason
    if pod_message:
        status["message"] = pod_message
    if disrupted:
        status["conditions"] = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": disrupted,
                "message": "deleted by the eviction API",
            }
        ]
    if running:
        status["containerStatuses"] = [{"name": "executor", "state": {"running": {}}}]
    elif exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if reason:
            terminated["reason"] = reason
        if message is not None:
            terminated["message"] = message
        status["containerStatuses"] = [{"name": "executor", "state": {"terminated": terminated}}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def failed_report(klass: str, text: str) -> str:
    return report(error=(klass, text)).to_json()


# (id, job, pods, phase, reason, message fragment)
CASES: list[tuple[str, dict[str, Any] | None, list[dict[str, Any]], JobPhase, str, str]] = [
    ("job gone", None, [], JobPhase.LOST, Reason.JOB_LOST, "disappeared"),
    ("job gone even with a pod left", None, [pod()], JobPhase.LOST, Reason.JOB_LOST, ""),
    ("no condition yet, no pod", job(), [], JobPhase.RUNNING, "", ""),
    ("pod running", job(), [pod(running=True, phase="Running")], JobPhase.RUNNING, "", ""),
    ("pod already done, job not yet updated", job(), [pod()], JobPhase.RUNNING, "", ""),
    (
        "only SuccessCriteriaMet: wait for Complete",
        {"status": {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}},
        [pod()],
        JobPhase.RUNNING,
        "",
        "",
    ),
    (
        "only FailureTarget: wait for Failed",
        {"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}},
        [pod()],
        JobPhase.RUNNING,
        "",
        "",
    ),
    (
        "Complete=False is not terminal",
        job("Complete", status="False"),
        [pod()],
        JobPhase.RUNNING,
        "",
        "",
    ),
    ("success", job("Complete"), [pod()], JobPhase.SUCCEEDED, "", ""),
    (
        "complete without a pod",
        job("Complete"),
        [],
        JobPhase.FAILED,
        Reason.REPORT_MISSING,
        "pod is gone",
    ),
    (
        "complete without a message",
        job("Complete"),
        [pod(message=None)],
        JobPhase.FAILED,
        Reason.REPORT_MISSING,
        "no termination message",
    ),
    (
        "complete with an empty message",
        job("Complete"),
        [pod(message="")],
        JobPhase.FAILED,
        Reason.REPORT_MISSING,
        "no termination message",
    ),
    (
        "complete with garbage",
        job("Complete"),
        [pod(message="Traceback (most recent call")],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "unreadable report",
    ),
    (
        "complete with truncated JSON",
        job("Complete"),
        [pod(message=OK[: len(OK) // 2])],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "not JSON",
    ),
    (
        "complete with an oversized message",
        job("Complete"),
        [pod(message=OK + " " * 5000)],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "longer than 4096",
    ),
    (
        "complete with a non-string message",
        job("Complete"),
        [pod(message=["x"])],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "not a string",
    ),
    (
        "complete with a wrong schema version",
        job("Complete"),
        [pod(message=json.dumps({**json.loads(OK), "v": 2}))],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "version",
    ),
    (
        "complete with a report for another mode",
        job("Complete"),
        [pod(message=report(mode="delete", key=None).to_json())],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "mode 'delete'",
    ),
    (
        "complete but the report says failed",
        job("Complete"),
        [pod(message=failed_report("storage", "bucket said no"))],
        JobPhase.FAILED,
        "storage",
        "bucket said no",
    ),
    (
        "failed with a report",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=11, message=failed_report("auth", "permission denied"), phase="Failed")],
        JobPhase.FAILED,
        "auth",
        "permission denied",
    ),
    (
        "failed, report class wins over exit code",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=1, message=failed_report("leader", "sealed"), phase="Failed")],
        JobPhase.FAILED,
        "leader",
        "sealed",
    ),
    (
        "failed, report says succeeded",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=1, phase="Failed")],
        JobPhase.FAILED,
        Reason.REPORT_INVALID,
        "says succeeded",
    ),
    (
        "deadline exceeded with a pod killed mid-run",
        job("Failed", "DeadlineExceeded"),
        [pod(exit_code=143, message=None, phase="Failed")],
        JobPhase.FAILED,
        Reason.DEADLINE_EXCEEDED,
        "activeDeadlineSeconds (3600s)",
    ),
    (
        "deadline exceeded, pod already gone",
        job("Failed", "DeadlineExceeded", deadline=None),
        [],
        JobPhase.FAILED,
        Reason.DEADLINE_EXCEEDED,
        "activeDeadlineSeconds",
    ),
    (
        "deadline exceeded keeps the executor's words",
        job("Failed", "DeadlineExceeded"),
        [pod(exit_code=13, message=failed_report("snapshot", "stream stalled"), phase="Failed")],
        JobPhase.FAILED,
        Reason.DEADLINE_EXCEEDED,
        "snapshot: stream stalled",
    ),
    (
        "failed with no pod (deleted)",
        job("Failed", "BackoffLimitExceeded", "Job has reached"),
        [],
        JobPhase.FAILED,
        Reason.POD_DELETED,
        "BackoffLimitExceeded: Job has reached",
    ),
    (
        "pod evicted",
        job("Failed", "BackoffLimitExceeded"),
        [
            pod(
                exit_code=None,
                phase="Failed",
                pod_reason="Evicted",
                pod_message="The node was low on resource: memory.",
            )
        ],
        JobPhase.FAILED,
        Reason.EVICTED,
        "low on resource",
    ),
    (
        "pod disrupted before it finished",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=None, phase="Failed", disrupted="EvictionByEvictionAPI")],
        JobPhase.FAILED,
        Reason.DISRUPTED,
        "EvictionByEvictionAPI",
    ),
    (
        "pod failed without container status",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=None, phase="Failed", pod_reason="UnexpectedAdmissionError")],
        JobPhase.FAILED,
        Reason.POD_FAILED,
        "UnexpectedAdmissionError",
    ),
    (
        "OOM killed",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=137, reason="OOMKilled", message=None, phase="Failed")],
        JobPhase.FAILED,
        Reason.OOM_KILLED,
        "out of memory",
    ),
    (
        "killed by a signal",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=137, reason="Error", message=None, phase="Failed")],
        JobPhase.FAILED,
        Reason.KILLED,
        "signal 9",
    ),
    (
        "unknown exit code",
        job("Failed", "BackoffLimitExceeded"),
        [pod(exit_code=2, message="usage: executor ...", phase="Failed")],
        JobPhase.FAILED,
        "internal",
        "exit code 2",
    ),
    (
        "exit code 0 but job failed, no report",
        job("Failed", "PodFailurePolicy"),
        [pod(exit_code=0, message=None, phase="Failed")],
        JobPhase.FAILED,
        "internal",
        "exit code 0",
    ),
]
for _code, _klass in sorted(EXIT_CLASSES.items()):
    if _code:
        CASES.append(
            (
                f"exit code {_code} without report -> {_klass}",
                job("Failed", "BackoffLimitExceeded"),
                [pod(exit_code=_code, message="garbled{", phase="Failed")],
                JobPhase.FAILED,
                _klass,
                f"exit code {_code}",
            )
        )


@pytest.mark.parametrize(
    ("job_obj", "pods", "phase", "reason", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_interpret(
    job_obj: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    phase: JobPhase,
    reason: str,
    fragment: str,
) -> None:
    result = interpret(job=job_obj, pods=pods, expected_mode="backup")
    assert result.phase is phase, result
    assert result.reason == reason
    assert fragment in result.message
    assert len(result.message) <= MAX_MESSAGE
    assert "\n" not in result.message
    if phase is JobPhase.SUCCEEDED:
        assert result.report is not None
        assert result.report.sha256 == SHA
        assert result.report.size == 1234
        assert result.exit_code == 0
        assert result.pod_name == "prod-202606011200-backup-abcde"


def test_exit_classes_cover_the_executor_contract() -> None:
    assert EXIT_CLASSES == {
        10: "configuration",
        11: "auth",
        12: "leader",
        13: "snapshot",
        14: "storage",
        15: "verification",
        1: "internal",
    }


def test_the_terminated_pod_is_preferred_over_newer_ones() -> None:
    done = pod(name="a", created="2026-06-01T12:00:01Z")
    replacement = pod(name="b", created="2026-06-01T12:05:00Z", running=True, phase="Running")
    result = interpret(job=job("Complete"), pods=[replacement, done])
    assert result.phase is JobPhase.SUCCEEDED
    assert result.pod_name == "a"


def test_newest_terminated_pod_wins() -> None:
    old = pod(
        name="a",
        created="2026-06-01T12:00:01Z",
        exit_code=14,
        phase="Failed",
        message=failed_report("storage", "old"),
    )
    new = pod(
        name="b",
        created="2026-06-01T12:01:00Z",
        exit_code=11,
        phase="Failed",
        message=failed_report("auth", "new"),
    )
    result = interpret(job=job("Failed", "BackoffLimitExceeded"), pods=[new, old])
    assert (result.reason, result.pod_name) == ("auth", "b")


def test_restore_and_delete_reports() -> None:
    deleted = Report(
        mode="delete",
        outcome="succeeded",
        started_at=T0,
        finished_at=T0,
        deleted_keys=("a.snap", "b.snap"),
    )
    result = interpret(
        job=job("Complete"), pods=[pod(message=deleted.to_json())], expected_mode="delete"
    )
    assert result.phase is JobPhase.SUCCEEDED
    assert result.report is not None
    assert result.report.deleted_keys == ("a.snap", "b.snap")
    no_check = interpret(job=job("Complete"), pods=[pod(message=deleted.to_json())])
    assert no_check.phase is JobPhase.SUCCEEDED


MALFORMED: list[object] = [
    {},
    {"status": None},
    {"status": {"conditions": None}},
    {"status": {"conditions": "Complete"}},
    {"status": {"conditions": [None, 3, "x", {"type": "Complete"}]}},
    {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": 7}]}},
    {"status": {"conditions": [{"type": "Complete", "status": "True"}]}, "spec": None},
]
MALFORMED_PODS: list[list[Any]] = [
    [],
    [None],
    [{"status": None}],
    [{"status": {"containerStatuses": None}}],
    [{"status": {"containerStatuses": [None]}}],
    [{"status": {"containerStatuses": [{"state": {"terminated": "yes"}}]}}],
    [{"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": "1"}}}]}}],
    [{"metadata": {"name": 5, "creationTimestamp": 7}, "status": {"phase": 1}}],
]


@pytest.mark.parametrize("job_obj", MALFORMED)
@pytest.mark.parametrize("pods", MALFORMED_PODS)
def test_malformed_objects_never_raise(job_obj: Any, pods: list[Any]) -> None:
    result = interpret(job=job_obj, pods=pods, expected_mode="backup")
    assert result.phase in (JobPhase.RUNNING, JobPhase.FAILED)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (None, "no termination message"),
        ("", "no termination message"),
        (42, "not a string"),
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ("[" * 100000, "longer than 4096"),
        ("[" * 4000, "unreadable report"),
        ('{"v":1}', "bad mode"),
        (json.dumps({**json.loads(OK), "outcome": "failed"}), "outcome must be 'failed'"),
        (json.dumps({**json.loads(OK), "size": "big"}), "size must be"),
        ("\x00\x01\x02 binary \u2028", "unreadable report"),
    ],
)
def test_parse_report_problems(message: object, problem: str) -> None:
    parsed, why = parse_report(message)
    assert parsed is None
    assert problem in why
    assert len(why) < 600
    assert "\x00" not in why


def test_parse_report_ok() -> None:
    parsed, why = parse_report(OK)
    assert why == ""
    assert parsed == report()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("two\nlines", "two lines"),
        ("tab\tand\x00nul", "tab and nul"),
        ("  spaced   out  ", "spaced out"),
        ("x" * 2000, "x" * (MAX_MESSAGE - 3) + "..."),
    ],
)
def test_clean(text: str, expected: str) -> None:
    assert clean(text) == expected
