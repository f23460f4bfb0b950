"""Incremental tar parser over a snapshot's decompressed bytes, in constant memory.

Guarantees:

* :class:`TarReader` is fed the tar stream in order, in pieces of any size (bytes or
  memoryviews, never kept beyond the call except the small captures below); it accepts
  ustar, PAX (``x``; ``g`` ignored) and GNU long-name (``L``) headers and raises
  :class:`~executor.errors.ArchiveError` as soon as a header is corrupt (checksum, size), an
  entry is not a regular file, a name is not one of :data:`MEMBERS` or appears twice, a small
  member exceeds its capture limit, or bytes follow the end-of-archive marker;
* for every member it records the SHA-256 and size of its content (``digests``, ``sizes``);
  the content of ``meta.json``, ``SHA256SUMS`` and ``SHA256SUMS.sealed`` is kept
  (``contents``, at most 1 MiB + 2 x 64 KiB); ``state.bin`` is only hashed, whatever its size;
* :meth:`TarReader.check_complete` raises unless the stream ended after a complete member
  and the two zero blocks of an end-of-archive marker.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from executor.errors import ArchiveError

META = "meta.json"
STATE = "state.bin"
SUMS = "SHA256SUMS"
SEALED = "SHA256SUMS.sealed"
MEMBERS = (META, STATE, SUMS, SEALED)

_BLOCK = 512
_CAPTURE_LIMITS = {META: 1 << 20, SUMS: 64 << 10, SEALED: 64 << 10}
_PAX_LIMIT = 64 << 10
_GNU_NAME_LIMIT = 4 << 10


@dataclass
class _Member:
    name: str
    size: int
    remaining: int
    digest: Any
    capture: bytearray | None


class TarReader:
    """Incremental ustar/PAX/GNU tar parser over the decompressed bytes."""

    def __init__(self) -> None:
        self.offset = 0  # position in the tar stream
        self._header = bytearray()
        self._member: _Member | None = None
        self._padding = 0
        self._zeros = 0  # bytes of end-of-archive marker seen (0 = not at the end yet)
        self._pending_name: str | None = None
        self._pending_size: int | None = None
        self._special: tuple[bytes, int, bytearray] | None = None  # (type, remaining, data)
        self._padding_after = 0
        self.digests: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.contents: dict[str, bytes] = {}

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._zeros:
                chunk = view[pos:]
                if chunk.tobytes().strip(b"\0"):
                    raise ArchiveError(
                        f"data after the tar end-of-archive marker at tar offset {self.offset}"
                    )
                self._zeros += len(chunk)
                self.offset += len(chunk)
                return
            if self._padding:
                n = min(self._padding, end - pos)
                self._padding -= n
            elif self._special is not None:
                kind, remaining, buf = self._special
                n = min(remaining, end - pos)
                buf += view[pos : pos + n]
                remaining -= n
                self._special = (kind, remaining, buf)
                if remaining == 0:
                    self._finish_special(kind, bytes(buf))
            elif self._member is not None:
                m = self._member
                n = min(m.remaining, end - pos)
                piece = view[pos : pos + n]
                m.digest.update(piece)
                if m.capture is not None:
                    m.capture += piece
                m.remaining -= n
                if m.remaining == 0:
                    self._finish_member()
            else:
                n = min(_BLOCK - len(self._header), end - pos)
                self._header += view[pos : pos + n]
                if len(self._header) == _BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._start(header, at=self.offset + n - _BLOCK)
            pos += n
            self.offset += n

    def _start(self, header: bytes, *, at: int) -> None:
        if not header.strip(b"\0"):
            self._zeros = _BLOCK
            return
        stored = _octal(header[148:156], what="checksum", at=at)
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and stored != _signed_sum(header):
            raise ArchiveError(f"corrupt tar header at tar offset {at} (checksum mismatch)")
        kind = header[156:157]
        size = _size(header[124:136], at=at)
        name = _cstr(header[0:100])
        if header[257:263] == b"ustar\0":
            prefix = _cstr(header[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        if kind in (b"x", b"g", b"L"):
            limit = _GNU_NAME_LIMIT if kind == b"L" else _PAX_LIMIT
            if size > limit:
                raise ArchiveError(f"oversized tar extension header ({size} bytes) at {at}")
            self._special = (kind, size, bytearray())
            self._padding_after = (-size) % _BLOCK
            if size == 0:
                self._finish_special(kind, b"")
            return
        if self._pending_name is not None:
            name = self._pending_name
        if self._pending_size is not None:
            size = self._pending_size
        self._pending_name = self._pending_size = None
        if kind not in (b"0", b"\0"):
            raise ArchiveError(f"unexpected tar entry {name!r} of type {kind!r}")
        if name not in MEMBERS:
            raise ArchiveError(f"unexpected file {name!r} in snapshot")
        if name in self.digests or (self._member is not None and self._member.name == name):
            raise ArchiveError(f"duplicate file {name!r} in snapshot")
        capture_limit = _CAPTURE_LIMITS.get(name)
        if capture_limit is not None and size > capture_limit:
            raise ArchiveError(f"{name} is implausibly large ({size} bytes)")
        self._member = _Member(
            name=name,
            size=size,
            remaining=size,
            digest=hashlib.sha256(),
            capture=bytearray() if capture_limit is not None else None,
        )
        if size == 0:
            self._finish_member()

    def _finish_special(self, kind: bytes, data: bytes) -> None:
        self._special = None
        self._padding = self._padding_after
        if kind == b"L":
            self._pending_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":
            for key, value in _pax_records(data):
                if key == "path":
                    self._pending_name = value
                elif key == "size":
                    try:
                        self._pending_size = int(value)
                    except ValueError:
                        raise ArchiveError("bad size in PAX header") from None

    def _finish_member(self) -> None:
        m = self._member
        assert m is not None
        self._member = None
        self.digests[m.name] = m.digest.hexdigest()
        self.sizes[m.name] = m.size
        if m.capture is not None:
            self.contents[m.name] = bytes(m.capture)
        self._padding = (-m.size) % _BLOCK

    def check_complete(self) -> None:
        if self._member is not None:
            m = self._member
            raise ArchiveError(
                f"truncated inside {m.name} ({m.size - m.remaining} of {m.size} bytes)"
            )
        if self._zeros == 0:
            raise ArchiveError(
                f"tar stream ends without an end-of-archive marker (at tar offset {self.offset})"
            )
        if self._zeros < 2 * _BLOCK:
            raise ArchiveError("tar end-of-archive marker is incomplete")


def _signed_sum(header: bytes) -> int:
    total = 8 * 32
    for i, b in enumerate(header):
        if 148 <= i < 156:
            continue
        total += b - 256 if b > 127 else b
    return total


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _octal(raw: bytes, *, what: str, at: int) -> int:
    text = raw.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveError(f"corrupt tar header at tar offset {at} (bad {what})") from None


def _size(raw: bytes, *, at: int) -> int:
    if raw[0] & 0x80:  # GNU base-256
        if raw[0] & 0x40:
            raise ArchiveError(f"negative size in tar header at {at}")
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    return _octal(raw, what="size", at=at)


def _pax_records(data: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise ArchiveError("corrupt PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError("corrupt PAX header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError("corrupt PAX header")
        key, _, value = record[:-1].partition(b"=")
        out.append((key.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
        pos += length
    return out
