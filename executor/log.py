"""Structured logging of the executor: one JSON object per line on stderr.

Guarantees:

* stdout is reserved for the result report; logs go to stderr only;
* every string in every event (keys, values, exception texts, and the records of foreign
  libraries that use :mod:`logging`) passes through :func:`executor.secrets.scrub`;
* foreign libraries log at WARNING and above only (their DEBUG output includes headers).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from executor.secrets import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: _scrub_value(v) for k, v in event.items()}


class _ForeignHandler(logging.Handler):
    """Forwards records of foreign libraries into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not crash us
            message = str(record.msg)
        structlog.get_logger(record.name).log(record.levelno, message, source=record.name)


def configure(*, level: str = "info") -> None:
    """Set up JSON logs on stderr at ``level``."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ForeignHandler()]
    root.setLevel(logging.WARNING)


def get_logger(name: str = "executor") -> Any:
    return structlog.get_logger(name)
