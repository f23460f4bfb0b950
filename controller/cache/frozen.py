"""Deep-frozen, compact JSON values: what the informer caches hand out.

Guarantees:

* :func:`freeze` turns a JSON value into an immutable one: objects become
  :class:`FrozenDict` (a read-only ``Mapping``), arrays become ``tuple``; scalars stay as
  they are. Nothing handed out can be mutated, so readers share the cached objects without
  copies; :func:`thaw` gives a mutable deep copy (``dict``/``list``) for building a write;
* compact: a :class:`FrozenDict` stores its values in one tuple and its keys in a
  :class:`Shape` shared by every mapping with the same keys in the same order (CPython's
  "split table" idea, made explicit), so a 6-key ``metadata`` costs one tuple of 6 pointers
  instead of a dict's hash table;
* shared strings: every key, and every string value up to :data:`INTERN_MAX` characters
  except those under :data:`UNIQUE_KEYS`, is interned (``sys.intern``), so the namespace,
  label values, kinds, condition types and reasons repeated across thousands of objects are
  held once. Interned strings die with their last user (CPython's interning is mortal);
* equality is by content with any ``Mapping`` (``tuple`` values compare as tuples, as
  before); a :class:`FrozenDict` is unhashable, like the ``dict`` it stands for;
* :class:`FrozenDict` may carry a set of *guarded* keys (the cache's tripwire, see
  :mod:`controller.cache.projection`): reading one raises :class:`DroppedFieldRead`, while
  iteration, ``len`` and :func:`thaw` behave as if the key were absent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

INTERN_MAX = 40
"""String values at most this long are interned: longer ones (object keys in a bucket,
hashes, messages) are rarely repeated, and interning a unique string only adds an entry to
the intern table (measured: 40 holds about 3% less than 64 or 24 at 33,000 records)."""

UNIQUE_KEYS = frozenset({"uid", "resourceVersion"})
"""Keys whose string values are unique per object: never worth an intern-table entry."""


TRIPWIRE_ENV = "OPENBAO_BACKUP_CACHE_TRIPWIRE"
"""``1`` turns the cache's tripwire on; a path (containing ``/``) also appends every dropped
field read to that file, so a whole test run can be checked afterwards."""


class DroppedFieldRead(AssertionError):
    """A reader asked for a field the cache's projection drops (a bug in the projection)."""


def _record_dropped_read(message: str) -> None:
    target = os.environ.get(TRIPWIRE_ENV, "")
    if "/" in target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(message + "\n")


class Shape:
    """The ordered keys of every :class:`FrozenDict` that has exactly these keys."""

    __slots__ = ("index", "keys")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}


SHAPE_LIMIT = 20_000
"""Shapes shared at most: key sets are few (one per kind of mapping, plus distinct label and
annotation key sets), so the registry stays small; past the limit (a flood of distinct
annotation keys) new key sets get a private shape instead of growing it without bound."""

_SHAPES: dict[tuple[str, ...], Shape] = {}


def shape_of(keys: tuple[str, ...]) -> Shape:
    """The shared :class:`Shape` for ``keys`` (interned strings)."""
    shape = _SHAPES.get(keys)
    if shape is None:
        shape = Shape(keys)
        if len(_SHAPES) < SHAPE_LIMIT:
            _SHAPES[keys] = shape
    return shape


def shape_count() -> int:
    """How many shapes are shared (for tests and benchmarks)."""
    return len(_SHAPES)


class FrozenDict(Mapping[str, Any]):
    """An immutable, unhashable mapping whose keys live in a shared :class:`Shape`."""

    __slots__ = ("_shape", "_values")

    _shape: Shape
    _values: tuple[Any, ...]

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        """A shallow frozen mapping of ``data`` (values are taken as they are)."""
        items = dict(data or {})
        self._shape = shape_of(tuple(sys.intern(str(k)) for k in items))
        self._values = tuple(items.values())

    @classmethod
    def _make(cls, shape: Shape, values: tuple[Any, ...]) -> FrozenDict:
        new = object.__new__(cls)
        new._shape = shape
        new._values = values
        return new

    def __getitem__(self, key: str) -> Any:
        return self._values[self._shape.index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._shape.index.get(key)
        return default if i is None else self._values[i]

    def __contains__(self, key: object) -> bool:
        return key in self._shape.index

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.keys)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"FrozenDict({dict(self.items())!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self) and self._shape is other._shape:
            return self._values == other._values
        if isinstance(other, Mapping):
            return len(self) == len(other) and all(
                k in other and other[k] == v for k, v in self.items()
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Callable[..., FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self.items()),))


class GuardedFrozenDict(FrozenDict):
    """A :class:`FrozenDict` that fails loudly when a dropped key is read."""

    __slots__ = ("_guarded", "_where")

    _guarded: frozenset[str]
    _where: str

    @classmethod
    def guard(cls, inner: FrozenDict, *, dropped: frozenset[str], where: str) -> GuardedFrozenDict:
        new = object.__new__(cls)
        new._shape, new._values = inner._shape, inner._values
        new._guarded, new._where = dropped, where
        return new

    def _check(self, key: object) -> None:
        if key in self._guarded:
            message = (
                f"{self._where}.{key} is dropped by the cache's projection but was read "
                "(keep it in controller/cache/projection.py)"
            )
            _record_dropped_read(message)
            raise DroppedFieldRead(message)

    def __getitem__(self, key: str) -> Any:
        self._check(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return super().__contains__(key)


_EMPTY = FrozenDict()


_intern = sys.intern
_SCALARS = (int, float, bool, type(None))


def freeze(value: Any, _key: str = "") -> Any:
    """A deep-frozen, compact copy of a JSON value (object -> FrozenDict, array -> tuple).

    ``_key`` is the key the value sits under (it decides whether a string is interned)."""
    kind = type(value)
    if kind is str:
        if len(value) <= INTERN_MAX and _key not in UNIQUE_KEYS:
            return _intern(value)
        return value
    if kind is dict:
        if not value:
            return _EMPTY
        keys = tuple(map(_intern, value))
        shape = _SHAPES.get(keys) or shape_of(keys)
        new = object.__new__(FrozenDict)
        new._shape = shape
        new._values = tuple([freeze(v, k) for k, v in zip(keys, value.values(), strict=True)])
        return new
    if kind is list or kind is tuple:
        return tuple([freeze(v, _key) for v in value])
    if kind in _SCALARS or isinstance(value, FrozenDict):
        return value
    if isinstance(value, Mapping):
        return freeze({str(k): v for k, v in value.items()}, _key)
    if isinstance(value, list | tuple):
        return freeze(list(value), _key)
    return value


def thaw(value: Any) -> Any:
    """A mutable deep copy of a (frozen or not) JSON value; guarded keys are left out."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value
