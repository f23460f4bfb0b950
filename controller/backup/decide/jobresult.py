"""What an executor Job and its pod say happened.

Guarantees:

* :func:`interpret` is pure and total: any Job/pod JSON (as cached, ``Mapping``), including
  missing fields and wrong types, gives exactly one :class:`JobResult`, never an exception;
* the Job's terminal condition decides *whether* the run ended (``Complete`` / ``Failed``
  with status ``True``); until then the result is ``RUNNING``, whatever the pod says;
* the executor's report (the termination message of ``containerStatuses[0]``, parsed with
  :meth:`executor.report.Report.from_json`) decides *what* happened. ``SUCCEEDED`` requires a
  Complete Job **and** a valid report with outcome ``succeeded`` (and the expected mode):
  a success that cannot be verified is a failure (``ReportMissing`` / ``ReportInvalid``);
* a failure's ``reason`` is the executor's error class (``configuration``, ``auth``,
  ``leader``, ``snapshot``, ``storage``, ``verification``, ``internal``) when the report or
  the exit code says it, else a Kubernetes-side reason: ``DeadlineExceeded``, ``Evicted``,
  ``Disrupted``, ``OOMKilled``, ``Killed`` (signal), ``PodDeleted``, ``PodFailed``,
  ``ReportMissing``, ``ReportInvalid``; ``LOST`` (Job gone) has reason ``JobLost``;
* messages are single-line, printable and at most :data:`MAX_MESSAGE` characters, so they can
  go into conditions, events and status as they are; a garbled termination message is never
  copied whole (a short sanitised excerpt at most).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from executor.report import EXIT_CODES, Report

MAX_TERMINATION_MESSAGE = 4096
"""The kubelet keeps at most 4096 bytes; anything longer did not come from a kubelet."""
MAX_MESSAGE = 1024
_EXCERPT = 200

EXIT_CLASSES: dict[int, str] = {code: klass for klass, code in EXIT_CODES.items()}
"""Executor exit code -> error class (0 is success)."""


class JobPhase(enum.Enum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    LOST = "Lost"  # the Job is gone and no result was recorded


class Reason:
    """Kubernetes-side failure reasons (executor error classes are used as they are)."""

    DEADLINE_EXCEEDED = "DeadlineExceeded"
    EVICTED = "Evicted"
    DISRUPTED = "Disrupted"
    OOM_KILLED = "OOMKilled"
    KILLED = "Killed"
    POD_DELETED = "PodDeleted"
    POD_FAILED = "PodFailed"
    REPORT_MISSING = "ReportMissing"
    REPORT_INVALID = "ReportInvalid"
    JOB_LOST = "JobLost"


@dataclass(frozen=True)
class JobResult:
    phase: JobPhase
    report: Report | None = None
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    pod_name: str | None = None


def clean(text: str, limit: int = MAX_MESSAGE) -> str:
    """One printable line of at most ``limit`` characters."""
    line = "".join(ch if ch.isprintable() else " " for ch in text)
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def parse_report(message: object) -> tuple[Report | None, str]:
    """``(report, "")`` or ``(None, problem)`` for a termination message."""
    if message is None or message == "":
        return None, "no termination message"
    if not isinstance(message, str):
        return None, "termination message is not a string"
    if len(message.encode("utf-8", "surrogatepass")) > MAX_TERMINATION_MESSAGE:
        return None, f"termination message longer than {MAX_TERMINATION_MESSAGE} bytes"
    try:
        return Report.from_json(message), ""
    except (ValueError, TypeError, RecursionError) as err:
        return None, f"unreadable report ({clean(str(err), 120)}): {clean(message, _EXCERPT)!r}"


def _get(obj: object, *path: str | int) -> Any:
    cur: Any = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, Sequence) or isinstance(cur, str) or len(cur) <= step:
                return None
            cur = cur[step]
        else:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(step)
    return cur


def _condition(obj: object, kind: str) -> Mapping[str, Any] | None:
    conditions = _get(obj, "status", "conditions")
    if not isinstance(conditions, Sequence) or isinstance(conditions, str):
        return None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = _get(pod, "status", "containerStatuses", 0, "state", "terminated")
    return state if isinstance(state, Mapping) else None


def _pick_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod that carries the result: a terminated one first, then the newest."""
    usable = [p for p in pods if isinstance(p, Mapping)]
    if not usable:
        return None

    def rank(pod: Mapping[str, Any]) -> tuple[bool, str, str]:
        created = _get(pod, "metadata", "creationTimestamp")
        name = _get(pod, "metadata", "name")
        return (
            _terminated(pod) is not None,
            created if isinstance(created, str) else "",
            name if isinstance(name, str) else "",
        )

    return max(usable, key=rank)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def interpret(
    *,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    expected_mode: str | None = None,
) -> JobResult:
    """The result of an executor Job. ``pods``: the Job's pods (any order, may be empty)."""
    if job is None:
        return JobResult(
            JobPhase.LOST,
            reason=Reason.JOB_LOST,
            message="the Job disappeared before its result was recorded",
        )
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    pod = _pick_pod(pods)
    pod_name = (_str(_get(pod, "metadata", "name")) or None) if pod is not None else None
    if complete is None and failed is None:
        return JobResult(JobPhase.RUNNING, pod_name=pod_name)

    terminated = _terminated(pod) if pod is not None else None
    exit_code = _int(terminated.get("exitCode")) if terminated is not None else None
    report, problem = parse_report(terminated.get("message") if terminated is not None else None)
    if report is not None and expected_mode is not None and report.mode != expected_mode:
        problem = f"report is for mode {report.mode!r}, expected {expected_mode!r}"
        report = None

    def fail(reason: str, message: str, keep_report: bool = True) -> JobResult:
        return JobResult(
            JobPhase.FAILED,
            report=report if keep_report else None,
            reason=reason,
            message=clean(message),
            exit_code=exit_code,
            pod_name=pod_name,
        )

    if complete is not None and failed is None:
        if report is None:
            reason = (
                Reason.REPORT_MISSING
                if pod is None or _is_missing(problem)
                else (Reason.REPORT_INVALID)
            )
            where = "its pod is gone" if pod is None else problem
            return fail(reason, f"the executor finished but its result cannot be verified: {where}")
        if report.error is not None:
            return fail(report.error.error_class, report.error.message)
        return JobResult(JobPhase.SUCCEEDED, report=report, exit_code=exit_code, pod_name=pod_name)

    # The Job failed.
    assert failed is not None
    job_reason = _str(failed.get("reason"))
    job_message = _str(failed.get("message"))
    detail = ""
    if report is not None and report.error is not None:
        detail = f"{report.error.error_class}: {report.error.message}"
    if job_reason == "DeadlineExceeded":
        deadline = _int(_get(job, "spec", "activeDeadlineSeconds"))
        text = "the Job exceeded its activeDeadlineSeconds"
        text += f" ({deadline}s)" if deadline is not None else ""
        return fail(Reason.DEADLINE_EXCEEDED, f"{text}; {detail}" if detail else text)
    if report is not None:
        if report.error is not None:
            return fail(report.error.error_class, report.error.message)
        return fail(
            Reason.REPORT_INVALID,
            f"the report says succeeded but the Job failed (exit code {exit_code})",
            keep_report=False,
        )
    if pod is None:
        return fail(
            Reason.POD_DELETED,
            f"the Job failed without a pod ({job_reason or 'no reason'}"
            + (f": {job_message}" if job_message else "")
            + "); the pod was deleted or never ran",
        )
    pod_reason = _str(_get(pod, "status", "reason"))
    pod_message = _str(_get(pod, "status", "message"))
    if pod_reason == "Evicted":
        return fail(Reason.EVICTED, f"the pod was evicted: {pod_message or 'no message'}")
    disruption = _condition(pod, "DisruptionTarget")
    if disruption is not None and terminated is None:
        return fail(
            Reason.DISRUPTED,
            f"the pod was disrupted ({_str(disruption.get('reason'))}): "
            f"{_str(disruption.get('message')) or 'no message'}",
        )
    if terminated is None:
        return fail(
            Reason.POD_FAILED,
            f"the pod failed without a container result ({pod_reason or job_reason or '?'}"
            + (f": {pod_message}" if pod_message else "")
            + ")",
        )
    if _str(terminated.get("reason")) == "OOMKilled":
        return fail(Reason.OOM_KILLED, "the executor ran out of memory (OOMKilled)")
    if exit_code is not None and exit_code in EXIT_CLASSES and exit_code != 0:
        return fail(EXIT_CLASSES[exit_code], f"exit code {exit_code}; {problem}")
    if exit_code is not None and exit_code >= 128:
        return fail(Reason.KILLED, f"the executor was killed by signal {exit_code - 128}")
    return fail(
        "internal",
        f"the executor failed with exit code {exit_code}; {problem}",
    )


def _is_missing(problem: str) -> bool:
    return problem == "no termination message"
