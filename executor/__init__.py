"""The backup/restore/delete program run in a backup Job's pod (``python -m executor MODE``).

See ``docs/executor.md`` (rendered from :mod:`executor.contract`) for the environment
contract, the result report and exit codes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openbao-backup")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
