"""Every Prometheus metric of the controller process, in one catalog.

Guarantees:

* this module is the only place that creates metrics; everything is registered in
  :data:`REGISTRY` (not the global default registry), which ``/metrics`` serves;
* ``_created`` series are disabled (:func:`prometheus_client.disable_created_metrics`);
* every label series whose values are known in advance is created at zero when its owner
  is created (a queue, a controller, an informer, a supervised task), so rates and alerts
  work from the first scrape;
* the helpers below are the *only* way other modules touch metrics; they take plain
  values, so lower layers (queue, cache) depend on small protocols, not on Prometheus.

Catalog (add new metrics to the table and to the section that owns them):

=============================================== ========= ============================
name                                            type      labels
=============================================== ========= ============================
workqueue_depth                                 gauge     name
workqueue_adds_total                            counter   name
workqueue_queue_duration_seconds                histogram name
workqueue_work_duration_seconds                 histogram name
workqueue_unfinished_work_seconds               gauge     name (computed at scrape)
workqueue_longest_running_processor_seconds     gauge     name (computed at scrape)
workqueue_retries_total                         counter   name
controller_runtime_reconcile_total              counter   controller, result
controller_runtime_reconcile_errors_total       counter   controller
controller_runtime_terminal_reconcile_errors_total counter controller
controller_runtime_reconcile_unexpected_errors_total counter controller
controller_runtime_reconcile_time_seconds       histogram controller
controller_runtime_active_workers               gauge     controller
controller_runtime_max_concurrent_reconciles    gauge     controller
informer_events_total                           counter   resource, type
informer_lists_total                            counter   resource, reason
informer_watch_restarts_total                   counter   resource, reason
informer_synced                                 gauge     resource
informer_objects                                gauge     resource
leader_election_master_status                   gauge     name
supervisor_task_restarts_total                  counter   task
rest_client_requests_total                      counter   method, code
rest_client_rate_limiter_wait_seconds           histogram method
openbao_backup_last_success_timestamp_seconds   gauge     namespace, cluster (0: never)
openbao_backup_age_seconds                      gauge     namespace, cluster (computed at scrape)
openbao_backup_duration_seconds                 histogram namespace, cluster
openbao_backup_last_size_bytes                  gauge     namespace, cluster
openbao_backup_success_total                    counter   namespace, cluster
openbao_backup_failure_total                    counter   namespace, cluster, reason
openbao_backup_consecutive_failures             gauge     namespace, cluster
openbao_backup_in_progress                      gauge     namespace, cluster
openbao_backup_retention_deleted_total          counter   namespace, cluster
openbao_backup_missed_schedules_total           counter   namespace, cluster
openbao_backup_lock_held_seconds                gauge     namespace, cluster (computed at scrape)
openbao_backup_preflight_blocked                gauge     namespace, cluster
openbao_backup_queued                           gauge     (none: all clusters)
openbao_backup_config_valid                     gauge     namespace, cluster
openbao_backup_schedule_interval_seconds        gauge     namespace, cluster
openbao_backup_suspended                        gauge     namespace, cluster
openbao_backup_last_verified_timestamp_seconds  gauge     namespace, cluster (0: never)
openbao_backup_verify_enabled                   gauge     namespace, cluster
openbao_backup_verification_failures_total      counter   namespace, cluster, reason
openbao_restore_duration_seconds                histogram namespace, cluster
openbao_restore_last_success_timestamp_seconds  gauge     namespace, cluster (0: never)
openbao_restore_failures_total                  counter   namespace, cluster, reason
openbao_restore_in_progress                     gauge     namespace, cluster
process_* (resident memory, CPU, fds)           ...       (prometheus ProcessCollector)
=============================================== ========= ============================

``result`` of a reconcile is one of ``success``, ``error``, ``requeue``, ``requeue_after``.

Backup manager (prefixes ``openbao_backup_``, ``openbao_restore_``): every series of a
cluster (backups, restores, restore drills, every reason label) is created at zero when the
cluster is first reconciled, and removed when the cluster is deleted. On that first reconcile
(after a start, a restart or a leader failover) the gauges about the past are restored from
the API's state (:mod:`controller.backup.act.metric_state`): last success, consecutive
failures, size, the last passed drill, the last successful restore, and ``lock_held_seconds``
of a backup that still runs (from its Lease's ``acquireTime``). ``age_seconds`` is
``now - last success``, or ``now - the cluster's creation`` while it has never succeeded,
so a backup-age alert also fires for a cluster that never had a good backup. ``reason`` of a
failure is the executor's error class, or ``ExecutorImageNotAllowed`` for a run the controller
refused to start because its spec names an untrusted image (:data:`BACKUP_FAILURE_REASONS`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

# client-go's workqueue buckets: 10 ns .. 10^9 x 10 ns (= 10 s) and beyond.
_QUEUE_BUCKETS = tuple(10e-9 * 10**i for i in range(10))
# controller-runtime's reconcile-time buckets.
_RECONCILE_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    3.5,
    4.0,
    4.5,
    5,
    6,
    7,
    8,
    9,
    10,
    15,
    20,
    25,
    30,
    40,
    50,
    60,
)

# --- workqueue (controller.queue.workqueue) ----------------------------------------------
WORKQUEUE_DEPTH = Gauge(
    "workqueue_depth", "Current depth of the workqueue.", ["name"], registry=REGISTRY
)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total", "Adds handled by the workqueue.", ["name"], registry=REGISTRY
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "Seconds an item stays in the workqueue before being requested.",
    ["name"],
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "Seconds processing an item from the workqueue takes.",
    ["name"],
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED = Gauge(
    "workqueue_unfinished_work_seconds",
    "Seconds of work in progress not yet observed by work_duration (stuck threads show here).",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST = Gauge(
    "workqueue_longest_running_processor_seconds",
    "Seconds the longest running processor of the workqueue has been running.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total", "Retries handled by the workqueue.", ["name"], registry=REGISTRY
)


class WorkqueueMetrics:
    """Prometheus implementation of the workqueue's metrics hooks for one queue ``name``."""

    def __init__(self, name: str) -> None:
        self._depth = WORKQUEUE_DEPTH.labels(name)
        self._adds = WORKQUEUE_ADDS.labels(name)
        self._latency = WORKQUEUE_QUEUE_DURATION.labels(name)
        self._work = WORKQUEUE_WORK_DURATION.labels(name)
        self._retries = WORKQUEUE_RETRIES.labels(name)
        self._unfinished = WORKQUEUE_UNFINISHED.labels(name)
        self._longest = WORKQUEUE_LONGEST.labels(name)
        self._depth.set(0)

    def add(self) -> None:
        self._adds.inc()

    def set_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def observe_queue_duration(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def observe_work_duration(self, seconds: float) -> None:
        self._work.observe(seconds)

    def retry(self) -> None:
        self._retries.inc()

    def watch_in_flight(
        self, *, unfinished: Callable[[], float], longest: Callable[[], float]
    ) -> None:
        """Compute the two in-flight gauges at scrape time from the queue's state."""
        self._unfinished.set_function(unfinished)
        self._longest.set_function(longest)


# --- reconcile runner (controller.runner) --------------------------------------------------
RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller.",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller.",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TERMINAL = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Reconciliation errors that are not retried (TerminalError).",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_UNEXPECTED = Counter(
    "controller_runtime_reconcile_unexpected_errors_total",
    "Reconciles that raised an exception outside the project's error tree (a bug).",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller.",
    ["controller"],
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller.",
    ["controller"],
    registry=REGISTRY,
)
MAX_WORKERS = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller.",
    ["controller"],
    registry=REGISTRY,
)


