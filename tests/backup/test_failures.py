"""decide.failures: every exception is classified once, into exactly one kind."""

from __future__ import annotations

import pytest

from controller import errors
from controller.backup.decide.failures import Kind, Step, classify, kind_of_path
from controller.backup.decide.spec import SpecError
from controller.metrics import RECONCILE_STEPS


def _at(exc: errors.KubeError, method: str, path: str) -> errors.KubeError:
    exc.method, exc.path = method, path
    return exc


JOBS = "/apis/batch/v1/namespaces/ns/jobs"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/c-openbao-oplock"
STATUS = "/apis/backup.openbao.org/v1alpha1/namespaces/ns/openbaobackups/r/status"

CASES = [
    (errors.Conflict("stale", status=409), Kind.TRANSIENT, "Conflict", False),
    (errors.TooManyRequests("slow down"), Kind.TRANSIENT, "TooManyRequests", False),
    (errors.ServerError("etcd", status=500), Kind.TRANSIENT, "ServerError", True),
    (errors.Unavailable("refused"), Kind.TRANSIENT, "Unavailable", True),
    (errors.Timeout("read timeout"), Kind.TRANSIENT, "Timeout", True),
    (errors.Forbidden("quota", status=403), Kind.TRANSIENT, "Forbidden", False),
    (errors.NotFound("gone", status=404), Kind.TRANSIENT, "NotFound", False),
    (
        _at(errors.Invalid("labels: bad", status=422), "POST", JOBS),
        Kind.TERMINAL,
        "JobRejected",
        False,
    ),
    (_at(errors.Invalid("x", status=422), "PUT", LEASE), Kind.TERMINAL, "LeaseRejected", False),
    (
        _at(errors.BadRequest("x", status=400), "PATCH", STATUS),
        Kind.TERMINAL,
        "OpenBaoBackupRejected",
        False,
    ),
    (errors.Invalid("no path", status=422), Kind.TERMINAL, "ObjectRejected", False),
    (SpecError(["spec.backup.target: required"]), Kind.TERMINAL, "InvalidSpec", False),
    (ValueError("bad"), Kind.TERMINAL, "InvalidSpec", False),
    (TimeoutError(), Kind.TRANSIENT, "Timeout", True),
    (AttributeError("'FrozenDict' object has no attribute 'x'"), Kind.BUG, "InternalError", False),
    (OverflowError("date value out of range"), Kind.BUG, "InternalError", False),
    (errors.AlreadyExists("taken", status=409), Kind.BUG, "InternalError", False),
]


@pytest.mark.parametrize(
    ("exc", "kind", "reason", "ambiguous"),
    CASES,
    ids=[f"{type(c[0]).__name__}-{c[2]}" for c in CASES],
)
def test_classify(exc: BaseException, kind: Kind, reason: str, ambiguous: bool) -> None:
    got = classify(exc)
    assert (got.kind, got.reason, got.ambiguous) == (kind, reason, ambiguous)
    assert got.message and "\n" not in got.message and len(got.message) <= 1024


def test_a_bug_names_the_exception_class() -> None:
    got = classify(KeyError("spec"))
    assert got.message.startswith("KeyError: ")


def test_api_message_is_kept_so_the_field_is_named() -> None:
    exc = _at(
        errors.Invalid(
            'Job.batch "x" is invalid: metadata.labels: Invalid value: "a b"', status=422
        ),
        "POST",
        JOBS,
    )
    assert "metadata.labels" in classify(exc).message


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (JOBS, "Job"),
        (JOBS + "/x", "Job"),
        (LEASE, "Lease"),
        (STATUS, "OpenBaoBackup"),
        (
            "/apis/backup.openbao.org/v1alpha1/namespaces/ns/openbaoclusters/c/status",
            "OpenBaoCluster",
        ),
        ("/api/v1/namespaces/ns/pods/p?x=1", "Pod"),
        ("/weird", "Object"),
    ],
)
def test_kind_of_path(path: str, kind: str) -> None:
    assert kind_of_path(path) == kind


def test_metric_steps_are_the_reconcile_steps() -> None:
    assert tuple(s.value for s in Step) == RECONCILE_STEPS
    assert {s for s in Step if s.per_record} == {Step.LAUNCH, Step.RUNNING, Step.RESTORE}
