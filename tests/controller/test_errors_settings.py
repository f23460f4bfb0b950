from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from controller import errors
from controller.kube.errors import from_status, translate
from controller.settings import Settings, parse


def api_exc(status: int, reason: str = "", headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(
        {"kind": "Status", "reason": reason, "message": "m", "code": status}
    ).encode()
    exc.headers = headers  # type: ignore[assignment]
    return exc


@pytest.mark.parametrize(
    ("status", "reason", "cls"),
    [
        (400, "BadRequest", errors.BadRequest),
        (401, "", errors.Unauthorized),
        (403, "Forbidden", errors.Forbidden),
        (404, "NotFound", errors.NotFound),
        (409, "Conflict", errors.Conflict),
        (409, "AlreadyExists", errors.AlreadyExists),
        (410, "Expired", errors.Gone),
        (418, "", errors.BadRequest),
        (422, "Invalid", errors.Invalid),
        (429, "TooManyRequests", errors.TooManyRequests),
        (500, "InternalError", errors.ServerError),
        (503, "ServiceUnavailable", errors.ServerError),
    ],
)
def test_statuses_map_to_one_class(status: int, reason: str, cls: type[errors.KubeError]) -> None:
    err = translate(api_exc(status, reason))
    assert type(err) is cls
    assert isinstance(err, errors.KubeError)
    assert err.status == status


def test_retry_after_and_retryable_flags() -> None:
    err = translate(api_exc(429, headers={"Retry-After": "3"}))
    assert isinstance(err, errors.TooManyRequests)
    assert err.retry_after == 3.0
    assert errors.Conflict("x").retryable
    assert not errors.AlreadyExists("x").retryable
    assert errors.Unavailable("x").retryable
    assert not errors.Forbidden("x").retryable


def test_foreign_errors() -> None:
    assert type(translate(TimeoutError())) is errors.Timeout
    assert type(translate(aiohttp.ServerTimeoutError("read"))) is errors.Timeout
    assert type(translate(aiohttp.ServerDisconnectedError())) is errors.Unavailable
    assert type(translate(ConnectionRefusedError())) is errors.Unavailable
    assert type(translate(ApiException(status=0, reason="boom"))) is errors.Unavailable
    assert type(translate(ValueError("x"))) is errors.KubeError
    mine = errors.TerminalError("t")
    assert translate(mine) is mine
    assert type(from_status(410, body={"kind": "Status", "code": 410})) is errors.Gone
    assert type(from_status(404, body=b"not json")) is errors.NotFound


def test_settings_defaults_are_valid() -> None:
    s = parse([], env={})
    assert s.bind_address == "127.0.0.1:8080"
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15.0, 10.0, 2.0)
    assert s.all_namespaces
    assert s.namespaces == ()
    assert s.bind_host_port == ("127.0.0.1", 8080)


def test_settings_flags_beat_env_beat_defaults() -> None:
    env = {
        "OPENBAO_BACKUP_WORKERS": "3",
        "OPENBAO_BACKUP_NAMESPACES": "a,b",
        "KUBECONFIG": "/tmp/kc",
        "POD_NAMESPACE": "ops",
        "OPENBAO_BACKUP_LEADER_ELECT": "0",
    }
    s = parse([], env=env)
    assert s.workers == 3
    assert s.namespaces == ("a", "b")
    assert s.kubeconfig == Path("/tmp/kc")
    assert s.lease_namespace == "ops"
    assert not s.leader_elect
    s = parse(
        [
            "--workers",
            "5",
            "--namespace",
            "x",
            "--namespace",
            "y,x",
            "--leader-elect",
            "--log-format",
            "console",
        ],
        env=env,
    )
    assert s.workers == 5
    assert s.namespaces == ("x", "y")
    assert s.leader_elect
    assert s.log_format == "console"
    assert parse(["--namespace", "*"], env={}).namespaces == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workers": 0},
        {"lease_duration": 10.0, "renew_deadline": 10.0},
        {"renew_deadline": 2.0, "retry_period": 2.0},
        {"bind_address": "nope"},
        {"watch_timeout_min": 700},
        {"log_format": "xml"},
        {"client_qps": 0},
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(errors.ConfigError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_settings_bad_number_in_env() -> None:
    with pytest.raises(errors.ConfigError):
        parse([], env={"OPENBAO_BACKUP_WORKERS": "many"})


def test_burst_settings_defaults_and_parse_from_flags_and_env() -> None:
    """Issue 13: spread and the per-target cap are opt-in; the global cap defaults to what the
    renewal lane (its own budget) keeps locked."""
    s = Settings()
    assert (s.schedule_spread_seconds, s.max_concurrent_backups) == (0, 0)
    assert s.max_concurrent_backups_per_target == 0 and s.lock_renew_qps == 5.0
    assert s.backup_cap == 100  # 5 renewals/s x 60 s / 3 renewals per lock duration
    got = parse(
        ["--schedule-spread-seconds", "600", "--max-concurrent-backups", "50"],
        env={
            "OPENBAO_BACKUP_MAX_CONCURRENT_BACKUPS_PER_TARGET": "10",
            "OPENBAO_BACKUP_LOCK_RENEW_QPS": "2.5",
        },
    )
    assert (got.schedule_spread_seconds, got.max_concurrent_backups) == (600, 50)
    assert (got.max_concurrent_backups_per_target, got.lock_renew_qps) == (10, 2.5)


@pytest.mark.parametrize(
    ("cap", "lock_seconds", "qps", "ok"),
    [
        (100, 60, 5.0, True),  # 100 runs x 3 renewals / 60 s = 5/s: exactly covered
        (101, 60, 5.0, False),
        (200, 120, 5.0, True),
        (200, 60, 10.0, True),
        (0, 15, 0.1, True),  # automatic cap: covered by construction
    ],
)
def test_the_renewal_budget_must_cover_the_cap(
    cap: int, lock_seconds: int, qps: float, ok: bool
) -> None:
    kwargs = {
        "max_concurrent_backups": cap,
        "operation_lock_seconds": lock_seconds,
        "lock_renew_qps": qps,
    }
    if ok:
        Settings(**kwargs)  # type: ignore[arg-type]
    else:
        with pytest.raises(errors.ConfigError, match="lock-renew-qps"):
            Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cap", "lock_seconds", "qps", "in_force"),
    [
        (0, 60, 5.0, 100),  # the defaults
        (0, 60, 10.0, 200),  # a bigger renewal budget allows more runs at once
        (0, 120, 5.0, 200),  # so does a longer lock
        (0, 15, 0.1, 1),  # never 0: one run at a time at the least
        (7, 60, 5.0, 7),  # an explicit cap is kept
    ],
)
def test_the_global_cap_defaults_to_what_the_renewal_lane_keeps_locked(
    cap: int, lock_seconds: int, qps: float, in_force: int
) -> None:
    s = Settings(
        max_concurrent_backups=cap, operation_lock_seconds=lock_seconds, lock_renew_qps=qps
    )
    assert s.backup_cap == in_force
