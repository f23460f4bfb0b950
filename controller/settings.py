"""All settings of the controller process, with every default in one place.

Guarantees:

* :class:`Settings` is frozen and fully typed; nothing else in the project reads flags or
  the environment;
* precedence: command-line flag > environment variable ``OPENBAO_BACKUP_<NAME>`` > default
  (the variable for ``--lease-namespace`` is ``OPENBAO_BACKUP_LEASE_NAMESPACE``; the
  kubeconfig also honours ``KUBECONFIG``, the lease namespace ``POD_NAMESPACE``);
* invalid combinations raise :class:`~controller.errors.ConfigError` at parse time, e.g. the
  leader-election timings must satisfy duration > renew deadline > 1.2 x retry period.

Bind address: the default ``127.0.0.1:8080`` suits development. In a cluster the kubelet
probes and Prometheus reach the pod IP, so the Deployment passes ``--bind-address
0.0.0.0:8080``.

Namespaces: ``--namespace a --namespace b`` (or ``OPENBAO_BACKUP_NAMESPACES=a,b``) watches
those namespaces with one reflector each; no namespace, or ``*``, watches all.

Executor images: the controller runs its own ``--executor-image`` and, besides it, only the
images of ``--executor-image-allowlist`` (repeatable and comma-separated, or
``OPENBAO_BACKUP_EXECUTOR_IMAGE_ALLOWLIST=a,b``; default: empty, so only its own image). An
entry is an exact image reference (``ghcr.io/acme/openbao-backup@sha256:<digest>``,
``ghcr.io/acme/openbao-backup:0.2.0``) or a prefix ending in ``*`` right after ``/``, ``:`` or
``@`` (``ghcr.io/acme/openbao-backup@sha256:*``, ``registry.acme.internal/openbao/*``); ``*``
alone trusts every image and turns the check off. References are compared as written. The rule
is applied by :mod:`controller.backup.decide.images`; it covers every container of every Job the
controller creates (``spec.backup.executor.image``, ``spec.backup.verify.openbaoImage``).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from controller.errors import ConfigError

LogFormat = Literal["json", "console"]
_ENV_PREFIX = "OPENBAO_BACKUP_"

LIST_PAGE_SIZE = 500
"""Objects per list page (client-go's default). A page is the transient peak of a list (its
raw JSON and parsed objects, about 10 KB each, beside the cache); smaller pages lower that
peak but cost a round trip each (66 requests for 33,000 objects at 500)."""


def _default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the controller; the defaults below are the documented defaults."""

    # Connection
    kubeconfig: Path | None = None  # None: in-cluster when KUBERNETES_SERVICE_HOST is set
    context: str | None = None
    in_cluster: bool = False
    client_qps: float = 20.0  # writes only; watches and lists are not throttled
    client_burst: int = 30
    request_timeout: float = 30.0  # total time of one non-watch request
    connect_timeout: float = 10.0

    # What to watch
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    list_page_size: int = LIST_PAGE_SIZE
    watch_timeout_min: int = 300  # server-side timeoutSeconds is random in [min, max]
    watch_timeout_max: int = 600
    watch_inactivity_timeout: float = 75.0  # client read watchdog; bookmarks arrive ~1/min
    resync_period: float = 600.0  # 0 disables periodic resync from the cache

    # Work
    workers: int = 2
    reconcile_timeout: float = 300.0
    drain_timeout: float = 30.0  # SIGTERM: how long in-flight reconciles may finish

    # Leader election (coordination.k8s.io/v1 Lease)
    leader_elect: bool = True
    lease_name: str = "openbao-backup-controller"
    lease_namespace: str = "default"
    identity: str = field(default_factory=_default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    # Backup manager
    executor_image: str = "ghcr.io/openbao-backup/openbao-backup:0.1.0"
    executor_image_allowlist: tuple[str, ...] = ()  # images trusted besides executor_image
    job_ttl_seconds: int = 86400  # finished executor Jobs are kept this long (results recorded)
    operation_lock_seconds: int = 60  # per-cluster operation Lease duration; renewed every 1/3
    # Opt-in: spread each cluster's scheduled windows over [0, N) s by a fixed per-cluster
    # offset (decide.spread); 0 = start at the window. Larger smooths bursts, delays backups.
    schedule_spread_seconds: int = 0
    # Executor Jobs running at once, over all clusters / per storage target (provider,
    # endpoint, bucket). Over all clusters 0 = as many as the renewal lane keeps locked
    # (backup_cap: 100 at the defaults); per target 0 = no cap. Waiting launches queue oldest
    # due first, never dropped.
    max_concurrent_backups: int = 0
    max_concurrent_backups_per_target: int = 0
    # Write budget of the lock-renewal lane (its own token bucket beside client_qps): must
    # cover max_concurrent_backups x 3 / operation_lock_seconds; higher costs API headroom.
    lock_renew_qps: float = 5.0

    # Observability
    bind_address: str = "127.0.0.1:8080"
    log_format: LogFormat = "json"
    log_level: str = "info"

    @property
    def backup_cap(self) -> int:
        """The global cap on running backups in force: ``max_concurrent_backups``, or (0) the
        most the renewal lane renews every third of a lock's duration,
        ``lock_renew_qps x operation_lock_seconds / 3`` (at least 1). Without it a burst of
        due clusters starts more runs than renewals can cover and their locks lapse (measured:
        1,000 of 1,000 at 5 renewals/s and 60 s locks, ``hack/bench/controller_scale.py``)."""
        if self.max_concurrent_backups:
            return self.max_concurrent_backups
        return max(1, math.floor(self.lock_renew_qps * self.operation_lock_seconds / 3))

    def __post_init__(self) -> None:
        if self.operation_lock_seconds < 15 or self.job_ttl_seconds < 60:
            raise ConfigError("operation lock must be >= 15 s and job TTL >= 60 s")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if (
            min(
                self.schedule_spread_seconds,
                self.max_concurrent_backups,
                self.max_concurrent_backups_per_target,
            )
            < 0
        ):
            raise ConfigError("spread and concurrency caps must be >= 0 (0: off)")
        if self.lock_renew_qps <= 0:
            raise ConfigError("lock renew QPS must be > 0")
        needed = self.max_concurrent_backups * 3 / self.operation_lock_seconds
        if needed > self.lock_renew_qps:
            raise ConfigError(
                f"--lock-renew-qps {self.lock_renew_qps:g} cannot renew "
                f"{self.max_concurrent_backups} running backups every "
                f"{self.operation_lock_seconds / 3:g} s (needs {needed:g}/s): raise it, or "
                "--operation-lock-seconds"
            )
        if self.client_qps <= 0 or self.client_burst < 1:
            raise ConfigError("client QPS must be > 0 and burst >= 1")
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period > 0:
            raise ConfigError(
                "leader election needs lease-duration > renew-deadline > 1.2 x retry-period > 0"
            )
        if not 0 < self.watch_timeout_min <= self.watch_timeout_max:
            raise ConfigError("watch timeouts must satisfy 0 < min <= max")
        if self.watch_inactivity_timeout <= 0 or self.reconcile_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"log format must be json or console, not {self.log_format!r}")
        for entry in self.executor_image_allowlist:
            _check_image_pattern(entry)
        self.bind_host_port  # validates  # noqa: B018

    @property
    def bind_host_port(self) -> tuple[str, int]:
        host, sep, port = self.bind_address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"bind address must be HOST:PORT, not {self.bind_address!r}")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces


