"""Reading variables of the contract table from an environment, collecting every problem.

Guarantees:

* a :class:`Reader` reads only variables of :data:`~executor.contract.TABLE` (asserted), treats
  an empty or blank value as unset, and never raises for a bad value: it appends one problem
  naming the variable to :attr:`Reader.problems` and returns a usable stand-in (the default,
  or None);
* a secret variable's value is registered with :mod:`executor.secrets` as soon as it is read
  (and kept unstripped);
* :func:`parse_size`, :func:`normalize_prefix` and :func:`check_key_shape` are the only
  definitions of the size syntax, the safe key segment and the snapshot key shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from executor import secrets
from executor.contract.config import env_number
from executor.contract.envvar import MAX_KEY_LENGTH, EnvVar, GiB, KiB, MiB
from executor.contract.table import BY_NAME

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()=+-]+$")
_SIZE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "Ki": KiB, "KiB": KiB, "Mi": MiB, "MiB": MiB, "Gi": GiB, "GiB": GiB}


class Reader:
    """Reads variables of :data:`TABLE` from an environment, collecting every problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, var: EnvVar) -> str | None:
        assert var.name in BY_NAME, var.name
        value = self.environ.get(var.name)
        if value is None or value.strip() == "":
            return None
        if var.secret:
            secrets.register(value)
        return value.strip() if not var.secret else value

    def problem(self, var: EnvVar | None, text: str) -> None:
        self.problems.append(f"{var.name}: {text}" if var is not None else text)

    def text(self, var: EnvVar, *, required: bool = False) -> str | None:
        value = self.raw(var)
        if value is None and var.default is not None and var.default != "":
            value = var.default
        if value is None and required:
            self.problem(var, "is required")
        return value

    def choice(self, var: EnvVar, choices: tuple[str, ...], *, required: bool = True) -> str | None:
        value = self.text(var, required=required)
        if value is not None and value not in choices:
            self.problem(var, f"must be one of {', '.join(choices)} (got {value!r})")
            return None
        return value

    def flag(self, var: EnvVar) -> bool:
        value = self.text(var)
        if value is None:
            return False
        low = value.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        self.problem(var, f"must be true or false (got {value!r})")
        return False

    def number(self, var: EnvVar, *, lo: float, hi: float) -> float:
        value = self.text(var)
        assert var.default is not None
        try:
            number = float(value if value is not None else var.default)
        except ValueError:
            self.problem(var, f"must be a number of seconds (got {value!r})")
            return float(var.default)
        if not (lo <= number <= hi):
            span = f"{env_number(lo)} and {env_number(hi)}"
            self.problem(var, f"must be between {span} (got {value})")
        return number

    def integer(self, var: EnvVar, *, lo: int, hi: int) -> int:
        value = self.text(var)
        assert var.default is not None
        try:
            number = int(value if value is not None else var.default)
        except ValueError:
            self.problem(var, f"must be an integer (got {value!r})")
            return int(var.default)
        if not (lo <= number <= hi):
            self.problem(var, f"must be between {lo} and {hi} (got {number})")
        return number

    def size(self, var: EnvVar) -> int:
        value = self.text(var)
        assert var.default is not None
        m = _SIZE.match(value if value is not None else var.default)
        if not m:
            self.problem(var, f"must be bytes or a number with Ki/Mi/Gi (got {value!r})")
            return parse_size(var.default)
        return int(m.group(1)) * _UNITS[m.group(2)]

    def readable_file(self, var: EnvVar, *, required: bool) -> Path | None:
        value = self.text(var, required=required)
        if value is None:
            return None
        path = Path(value)
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            self.problem(var, f"cannot read {path}: {exc.strerror or exc.__class__.__name__}")
        return path

    def url(self, var: EnvVar, *, required: bool) -> str | None:
        value = self.text(var, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(var, f"must be an http(s):// URL (got {value!r})")
            return None
        if parts.query or parts.fragment or parts.username or parts.password:
            self.problem(var, "must not carry a query, fragment or user info")
            return None
        return value.rstrip("/")


def parse_size(text: str) -> int:
    """Bytes from ``"16Mi"``-style text (binary units only)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def normalize_prefix(text: str) -> str:
    """The path prefix without surrounding slashes; raise ``ValueError`` if unsafe."""
    stripped = text.strip().strip("/")
    if stripped == "":
        return ""
    for segment in stripped.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise ValueError(
                f"unsafe segment {segment!r}: use [A-Za-z0-9!_.*'()=+-] between single slashes"
            )
    return stripped


def check_key_shape(r: Reader, var: EnvVar, key: str) -> bool:
    """True if ``key`` is a safe snapshot key; else one problem for ``var`` and False."""
    if len(key) > MAX_KEY_LENGTH:
        r.problem(var, f"key longer than {MAX_KEY_LENGTH} characters")
        return False
    if not key.endswith(".snap"):
        r.problem(var, f"{key!r} is not a snapshot key (must end with .snap)")
        return False
    try:
        normalize_prefix(key)
    except ValueError as exc:
        r.problem(var, f"{key!r}: {exc}")
        return False
    if key.startswith("/") or key.endswith("/"):
        r.problem(var, f"{key!r} must not start or end with /")
        return False
    return True
