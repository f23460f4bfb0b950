"""Secret redaction for everything the executor prints or reports.

Guarantees:

* every secret value the executor reads or receives (OpenBao tokens, the projected JWT,
  storage keys, connection strings, OAuth access tokens) is registered here the moment it is
  read, and :func:`scrub` replaces each registered value by ``[REDACTED]`` in any text;
* well-known secret shapes are scrubbed even if they were never registered: values of
  ``X-Vault-Token``/``Authorization`` headers, ``AccountKey=``/``SharedAccessSignature=`` in
  connection strings, SAS ``sig=`` parameters, ``X-Amz-Signature``/``X-Amz-Credential``
  query parameters, and JSON fields named like ``client_token``/``access_token``/``jwt``;
* the log pipeline (:mod:`executor.log`) and the report writer (:mod:`executor.__main__`) pass
  every string through :func:`scrub`, so a foreign exception text cannot leak a secret.

Values shorter than 6 characters are not registered (they would redact ordinary words); no
real credential is that short.
"""

from __future__ import annotations

import re
import threading

REDACTED = "[REDACTED]"
_MIN_LEN = 6

_lock = threading.Lock()
_values: set[str] = set()

_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)(x-vault-token['\"]?\s*[:=]\s*['\"]?)[^\s'\",;}]+"),
    re.compile(
        r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|sharedkey|basic)?\s*)[^\s'\",;}]+"
    ),
    re.compile(r"(?i)((?:AccountKey|SharedAccessSignature|SessionToken)=)[^;\s'\"]+"),
    re.compile(
        r"(?i)([?&](?:sig|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=)[^&\s'\"]+"
    ),
    re.compile(
        r"(?i)(['\"](?:client_token|access_token|id_token|refresh_token|jwt|token|secret|"
        r"private_key|password)['\"]\s*:\s*['\"])[^'\"]+"
    ),
)


def register(value: str | None) -> None:
    """Remember ``value`` (and its stripped form) as a secret to scrub from all output."""
    if not value:
        return
    with _lock:
        for v in (value, value.strip()):
            if len(v) >= _MIN_LEN:
                _values.add(v)


def scrub(text: str) -> str:
    """``text`` with every registered secret and every known secret shape redacted."""
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def reset_for_tests() -> None:
    """Forget every registered value (tests only)."""
    with _lock:
        _values.clear()