def _check_image_pattern(entry: str) -> None:
    """An allowlist entry: an image reference, or a prefix ending in ``/*``, ``:*``, ``@*``."""
    if not entry or any(ch.isspace() for ch in entry):
        raise ConfigError(f"executor image allowlist entry {entry!r} is empty or has blanks")
    if "*" in entry[:-1]:
        raise ConfigError(f"executor image allowlist entry {entry!r}: '*' only at the end")
    if entry.endswith("*") and entry != "*" and entry[-2] not in "/:@":
        raise ConfigError(
            f"executor image allowlist entry {entry!r}: a prefix must end in '/*', ':*' or "
            "'@*' (e.g. ghcr.io/acme/openbao-backup@sha256:*), so it cannot also trust "
            "another repository whose name merely starts the same"
        )


def _split_list(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(dict.fromkeys(out))


def _split_namespaces(values: Sequence[str]) -> tuple[str, ...]:
    out = _split_list(values)
    return () if "*" in out else out


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def env_or(name: str, default: object) -> object:
        return env.get(_ENV_PREFIX + name.upper().replace("-", "_"), default)

    p = argparse.ArgumentParser(prog="python -m controller", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", default=env_or("kubeconfig", env.get("KUBECONFIG")))
    p.add_argument("--context", default=env_or("context", None))
    p.add_argument(
        "--in-cluster",
        action="store_true",
        default=str(env_or("in-cluster", "")).lower() in ("1", "true", "yes"),
    )
    p.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        default=None,
        help="namespace to watch (repeatable, comma-separated; '*' = all)",
    )
    for attr, typ in (
        ("client_qps", float),
        ("client_burst", int),
        ("request_timeout", float),
        ("connect_timeout", float),
        ("list_page_size", int),
        ("watch_timeout_min", int),
        ("watch_timeout_max", int),
        ("watch_inactivity_timeout", float),
        ("resync_period", float),
        ("workers", int),
        ("reconcile_timeout", float),
        ("drain_timeout", float),
        ("lease_name", str),
        ("identity", str),
        ("lease_duration", float),
        ("renew_deadline", float),
        ("retry_period", float),
        ("bind_address", str),
        ("log_level", str),
        ("executor_image", str),
        ("job_ttl_seconds", int),
        ("operation_lock_seconds", int),
        ("schedule_spread_seconds", int),
        ("max_concurrent_backups", int),
        ("max_concurrent_backups_per_target", int),
        ("lock_renew_qps", float),
    ):
        flag = "--" + attr.replace("_", "-")
        # Parsed as text: numbers are converted (with a ConfigError) in parse(), so a bad
        # environment value is reported the same way as a bad flag.
        p.add_argument(flag, default=env_or(attr, None), metavar=typ.__name__.upper())
    p.add_argument(
        "--executor-image-allowlist",
        action="append",
        default=None,
        metavar="IMAGE",
        help="an executor image to trust besides --executor-image: an exact reference, or a "
        "prefix ending in '/*', ':*' or '@*' (repeatable, comma-separated)",
    )
    p.add_argument("--lease-namespace", default=env_or("lease_namespace", env.get("POD_NAMESPACE")))
    p.add_argument("--log-format", choices=["json", "console"], default=env_or("log_format", None))
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=str(env_or("leader_elect", "true")).lower() not in ("0", "false", "no"),
    )
    return p


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``argv`` (default: ``sys.argv[1:]``) and ``env``."""
    env = os.environ if env is None else env
    parser = _parser(env)
    ns = parser.parse_args(argv)
    raw_namespaces = ns.namespaces
    if raw_namespaces is None:
        env_ns = env.get(_ENV_PREFIX + "NAMESPACES")
        raw_namespaces = [env_ns] if env_ns else []
    raw_allowlist = ns.executor_image_allowlist
    if raw_allowlist is None:
        env_allowlist = env.get(_ENV_PREFIX + "EXECUTOR_IMAGE_ALLOWLIST")
        raw_allowlist = [env_allowlist] if env_allowlist else []
    values: dict[str, object] = {"executor_image_allowlist": _split_list(raw_allowlist)}
    for key, value in vars(ns).items():
        if key in ("namespaces", "executor_image_allowlist") or value is None:
            continue
        values[key] = value
    try:
        for key in (
            "client_qps",
            "request_timeout",
            "connect_timeout",
            "watch_inactivity_timeout",
            "resync_period",
            "reconcile_timeout",
            "drain_timeout",
            "lease_duration",
            "renew_deadline",
            "retry_period",
            "lock_renew_qps",
        ):
            if key in values:
                values[key] = float(str(values[key]))
        for key in (
            "client_burst",
            "list_page_size",
            "watch_timeout_min",
            "watch_timeout_max",
            "workers",
            "job_ttl_seconds",
            "operation_lock_seconds",
            "schedule_spread_seconds",
            "max_concurrent_backups",
            "max_concurrent_backups_per_target",
        ):
            if key in values:
                values[key] = int(str(values[key]))
    except ValueError as exc:
        raise ConfigError(f"bad number in settings: {exc}") from exc
    if "kubeconfig" in values:
        values["kubeconfig"] = Path(str(values["kubeconfig"])).expanduser()
    values["namespaces"] = _split_namespaces(raw_namespaces)
    return Settings(**values)  # type: ignore[arg-type]
