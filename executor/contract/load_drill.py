"""Loading the drill settings, and the unseal keys file a drill reads.

Guarantees:

* :func:`load_drill` accepts only a loopback ``OBB_DRILL_ADDR`` (the scratch server in the
  drill's own pod): a drill never talks to another OpenBao; ``OBB_DRILL_DONE_FILE``'s
  directory must exist; every problem goes to the :class:`~executor.contract.reader.Reader`;
* :func:`parse_unseal_keys` registers every key with :mod:`executor.secrets` before it checks
  any, never quotes a key in its errors, and returns the keys once each, in file order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from executor import secrets
from executor.contract.config import DrillSettings, OpenBaoSettings
from executor.contract.reader import Reader, check_key_shape
from executor.contract.vars_modes import (
    DRILL_ADDR,
    DRILL_AUTO_UNSEAL,
    DRILL_DONE_FILE,
    DRILL_KEY,
    DRILL_START_TIMEOUT,
    UNSEAL_KEYS_FILE,
)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def load_drill(r: Reader, openbao: OpenBaoSettings | None) -> DrillSettings:
    """The drill section; ``openbao`` is the scratch server's (read from ``OBB_DRILL_ADDR``)."""
    key = r.text(DRILL_KEY, required=True) or ""
    if key:
        check_key_shape(r, DRILL_KEY, key)
    addr = openbao.addr if openbao is not None else ""
    host = urlsplit(addr).hostname if addr else None
    if addr and host not in _LOOPBACK:
        r.problem(
            DRILL_ADDR,
            f"must be a loopback address (the scratch server in the drill's "
            f"own pod), got {addr!r}: a drill never talks to another OpenBao",
        )
    done = r.text(DRILL_DONE_FILE, required=True)
    done_file = Path(done) if done else Path()
    if done and not done_file.parent.is_dir():
        r.problem(DRILL_DONE_FILE, f"the directory {done_file.parent} does not exist")
    keys_file = r.readable_file(UNSEAL_KEYS_FILE, required=False)
    keys: tuple[str, ...] = ()
    if keys_file is not None:
        try:
            keys = parse_unseal_keys(keys_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            pass  # readable_file already listed the problem
        except ValueError as exc:
            r.problem(UNSEAL_KEYS_FILE, f"{keys_file}: {exc}")
    return DrillSettings(
        key=key,
        addr=addr,
        done_file=done_file,
        unseal_keys_file=keys_file,
        unseal_keys=keys,
        start_timeout=r.number(DRILL_START_TIMEOUT, lo=1, hi=3600),
        auto_unseal=r.flag(DRILL_AUTO_UNSEAL),
    )


def parse_unseal_keys(text: str) -> tuple[str, ...]:
    """Unseal keys from a file: one per line, a JSON list, or ``bao operator init -format=json``
    output (``unseal_keys_b64``/``unseal_keys_hex``, or the API's ``keys_base64``/``keys``).
    Each key is registered as a secret; raise ``ValueError`` (never quoting a key) if none or
    one is neither base64 nor hex."""
    import base64
    import binascii

    stripped = text.strip()
    keys: list[str]
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise ValueError("looks like JSON but does not parse") from None
        if isinstance(data, dict):
            for name in ("unseal_keys_b64", "keys_base64", "unseal_keys_hex", "keys"):
                if isinstance(data.get(name), list):
                    data = data[name]
                    break
        if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
            raise ValueError("JSON must be a list of key strings (or bao operator init output)")
        keys = [k.strip() for k in data if k.strip()]
    else:
        keys = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not keys:
        raise ValueError("holds no unseal keys")
    for k in keys:
        secrets.register(k)
    for i, k in enumerate(keys, 1):
        if re.fullmatch(r"[0-9a-fA-F]+", k) and len(k) % 2 == 0:
            continue
        try:
            base64.b64decode(k, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {i} is neither hex nor base64") from None
    return tuple(dict.fromkeys(keys))
