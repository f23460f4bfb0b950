"""The backup manager.

Guarantees of the pure deciders listed below:

* each is a pure function library: no I/O, no clock reads, no Kubernetes client; time is
  always a parameter and must be timezone-aware;
* decisions are enums and frozen dataclasses, so the reconciler that executes them can be
  tested against tables of decisions and the deciders against tables of inputs.

Pure deciders:

* :mod:`controller.backup.schedule`  which cron window (if any) is due now, missed windows,
  the next window;
* :mod:`controller.backup.names`     deterministic names of records, Jobs and the Lease;
* :mod:`controller.backup.retention` which successful backups retention deletes;
* :mod:`controller.backup.oplock`    the per-cluster Lease operation lock;
* :mod:`controller.backup.jobresult` what an executor Job and its pod say happened;
* :mod:`controller.backup.trigger`   the manual trigger annotation.
"""
