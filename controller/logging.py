"""Structured logging for the controller (structlog).

Guarantees:

* one call, :func:`configure`, sets the output format (``json`` for machines, ``console``
  for people) and level for structlog *and* the standard library loggers (aiohttp,
  kubernetes_asyncio), all to stderr;
* every line carries ``timestamp`` (UTC ISO 8601), ``level``, ``event``, and whatever
  context was bound (``controller``, ``namespace``, ``name``, ``key``, ...);
* object bodies and secrets are never logged: the :func:`redact` processor replaces the
  value of any key that looks like a body or a credential (``object``, ``body``, ``spec``,
  ``data``, ``token``, ``password``, ``secret``, ...) with ``"[redacted]"``. Log keys and
  names, not objects.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_REDACTED_KEYS = frozenset(
    {
        "object",
        "obj",
        "body",
        "raw",
        "spec",
        "status_body",
        "data",
        "stringdata",
        "token",
        "password",
        "secret",
        "authorization",
        "credentials",
        "key_material",
        "unseal_key",
        "root_token",
    }
)


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: hide any value whose key names a body or a credential."""
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in _REDACTED_KEYS or "secret" in lowered or "token" in lowered:
            event_dict[key] = "[redacted]"
    return event_dict


def configure(*, log_format: str = "json", level: str = "info") -> None:
    """Configure structlog and stdlib logging once, at process start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``context`` bound (e.g. ``controller="backup"``)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**context)
    return logger
