"""Inline verification of an OpenBao Raft snapshot stream, in constant memory.

Guarantees:

* :class:`SnapshotVerifier` is fed the exact bytes of a snapshot as they stream past and keeps
  the SHA-256 and length of the whole stream; it never holds more than one inflate window
  (bounded by ``_INFLATE_STEP``), one 512-byte tar header and the three small members
  (``meta.json`` <= 1 MiB, ``SHA256SUMS`` and ``SHA256SUMS.sealed`` <= 64 KiB each);
  ``state.bin`` is only hashed, whatever its size;
* :meth:`SnapshotVerifier.finish` returns a :class:`VerifiedSnapshot` only if ALL of these hold,
  and raises :class:`~executor.errors.ArchiveError` naming the first failure otherwise:

  - the stream is one complete gzip member (zlib verified its CRC-32 and length trailer) with
    nothing after it;
  - the tar inside ends with the two zero blocks of an end-of-archive marker;
  - it holds exactly the members ``meta.json``, ``state.bin``, ``SHA256SUMS`` and
    ``SHA256SUMS.sealed``, each once, as regular files (PAX/GNU long-name headers allowed);
  - ``SHA256SUMS.sealed`` is non-empty (OpenBao writes it last; the official client treats an
    empty or missing one as an incomplete snapshot);
  - ``SHA256SUMS`` lists exactly ``meta.json`` and ``state.bin`` with the SHA-256 of their
    content;
  - ``meta.json`` is a JSON object with integer ``Index``, ``Term`` and ``Version`` (and, if
    present, ``Size`` equal to the length of ``state.bin``);

* :meth:`SnapshotVerifier.feed` raises as soon as the stream is *certainly* bad (not gzip,
  corrupt tar header, unexpected member, bytes after the gzip trailer), so an upload can be
  aborted early; a stream that is merely short is only detected by ``finish``.

What it cannot check: ``SHA256SUMS.sealed`` is sealed with the cluster's barrier keys, so only
OpenBao can verify it (at restore time).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from executor.errors import ArchiveError

META = "meta.json"
STATE = "state.bin"
SUMS = "SHA256SUMS"
SEALED = "SHA256SUMS.sealed"
MEMBERS = (META, STATE, SUMS, SEALED)

_BLOCK = 512
_INFLATE_STEP = 1 << 20
_CAPTURE_LIMITS = {META: 1 << 20, SUMS: 64 << 10, SEALED: 64 << 10}
_PAX_LIMIT = 64 << 10
_GNU_NAME_LIMIT = 4 << 10
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


@dataclass(frozen=True)
class SnapshotMeta:
    """What ``meta.json`` says about the Raft state in the archive."""

    index: int
    term: int
    version: int
    configuration_index: int | None
    state_size: int


@dataclass(frozen=True)
class VerifiedSnapshot:
    """A stream proven complete and self-consistent."""

    sha256: str
    size: int
    meta: SnapshotMeta


@dataclass
class _Member:
    name: str
    size: int
    remaining: int
    digest: Any
    capture: bytearray | None


class _TarReader:
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

    def feed(self, data: bytes) -> None:
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


class SnapshotVerifier:
    """Feed snapshot bytes in order; :meth:`finish` proves the stream complete (see module)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._size = 0
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._tar = _TarReader()
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._digest.update(data)
        self._size += len(data)
        if self._inflate.eof:
            raise ArchiveError(f"{len(data)} bytes of trailing data after the gzip stream")
        pending = data
        while True:
            try:
                out = self._inflate.decompress(pending, _INFLATE_STEP)
            except zlib.error as exc:
                raise ArchiveError(
                    f"not a valid gzip stream near byte {self._size}: {exc}"
                ) from None
            if out:
                self._tar.feed(out)
            if self._inflate.eof:
                if self._inflate.unused_data:
                    raise ArchiveError(
                        f"{len(self._inflate.unused_data)} bytes of trailing data after the "
                        "gzip stream"
                    )
                return
            pending = self._inflate.unconsumed_tail
            if not pending and len(out) < _INFLATE_STEP:
                return

    def finish(self) -> VerifiedSnapshot:
        if self._size == 0:
            raise ArchiveError("empty snapshot stream (0 bytes)")
        if not self._inflate.eof:
            raise ArchiveError(
                f"incomplete snapshot: the gzip stream stops after {self._size} bytes without "
                "its trailer (truncated)"
            )
        self._tar.check_complete()
        tar = self._tar
        missing = [m for m in MEMBERS if m not in tar.digests]
        if missing:
            raise ArchiveError(f"snapshot lacks {', '.join(missing)}")
        if not tar.contents[SEALED]:
            raise ArchiveError(f"{SEALED} is empty: OpenBao did not finish the snapshot")
        self._check_sums(tar)
        meta = _parse_meta(tar.contents[META], state_size=tar.sizes[STATE])
        self._finished = True
        return VerifiedSnapshot(sha256=self._digest.hexdigest(), size=self._size, meta=meta)

    @staticmethod
    def _check_sums(tar: _TarReader) -> None:
        try:
            text = tar.contents[SUMS].decode("ascii")
        except UnicodeDecodeError:
            raise ArchiveError(f"{SUMS} is not ASCII") from None
        listed: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            m = _SUMS_LINE.match(line)
            if not m:
                raise ArchiveError(f"malformed line in {SUMS}: {line[:80]!r}")
            if m.group(2) in listed:
                raise ArchiveError(f"{SUMS} lists {m.group(2)!r} twice")
            listed[m.group(2)] = m.group(1)
        if set(listed) != {META, STATE}:
            raise ArchiveError(
                f"{SUMS} must list exactly {META} and {STATE}, lists {sorted(listed)}"
            )
        for name, expected in listed.items():
            if tar.digests[name] != expected:
                raise ArchiveError(
                    f"{name} does not match {SUMS}: content hashes to {tar.digests[name]}, "
                    f"{SUMS} says {expected}"
                )


def _parse_meta(raw: bytes, *, state_size: int) -> SnapshotMeta:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ArchiveError(f"{META} is not JSON") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{META} is not a JSON object")

    def integer(key: str, *, required: bool) -> int | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ArchiveError(f"{META} field {key} is not a non-negative integer")
        return value

    index = integer("Index", required=True)
    term = integer("Term", required=True)
    version = integer("Version", required=True)
    size = integer("Size", required=False)
    if size is not None and size != state_size:
        raise ArchiveError(f"{META} says Size={size} but {STATE} has {state_size} bytes")
    assert index is not None
    assert term is not None
    assert version is not None
    return SnapshotMeta(
        index=index,
        term=term,
        version=version,
        configuration_index=integer("ConfigurationIndex", required=False),
        state_size=state_size,
    )


def verify_bytes(data: bytes) -> VerifiedSnapshot:
    """Verify a snapshot held in memory (tests and small tools)."""
    verifier = SnapshotVerifier()
    verifier.feed(data)
    return verifier.finish()
