"""The backup manager's decisions: pure functions from observed state to what to do.

Guarantees (enforced by the import-linter contracts in ``pyproject.toml``):

* no module here imports a Kubernetes client, aiohttp, or anything of
  :mod:`controller.backup.act`: no I/O, no clock reads; time is always a parameter and must be
  timezone-aware;
* decisions are enums and frozen dataclasses, so the steps that carry them out can be tested
  against tables of decisions, and the deciders against tables of inputs.

Modules, in the order one backup meets them:

* :mod:`.vocabulary`  every label, annotation, finalizer and phase name, defined once;
* :mod:`.timing`      every timing constant, each with its trade-off;
* :mod:`.spec`        OpenBaoCluster spec -> typed, validated values (:mod:`.validation`,
  :mod:`.addresses`: no link-local or metadata addresses);
* :mod:`.images`      which images the controller puts into a pod (the allowlist);
* :mod:`.cron`        the schedule language: cron expressions and time-zone names;
* :mod:`.windows`     a schedule's windows in its time zone, daylight-saving time;
* :mod:`.schedule`    which cron window is due, missed windows, the next window;
* :mod:`.trigger`     the manual trigger annotation and how values coalesce;
* :mod:`.records`     OpenBaoBackup records: views, the next one to launch, new bodies;
* :mod:`.names`       deterministic names of records, Jobs and the Lease;
* :mod:`.preflight`   is the OpenBao cluster safe to snapshot now;
* :mod:`.oplock`      the per-cluster Lease operation lock;
* :mod:`.jobspec`     the executor Job manifest;
* :mod:`.jobresult`   what an executor Job and its pod say happened;
* :mod:`.failures`    how an error in a reconcile step is classified and reported;
* :mod:`.retention`   which successful backups retention deletes;
* :mod:`.conditions`  status conditions as values.
"""
