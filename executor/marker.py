"""The freshness marker: written into OpenBao before a backup's snapshot, read back by a drill.

Guarantees:

* :func:`write_marker` writes ``{record, time, nonce}`` (a fresh 128-bit random nonce, the
  current UTC time in RFC 3339) to ``OBB_MARKER_PATH`` on the active node with the backup's
  token, as a KV v2 (``{"data": {...}}``) or KV v1 body, and returns the
  :class:`~executor.layout.Marker` the manifest records. It runs before the snapshot is
  requested, so a snapshot that is complete holds the marker (or a later one, never an
  earlier one). A refusal is an :class:`~executor.errors.AuthError` for 403 (the policy lacks
  create/update on the path), else a :class:`~executor.errors.SnapshotError`, transport
  failures included; nothing has been uploaded at that point;
* :func:`read_marker` reads the path back (from a drill's restored copy) and returns what is
  there, or None if nothing is; :func:`check_marker` raises a
  :class:`~executor.errors.VerificationError` whose message starts with ``marker mismatch:``
  unless the record, time and nonce all equal the manifest's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets as _random
from typing import Any

from executor.contract import MarkerSettings
from executor.errors import AuthError, SnapshotError, VerificationError
from executor.layout import Marker, rfc3339
from executor.log import get_logger
from executor.openbao import Leader, OpenBao

log = get_logger("executor.marker")


def new_marker(settings: MarkerSettings, *, record: str) -> Marker:
    return Marker(
        path=settings.path,
        kvVersion=settings.kv_version,
        record=record,
        time=rfc3339(dt.datetime.now(dt.UTC)),
        nonce=_random.token_hex(16),
    )


def _body(marker: Marker) -> dict[str, Any]:
    value = marker.value()
    return {"data": value} if marker.kvVersion == 2 else dict(value)


async def write_marker(*, bao: OpenBao, leader: Leader, marker: Marker) -> None:
    """Write ``marker`` to its path on the active node (see module doc for the errors)."""
    status, _, text = await bao.call(
        "POST",
        marker.path,
        body=_body(marker),
        base=leader.address,
        doing=f"writing the freshness marker to {marker.path}",
        transport_error=SnapshotError,
    )
    if status == 403:
        raise AuthError(
            f"permission denied writing the freshness marker to {marker.path}: the token's "
            f"policy needs create and update on it ({text})"
        )
    if status not in (200, 204):
        raise SnapshotError(
            f"writing the freshness marker to {marker.path} answered HTTP {status}: {text}"
        )
    log.info(
        "freshness marker written",
        path=marker.path,
        record=marker.record,
        time=marker.time,
        nonce=marker.nonce,
    )


async def read_marker(*, bao: OpenBao, marker: Marker, timeout: float) -> dict[str, Any] | None:
    """What ``marker.path`` holds now (the ``data`` of a KV v2 read), or None if nothing.

    Retries 5xx answers (a mount still coming up after an unseal) for up to ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, data, text = await bao.call(
            "GET",
            marker.path,
            doing=f"reading the freshness marker {marker.path}",
        )
        if status == 404:
            return None
        if status == 403:
            raise AuthError(
                f"permission denied reading the freshness marker {marker.path} in the restored "
                f"copy: the drill's login needs read on it ({text})"
            )
        if status == 200 and isinstance(data, dict):
            value = data.get("data")
            if marker.kvVersion == 2 and isinstance(value, dict):
                value = value.get("data")
            return value if isinstance(value, dict) else None
        if status < 500 or loop.time() > deadline:
            raise VerificationError(
                f"reading the freshness marker {marker.path} from the restored copy answered "
                f"HTTP {status}: {text}"
            )
        await asyncio.sleep(0.5)


def check_marker(expected: Marker, found: dict[str, Any] | None) -> None:
    """Raise ``VerificationError("marker mismatch: ...")`` unless ``found`` is ``expected``."""
    want = expected.value()
    if found is None:
        raise VerificationError(
            f"marker mismatch: the restored copy has nothing at {expected.path}; the manifest "
            f"says record={want['record']!r} time={want['time']} nonce={want['nonce']}"
        )
    got = {k: found.get(k) for k in want}
    if got != want:
        raise VerificationError(
            f"marker mismatch: the restored copy holds record={got['record']!r} "
            f"time={got['time']} nonce={got['nonce']} at {expected.path}, the manifest says "
            f"record={want['record']!r} time={want['time']} nonce={want['nonce']}: the object "
            "is not the snapshot its manifest describes"
        )