class ReconcileMetrics:
    """The runner's metrics for one controller, all series pre-created at zero."""

    def __init__(self, controller: str, *, workers: int) -> None:
        self._total = {r: RECONCILE_TOTAL.labels(controller, r) for r in RECONCILE_RESULTS}
        self._errors = RECONCILE_ERRORS.labels(controller)
        self._terminal = RECONCILE_TERMINAL.labels(controller)
        self._unexpected = RECONCILE_UNEXPECTED.labels(controller)
        self._time = RECONCILE_TIME.labels(controller)
        self._active = ACTIVE_WORKERS.labels(controller)
        self._active.set(0)
        MAX_WORKERS.labels(controller).set(workers)

    def result(self, result: str, *, seconds: float) -> None:
        self._total[result].inc()
        self._time.observe(seconds)

    def error(self, *, terminal: bool = False, unexpected: bool = False) -> None:
        self._errors.inc()
        if terminal:
            self._terminal.inc()
        if unexpected:
            self._unexpected.inc()

    def worker_started(self) -> None:
        self._active.inc()

    def worker_finished(self) -> None:
        self._active.dec()


# --- informers (controller.cache) ---------------------------------------------------------
INFORMER_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")
INFORMER_LIST_REASONS = ("initial", "gone", "error")
INFORMER_RESTART_REASONS = ("closed", "stalled", "error", "gone", "short")
INFORMER_EVENTS = Counter(
    "informer_events_total", "Watch events received.", ["resource", "type"], registry=REGISTRY
)
INFORMER_LISTS = Counter(
    "informer_lists_total",
    "Full lists (initial or relist) by reason.",
    ["resource", "reason"],
    registry=REGISTRY,
)
INFORMER_RESTARTS = Counter(
    "informer_watch_restarts_total",
    "Watch restarts by reason.",
    ["resource", "reason"],
    registry=REGISTRY,
)
INFORMER_SYNCED = Gauge(
    "informer_synced",
    "1 once the informer's first list is in the cache.",
    ["resource"],
    registry=REGISTRY,
)
INFORMER_OBJECTS = Gauge(
    "informer_objects", "Objects in the informer's cache.", ["resource"], registry=REGISTRY
)


