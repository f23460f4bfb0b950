"""Incremental reader of ONE gzip member that passes stored deflate blocks through uncopied.

Guarantees:

* :class:`GzipMember` accepts exactly what zlib accepts as one gzip member (RFC 1952 header
  with any of FTEXT/FEXTRA/FNAME/FCOMMENT/FHCRC, an RFC 1951 deflate stream, the trailer) and
  hands the decompressed bytes, in order, to its ``out`` callback; :attr:`GzipMember.eof` is
  True only after the trailer's CRC-32 AND length (ISIZE) matched what was decompressed;
* it raises :class:`~executor.errors.ArchiveError` (message naming gzip) as soon as the input
  is certainly bad: not gzip, an unknown method or flag, a header CRC mismatch, a stored
  block whose LEN/NLEN disagree, an invalid block type, any error zlib reports, a CRC-32 or
  length mismatch in the trailer, any byte after the trailer;
* memory: one gzip header (<= :data:`HEADER_LIMIT`), 5 bytes of a block header, 8 of the
  trailer, and references to the last :data:`WINDOW` bytes of output (at most one input
  chunk more), whatever the member's size. Those references are views of the fed chunks,
  so a chunk that is not an immutable ``bytes`` is copied once on entry: a caller reusing
  its buffer can never change the window a later compressed block refers to.

Why not zlib alone: an OpenBao snapshot is written with Go's ``gzip.NoCompression``, i.e.
stored blocks of <= 64 KiB (and one empty fixed-Huffman block at the end). For stored blocks
zlib's inflate copies every byte into its output and its window and walks its state machine
per block: 1.1-1.2 CPU s per GiB on this machine, more than the SHA-256 of the same bytes
(0.6 s). Here a stored block's payload is handed on as a memoryview of the input (no copy)
and only its CRC-32 is computed (zlib.crc32, 0.27 s per GiB): the same bytes are checked,
against the same trailer, as zlib would check them. The first block that is NOT stored (a
compressing producer, or Go's final empty block) and everything after it goes through zlib
(raw deflate), primed with the last 32 KiB of output as its dictionary, because a compressed
block may refer back into earlier (stored) output; the CRC-32 and length of zlib's output are
computed here in the same way, so the trailer check is the same for both paths.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable

from executor.errors import ArchiveError

#: Largest gzip header accepted (FEXTRA/FNAME/FCOMMENT are unbounded in the format; OpenBao
#: writes none): a bound on what is held before the first block.
HEADER_LIMIT = 64 << 10
#: Deflate's largest back-reference distance: the output a compressed block may refer to.
WINDOW = 32 << 10
#: Most output zlib returns per call (the bound on one decompressed piece held at a time).
INFLATE_STEP = 1 << 20

_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 0x02, 0x04, 0x08, 0x10
_RESERVED = 0xE0

_HEADER, _BLOCK, _STORED, _INFLATE, _TRAILER, _DONE = range(6)

Out = Callable[[memoryview | bytes], None]


def _header_length(buf: bytearray) -> int | None:
    """Length of the complete gzip header at the start of ``buf``; None if more is needed."""
    if len(buf) >= 2 and buf[:2] != b"\x1f\x8b":
        raise ArchiveError("not a gzip stream (bad magic bytes)")
    if len(buf) < 10:
        return None
    if buf[2] != 8:
        raise ArchiveError(f"not a valid gzip stream: unknown compression method {buf[2]}")
    flags = buf[3]
    if flags & _RESERVED:
        raise ArchiveError("not a valid gzip stream: unknown header flags set")
    pos = 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & _FHCRC:
        if len(buf) < pos + 2:
            return None
        if int.from_bytes(buf[pos : pos + 2], "little") != zlib.crc32(buf[:pos]) & 0xFFFF:
            raise ArchiveError("not a valid gzip stream: header CRC mismatch")
        pos += 2
    return pos if len(buf) >= pos else None


class GzipMember:
    """Feed a gzip member's bytes in order; decompressed output goes to ``out`` (see module)."""

    def __init__(self, out: Out) -> None:
        self._out = out
        self._state = _HEADER
        self._pending = bytearray()  # an incomplete header, block header or trailer
        self._remaining = 0  # bytes of the current stored block still to come
        self._final = False  # the current block is the last one
        self._crc = 0
        self._isize = 0
        self._tail: deque[memoryview | bytes] = deque()  # the last >= WINDOW bytes of output
        self._tail_len = 0
        self._inflate: zlib._Decompress | None = None
        self.consumed = 0  # input bytes taken so far

    @property
    def eof(self) -> bool:
        """The trailer was read and matched."""
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data if type(data) is bytes else bytes(data))
        while view:
            state = self._state
            if state == _STORED:
                n = min(self._remaining, len(view))
                self._emit(view[:n], keep=True)
                self._remaining -= n
                view = view[n:]
                self.consumed += n
                if not self._remaining:
                    self._state = _TRAILER if self._final else _BLOCK
            elif state == _BLOCK:
                view = self._block_header(view)
            elif state == _INFLATE:
                view = self._inflated(view)
            elif state == _HEADER:
                view = self._header(view)
            elif state == _TRAILER:
                view = self._trailer(view)
            else:
                raise ArchiveError(f"{len(view)} bytes of trailing data after the gzip stream")

    def _emit(self, piece: memoryview | bytes, *, keep: bool) -> None:
        self._crc = zlib.crc32(piece, self._crc)
        self._isize += len(piece)
        if keep:  # only the stored path may still hand over to zlib
            self._tail.append(piece)
            self._tail_len += len(piece)
            while self._tail_len - len(self._tail[0]) >= WINDOW:
                self._tail_len -= len(self._tail.popleft())
        self._out(piece)

    def _take(self, view: memoryview, need: int) -> tuple[bytes | None, memoryview]:
        """``need`` bytes from ``_pending`` + ``view`` (None if not there yet), and the rest."""
        if not self._pending and len(view) >= need:
            self.consumed += need
            return view[:need].tobytes(), view[need:]
        n = min(need - len(self._pending), len(view))
        self._pending += view[:n]
        self.consumed += n
        if len(self._pending) < need:
            return None, view[n:]
        got = bytes(self._pending)
        self._pending.clear()
        return got, view[n:]

    def _header(self, view: memoryview) -> memoryview:
        n = min(len(view), HEADER_LIMIT + 1 - len(self._pending))
        self._pending += view[:n]
        length = _header_length(self._pending)
        if length is None:
            if len(self._pending) > HEADER_LIMIT:
                raise ArchiveError(f"gzip header longer than {HEADER_LIMIT} bytes")
            self.consumed += n
            return view[n:]
        used = n - (len(self._pending) - length)  # bytes of this view that were header
        self._pending.clear()
        self.consumed += used
        self._state = _BLOCK
        return view[used:]

    def _block_header(self, view: memoryview) -> memoryview:
        first = self._pending[0] if self._pending else view[0]
        kind = (first >> 1) & 3
        if kind == 3:
            raise ArchiveError(
                f"not a valid gzip stream near byte {self.consumed}: invalid block type"
            )
        if kind != 0:  # compressed: zlib from here on (the header starts at bit 0 here)
            window = b"".join(self._tail)[-WINDOW:]
            self._tail.clear()
            self._tail_len = 0
            self._inflate = (
                zlib.decompressobj(wbits=-zlib.MAX_WBITS, zdict=window)
                if window
                else zlib.decompressobj(wbits=-zlib.MAX_WBITS)
            )
            self._state = _INFLATE
            return view
        header, rest = self._take(view, 5)
        if header is None:
            return rest
        length = int.from_bytes(header[1:3], "little")
        if length != int.from_bytes(header[3:5], "little") ^ 0xFFFF:
            raise ArchiveError(
                f"not a valid gzip stream near byte {self.consumed}: invalid stored block lengths"
            )
        self._final = bool(first & 1)
        self._remaining = length
        self._state = _STORED if length else (_TRAILER if self._final else _BLOCK)
        return rest

    def _inflated(self, view: memoryview) -> memoryview:
        inflate = self._inflate
        assert inflate is not None
        pending: bytes | memoryview = view
        while True:
            before = len(pending)
            try:
                out = inflate.decompress(pending, INFLATE_STEP)
            except zlib.error as exc:
                raise ArchiveError(
                    f"not a valid gzip stream near byte {self.consumed}: {exc}"
                ) from None
            if out:
                self._emit(out, keep=False)
            if inflate.eof:
                rest = inflate.unused_data
                self.consumed += before - len(rest)
                self._inflate = None
                self._state = _TRAILER
                return memoryview(rest)
            pending = inflate.unconsumed_tail
            self.consumed += before - len(pending)
            if not pending and len(out) < INFLATE_STEP:
                return memoryview(b"")

    def _trailer(self, view: memoryview) -> memoryview:
        trailer, rest = self._take(view, 8)
        if trailer is None:
            return rest
        crc = int.from_bytes(trailer[:4], "little")
        isize = int.from_bytes(trailer[4:], "little")
        if crc != self._crc:
            raise ArchiveError(
                f"gzip CRC-32 mismatch: the trailer says {crc:08x}, the content has "
                f"{self._crc:08x} (corrupt snapshot)"
            )
        if isize != self._isize & 0xFFFFFFFF:
            raise ArchiveError(
                f"gzip length mismatch: the trailer says {isize}, the content has "
                f"{self._isize} bytes (mod 2^32)"
            )
        self._state = _DONE
        if rest:
            raise ArchiveError(f"{len(rest)} bytes of trailing data after the gzip stream")
        return rest
