"""The result report: what the executor tells the controller, as its termination message.

Guarantees:

* the JSON has exactly these fields (schema version 1)::

    {"v": 1, "mode": "backup|restore|delete|verify|drill", "outcome": "succeeded|failed",
     "key": str|null, "manifestKey": str|null, "size": int|null, "sha256": str|null,
     "startedAt": RFC3339, "finishedAt": RFC3339, "durationSeconds": float,
     "openbaoVersion": str|null, "raftIndex": int|null, "raftTerm": int|null,
     "deletedKeys": [str]|null,
     "error": {"class": "configuration|auth|leader|snapshot|storage|verification|internal",
               "message": str} | null,
     "marker": {"path": str, "kvVersion": 1|2, "record": str, "time": RFC3339,
                "nonce": str}                                      (only when set),
     "drill": {"unsealed": bool, "markerChecked": bool, "markerMatched": bool|null,
               "partial": bool}                                    (only in drill mode),
     "cleaned": {"uploads": int, "keys": [str], "error": str|null}
                                                   (backup on S3/Azure, only when set)}

* ``outcome == "succeeded"`` if and only if ``error`` is null;
* for a backup, ``key``/``manifestKey`` name the objects written; when a backup failed,
  ``key`` is the key that was attempted (nothing is left there unless ``error.message`` says
  so) and ``manifestKey`` is null; for a restore, ``key`` is the snapshot restored; for a
  verify, ``key`` is the snapshot checked and ``manifestKey``, ``size``, ``sha256``,
  ``raftIndex``, ``raftTerm`` and ``openbaoVersion`` are its manifest's (``outcome`` says
  whether the object matched them; they are null when no manifest could be read); for a
  delete, ``deletedKeys`` lists the snapshot keys now absent (deleted or already gone);
* ``marker`` (backup: the freshness marker written before the snapshot; drill: the marker the
  manifest promises) and ``drill`` (what a restore drill proved) are present only when set;
* ``cleaned`` (backup, when the provider can list unfinished uploads: S3, Azure) says what the
  backup removed before it began uploading: ``uploads`` unfinished uploads of earlier runs of
  the same cluster (S3: multipart uploads aborted; Azure: blobs with only uncommitted blocks
  deleted), started before this run, under the cluster's prefix; ``keys`` names at most
  :data:`CLEANED_KEYS_MAX` of them; ``error`` says why the cleanup stopped early (it never
  fails the backup);
* :meth:`Report.to_json` is ASCII-only and at most :data:`MAX_BYTES` bytes (the kubelet keeps
  4096): ``cleaned.keys`` is dropped first (the count stays), then the error message is
  shortened, then ``deletedKeys`` (with a note in the message), so the text always parses;
* :meth:`Report.from_json` ignores unknown fields and rejects wrong types, except in
  ``cleaned``, which is informational: a malformed ``cleaned`` is ignored (read as absent),
  never a reason to reject a report;
* :data:`EXIT_CODES` maps the error class to the process exit code (0 when succeeded);
* progress is a second, best-effort channel on the log (stderr, one JSON object per line):
  while a backup streams, a line with ``"event": PROGRESS_EVENT`` and the integer fields
  ``bytes`` (streamed so far) and ``bytes_per_second`` at most every
  :data:`PROGRESS_INTERVAL` seconds, and one with ``"event": STREAMED_EVENT`` (the same fields
  plus ``seconds``) when the stream ends; ``kubectl openbao-backup backup --wait`` follows
  them.

Everything public is importable from ``executor.report``; the modules:
:mod:`~executor.report.document` (:class:`Report`: its fields, the size cap, parsing),
:mod:`~executor.report.fields` (the nested ``error``, ``drill`` and ``cleaned`` objects),
:mod:`~executor.report.exit_codes` (:data:`EXIT_CODES`) and
:mod:`~executor.report.progress_log` (the progress log events). They import nothing but the
standard library, :mod:`executor.errors` and :mod:`executor.layout`.
"""

from __future__ import annotations

from executor.report.document import MAX_BYTES, REPORT_VERSION, Outcome, Report, ReportMode
from executor.report.exit_codes import EXIT_CODES, EXIT_OK
from executor.report.fields import (
    CLEANED_ERROR_MAX,
    CLEANED_KEYS_MAX,
    Cleaned,
    DrillResult,
    ReportError,
)
from executor.report.progress_log import PROGRESS_EVENT, PROGRESS_INTERVAL, STREAMED_EVENT

__all__ = [
    "CLEANED_ERROR_MAX",
    "CLEANED_KEYS_MAX",
    "EXIT_CODES",
    "EXIT_OK",
    "MAX_BYTES",
    "PROGRESS_EVENT",
    "PROGRESS_INTERVAL",
    "REPORT_VERSION",
    "STREAMED_EVENT",
    "Cleaned",
    "DrillResult",
    "Outcome",
    "Report",
    "ReportError",
    "ReportMode",
]