class InformerMetrics:
    """Metrics of one informer (``resource`` is its display name, e.g. ``jobs.batch``)."""

    def __init__(self, resource: str) -> None:
        self._events = {t: INFORMER_EVENTS.labels(resource, t) for t in INFORMER_EVENT_TYPES}
        self._lists = {r: INFORMER_LISTS.labels(resource, r) for r in INFORMER_LIST_REASONS}
        self._restarts = {
            r: INFORMER_RESTARTS.labels(resource, r) for r in INFORMER_RESTART_REASONS
        }
        self._synced = INFORMER_SYNCED.labels(resource)
        self._objects = INFORMER_OBJECTS.labels(resource)
        self._synced.set(0)

    def event(self, event_type: str) -> None:
        counter = self._events.get(event_type)
        if counter is not None:
            counter.inc()

    def listed(self, reason: str) -> None:
        self._lists[reason].inc()

    def watch_restarted(self, reason: str) -> None:
        self._restarts[reason].inc()

    def set_synced(self, synced: bool) -> None:
        self._synced.set(1 if synced else 0)

    def set_objects(self, count: int) -> None:
        self._objects.set(count)


# --- leader election (controller.leaderelection) -----------------------------------------
LEADER_STATUS = Gauge(
    "leader_election_master_status",
    "1 while this process holds the lease, else 0.",
    ["name"],
    registry=REGISTRY,
)


def set_leader(name: str, *, leading: bool) -> None:
    LEADER_STATUS.labels(name).set(1 if leading else 0)


# --- supervisor (controller.health) -------------------------------------------------------
TASK_RESTARTS = Counter(
    "supervisor_task_restarts_total",
    "Supervised tasks that died and were restarted.",
    ["task"],
    registry=REGISTRY,
)


def task_registered(task: str) -> None:
    TASK_RESTARTS.labels(task)


def task_restarted(task: str) -> None:
    TASK_RESTARTS.labels(task).inc()


# --- REST client (controller.kube.client) -------------------------------------------------
REST_REQUESTS = Counter(
    "rest_client_requests_total",
    "API server requests by method and code.",
    ["method", "code"],
    registry=REGISTRY,
)
REST_RATE_LIMIT_WAIT = Histogram(
    "rest_client_rate_limiter_wait_seconds",
    "Seconds writes waited for the client QPS limit.",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
    registry=REGISTRY,
)


def rest_request(*, method: str, code: int | str) -> None:
    REST_REQUESTS.labels(method, str(code)).inc()


def rest_rate_limited(*, method: str, seconds: float) -> None:
    REST_RATE_LIMIT_WAIT.labels(method).observe(seconds)


