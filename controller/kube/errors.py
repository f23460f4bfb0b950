"""Translate foreign errors into :mod:`controller.errors`, once.

Guarantees:

* :func:`translate` is the only place in the project that knows the exception types of
  kubernetes_asyncio, aiohttp and asyncio timeouts; it maps each to exactly one class of the
  tree in :mod:`controller.errors` and never raises;
* the mapping uses the HTTP status first and the ``Status.reason`` of the body second
  (409 AlreadyExists vs. plain Conflict); bodies are parsed but never put in messages
  whole, because they can carry object data;
* an exception that is already an :class:`~controller.errors.OpenBaoBackupError` passes
  through unchanged; anything unknown becomes :class:`~controller.errors.KubeError`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from controller import errors

_BY_STATUS: dict[int, type[errors.KubeError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    422: errors.Invalid,
    429: errors.TooManyRequests,
}


def _parse_status_body(body: object) -> tuple[str, str]:
    """(reason, message) of a ``Status`` body, or empty strings."""
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", errors="replace")
    data: Any = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return "", ""
    if isinstance(data, dict) and data.get("kind") == "Status":
        return str(data.get("reason") or ""), str(data.get("message") or "")[:300]
    return "", ""


def _retry_after(headers: object) -> float | None:
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")  # type: ignore[attr-defined]
    except AttributeError:
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def from_status(status: int, *, body: object = None, headers: object = None) -> errors.KubeError:
    """The error for a non-2xx HTTP answer (``body`` may be a ``Status`` object or JSON)."""
    reason, message = _parse_status_body(body)
    text = f"HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")
    if status == 409 and reason == "AlreadyExists":
        return errors.AlreadyExists(text, status=status, reason=reason)
    if status == 429:
        return errors.TooManyRequests(
            text, status=status, reason=reason, retry_after=_retry_after(headers)
        )
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = errors.ServerError if status >= 500 else errors.BadRequest
    return cls(text, status=status, reason=reason)


def translate(exc: BaseException) -> errors.OpenBaoBackupError:
    """Map any exception raised while talking to the API server into our tree."""
    if isinstance(exc, errors.OpenBaoBackupError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:
            return errors.Unavailable(f"request failed: {exc.reason}")
        return from_status(status, body=exc.body, headers=exc.headers)
    if isinstance(exc, aiohttp.ClientResponseError):
        return from_status(exc.status, headers=exc.headers)
    # aiohttp's ServerTimeoutError/ConnectionTimeoutError derive from asyncio.TimeoutError.
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return errors.Timeout(f"timed out: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return errors.Unavailable(f"connection dropped: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        return errors.Unavailable(f"connection failed: {type(exc).__name__}: {exc}")
    return errors.KubeError(f"unexpected client error: {type(exc).__name__}: {exc}")