# --- backup manager (controller.reconcilers.backups) ---------------------------------------
BACKUP_FAILURE_REASONS = (
    "configuration",
    "auth",
    "leader",
    "snapshot",
    "storage",
    "verification",
    "internal",
    "deadline",
    "lost",
    "ExecutorImageNotAllowed",  # the spec names an image the controller does not trust
)
_CL = ["namespace", "cluster"]
BACKUP_LAST_SUCCESS = Gauge(
    "openbao_backup_last_success_timestamp_seconds",
    "Unix time the newest successful backup completed (0: never).",
    _CL,
    registry=REGISTRY,
)
BACKUP_AGE = Gauge(
    "openbao_backup_age_seconds",
    "Seconds since the newest successful backup (since the cluster was created if none).",
    _CL,
    registry=REGISTRY,
)
BACKUP_DURATION = Histogram(
    "openbao_backup_duration_seconds",
    "Duration of finished backup runs (executor timing).",
    _CL,
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
BACKUP_LAST_SIZE = Gauge(
    "openbao_backup_last_size_bytes",
    "Size of the newest successful snapshot.",
    _CL,
    registry=REGISTRY,
)
BACKUP_SUCCESS = Counter(
    "openbao_backup_success_total", "Successful backups.", _CL, registry=REGISTRY
)
BACKUP_FAILURE = Counter(
    "openbao_backup_failure_total", "Failed backups by reason.", [*_CL, "reason"], registry=REGISTRY
)
BACKUP_CONSECUTIVE_FAILURES = Gauge(
    "openbao_backup_consecutive_failures",
    "Failed backups since the last success.",
    _CL,
    registry=REGISTRY,
)
BACKUP_IN_PROGRESS = Gauge(
    "openbao_backup_in_progress",
    "1 while a backup Job of the cluster runs.",
    _CL,
    registry=REGISTRY,
)
BACKUP_RETENTION_DELETED = Counter(
    "openbao_backup_retention_deleted_total",
    "Backups deleted by retention.",
    _CL,
    registry=REGISTRY,
)
BACKUP_MISSED = Counter(
    "openbao_backup_missed_schedules_total",
    "Schedule windows that did not run.",
    _CL,
    registry=REGISTRY,
)
BACKUP_LOCK_HELD = Gauge(
    "openbao_backup_lock_held_seconds",
    "Seconds the backup manager has held the cluster's operation lock (0: not held).",
    _CL,
    registry=REGISTRY,
)
BACKUP_PREFLIGHT_BLOCKED = Gauge(
    "openbao_backup_preflight_blocked",
    "1 while a due backup waits on a failed preflight.",
    _CL,
    registry=REGISTRY,
)
BACKUP_CONFIG_VALID = Gauge(
    "openbao_backup_config_valid",
    "1 while the cluster's backup spec is valid (schedule, time zone, target, auth); 0 while "
    "backups cannot run because of it (ConfigValid=False).",
    _CL,
    registry=REGISTRY,
)
BACKUP_SCHEDULE_INTERVAL = Gauge(
    "openbao_backup_schedule_interval_seconds",
    "Longest gap between two consecutive windows of the cluster's schedule (0: no schedule, "
    "manual backups only); the backup-age alert compares the age with it.",
    _CL,
    registry=REGISTRY,
)
BACKUP_SUSPENDED = Gauge(
    "openbao_backup_suspended",
    "1 while the cluster's scheduled backups are suspended (spec.backup.suspend).",
    _CL,
    registry=REGISTRY,
)
_BACKUP_PLAIN = (
    BACKUP_SCHEDULE_INTERVAL,
    BACKUP_SUSPENDED,
    BACKUP_LAST_SUCCESS,
    BACKUP_AGE,
    BACKUP_DURATION,
    BACKUP_LAST_SIZE,
    BACKUP_SUCCESS,
    BACKUP_CONSECUTIVE_FAILURES,
    BACKUP_IN_PROGRESS,
    BACKUP_RETENTION_DELETED,
    BACKUP_MISSED,
    BACKUP_LOCK_HELD,
    BACKUP_PREFLIGHT_BLOCKED,
    BACKUP_CONFIG_VALID,
)

RESTORE_DURATION = Histogram(
    "openbao_restore_duration_seconds",
    "Duration of finished restores (validation to verified).",
    _CL,
    buckets=(5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)
RESTORE_LAST_SUCCESS = Gauge(
    "openbao_restore_last_success_timestamp_seconds",
    "Unix time the newest successful restore completed (0: never).",
    _CL,
    registry=REGISTRY,
)
RESTORE_FAILURE = Counter(
    "openbao_restore_failures_total",
    "Failed restores by reason.",
    [*_CL, "reason"],
    registry=REGISTRY,
)
RESTORE_IN_PROGRESS = Gauge(
    "openbao_restore_in_progress",
    "1 while a restore of the cluster is in progress.",
    _CL,
    registry=REGISTRY,
)
VERIFY_LAST = Gauge(
    "openbao_backup_last_verified_timestamp_seconds",
    "Unix time of the newest restore drill that passed (0: never).",
    _CL,
    registry=REGISTRY,
)
VERIFY_ENABLED = Gauge(
    "openbao_backup_verify_enabled",
    "1 when spec.backup.verify schedules restore drills for the cluster.",
    _CL,
    registry=REGISTRY,
)
VERIFY_FAILURE = Counter(
    "openbao_backup_verification_failures_total",
    "Failed restore drills by reason.",
    [*_CL, "reason"],
    registry=REGISTRY,
)
VERIFY_FAILURE_REASONS = (
    "MarkerMismatch",
    "UnsealKeysMissing",
    "verification",
    "storage",
    "auth",
    "snapshot",
    "configuration",
    "DeadlineExceeded",
    "internal",
)
_HISTORY_PLAIN = (
    RESTORE_DURATION,
    RESTORE_LAST_SUCCESS,
    RESTORE_IN_PROGRESS,
    VERIFY_LAST,
    VERIFY_ENABLED,
)
"""The restore and drill series of a cluster without a reason label, created at zero with it."""
RESTORE_FAILURE_REASONS = (
    "ClusterNotFound",
    "InvalidSpec",
    "BackupNotFound",
    "BackupNotSucceeded",
    "InvalidKey",
    "KeyOutsidePrefix",
    "verification",
    "storage",
    "SafetySnapshotFailed",
    "auth",
    "leader",
    "snapshot",
    "VerifyTimeout",
    "ExecutorImageNotAllowed",
    "AddressNotAllowed",  # a storage endpoint the executor must not contact
    "internal",
)

RECONCILE_STEPS = (
    "deletion",
    "running",
    "finish",
    "restore",
    "drill",
    "schedule",
    "trigger",
    "launch",
    "bookkeeping",
    "renewal",  # the lock renewal path (controller.backup.act.renewer), off the workqueue
)
RECONCILE_ERROR_KINDS = ("transient", "terminal", "bug")
RECONCILE_STEP_ERRORS = Counter(
    "openbao_backup_reconcile_errors_total",
    "Failed backup-manager reconcile steps, by step and kind (transient: retried; terminal: "
    "the record failed; bug: an unexpected exception, the record failed as InternalError).",
    ["step", "kind"],
    registry=REGISTRY,
)
for _step in RECONCILE_STEPS:
    for _kind in RECONCILE_ERROR_KINDS:
        RECONCILE_STEP_ERRORS.labels(_step, _kind)


BACKUP_QUEUED = Gauge(
    "openbao_backup_queued",
    "Backups that passed every check but wait for an executor slot (the global or per-target "
    "cap on running Jobs); served oldest due first.",
    registry=REGISTRY,
)


def set_queued(count: int) -> None:
    BACKUP_QUEUED.set(count)


def reconcile_step_error(*, step: str, kind: str) -> None:
    RECONCILE_STEP_ERRORS.labels(step, kind).inc()


class BackupMetrics:
    """The backup metrics of one cluster; created at zero, removed with :meth:`remove`."""

    def __init__(
        self, *, namespace: str, cluster: str, created: float, now: Callable[[], float]
    ) -> None:
        self._labels = (namespace, cluster)
        self._created = created
        self._now = now
        self._last_success = 0.0
        self._lock_since: float | None = None
        for metric in (*_BACKUP_PLAIN, *_HISTORY_PLAIN):
            metric.labels(*self._labels)
        BACKUP_CONFIG_VALID.labels(*self._labels).set(1)
        for reason in BACKUP_FAILURE_REASONS:
            BACKUP_FAILURE.labels(*self._labels, reason)
        for reason in RESTORE_FAILURE_REASONS:
            RESTORE_FAILURE.labels(*self._labels, reason)
        for reason in VERIFY_FAILURE_REASONS:
            VERIFY_FAILURE.labels(*self._labels, reason)
        BACKUP_AGE.labels(*self._labels).set_function(self._age)
        BACKUP_LOCK_HELD.labels(*self._labels).set_function(self._lock_held)

    def _age(self) -> float:
        return max(0.0, self._now() - (self._last_success or self._created))

    def _lock_held(self) -> float:
        return 0.0 if self._lock_since is None else max(0.0, self._now() - self._lock_since)

    def restore_state(
        self, *, last_success: float | None, consecutive_failures: int, last_size: int | None
    ) -> None:
        """Gauges from the cluster's status after a controller (re)start."""
        if last_success:
            self._last_success = last_success
            BACKUP_LAST_SUCCESS.labels(*self._labels).set(last_success)
        BACKUP_CONSECUTIVE_FAILURES.labels(*self._labels).set(consecutive_failures)
        if last_size is not None:
            BACKUP_LAST_SIZE.labels(*self._labels).set(last_size)

    def restore_history(
        self,
        *,
        last_verified: float | None,
        last_restore: float | None,
        lock_held_since: float | None,
    ) -> None:
        """What a new process cannot have seen, from the API's state (first reconcile of the
        cluster after a start or failover): the last passed drill, the last successful
        restore, and since when the lock has been held for a backup that still runs."""
        if last_verified:
            VERIFY_LAST.labels(*self._labels).set(last_verified)
        if last_restore:
            RESTORE_LAST_SUCCESS.labels(*self._labels).set(last_restore)
        if lock_held_since is not None:
            self._lock_since = lock_held_since

    def succeeded(self, *, completed: float, duration: float, size: int) -> None:
        self._last_success = completed
        BACKUP_LAST_SUCCESS.labels(*self._labels).set(completed)
        BACKUP_DURATION.labels(*self._labels).observe(duration)
        BACKUP_LAST_SIZE.labels(*self._labels).set(size)
        BACKUP_SUCCESS.labels(*self._labels).inc()
        BACKUP_CONSECUTIVE_FAILURES.labels(*self._labels).set(0)

    def failed(self, *, reason: str, duration: float | None, consecutive: int) -> None:
        label = reason if reason in BACKUP_FAILURE_REASONS else "internal"
        BACKUP_FAILURE.labels(*self._labels, label).inc()
        if duration is not None:
            BACKUP_DURATION.labels(*self._labels).observe(duration)
        BACKUP_CONSECUTIVE_FAILURES.labels(*self._labels).set(consecutive)

    def in_progress(self, running: bool) -> None:
        BACKUP_IN_PROGRESS.labels(*self._labels).set(1 if running else 0)

    def lock(self, *, held_since: float | None) -> None:
        self._lock_since = held_since

    def preflight_blocked(self, blocked: bool) -> None:
        BACKUP_PREFLIGHT_BLOCKED.labels(*self._labels).set(1 if blocked else 0)

    def verify_enabled(self, enabled: bool) -> None:
        VERIFY_ENABLED.labels(*self._labels).set(1 if enabled else 0)

    def verified(self, *, at: float) -> None:
        VERIFY_LAST.labels(*self._labels).set(at)

    def verification_failed(self, *, reason: str) -> None:
        label = reason if reason in VERIFY_FAILURE_REASONS else "internal"
        VERIFY_FAILURE.labels(*self._labels, label).inc()

    def restore_in_progress(self, active: bool) -> None:
        RESTORE_IN_PROGRESS.labels(*self._labels).set(1 if active else 0)

    def restore_succeeded(self, *, completed: float, duration: float) -> None:
        RESTORE_LAST_SUCCESS.labels(*self._labels).set(completed)
        RESTORE_DURATION.labels(*self._labels).observe(duration)

    def restore_failed(self, *, reason: str) -> None:
        label = reason if reason in RESTORE_FAILURE_REASONS else "internal"
        RESTORE_FAILURE.labels(*self._labels, label).inc()

    def schedule(self, *, interval: float, suspended: bool) -> None:
        BACKUP_SCHEDULE_INTERVAL.labels(*self._labels).set(interval)
        BACKUP_SUSPENDED.labels(*self._labels).set(1 if suspended else 0)

    def config_valid(self, valid: bool) -> None:
        BACKUP_CONFIG_VALID.labels(*self._labels).set(1 if valid else 0)

    def missed(self, count: int) -> None:
        if count > 0:
            BACKUP_MISSED.labels(*self._labels).inc(count)

    def retention_deleted(self, count: int) -> None:
        if count > 0:
            BACKUP_RETENTION_DELETED.labels(*self._labels).inc(count)

    def remove(self) -> None:
        for metric in (*_BACKUP_PLAIN, *_HISTORY_PLAIN):
            with contextlib.suppress(KeyError):
                metric.remove(*self._labels)
        for reason in BACKUP_FAILURE_REASONS:
            with contextlib.suppress(KeyError):
                BACKUP_FAILURE.remove(*self._labels, reason)
        for reason in RESTORE_FAILURE_REASONS:
            with contextlib.suppress(KeyError):
                RESTORE_FAILURE.remove(*self._labels, reason)
        for reason in VERIFY_FAILURE_REASONS:
            with contextlib.suppress(KeyError):
                VERIFY_FAILURE.remove(*self._labels, reason)


def exposition() -> tuple[bytes, str]:
    """The text exposition of :data:`REGISTRY` and its content type."""
    return prometheus_client.generate_latest(REGISTRY), prometheus_client.CONTENT_TYPE_LATEST
