"""Upload parts in reused buffers, sent without copies.

Guarantees:

* :class:`PartBuffer` cuts a byte stream into parts of exactly ``part_size`` bytes (the last
  may be smaller); each incoming byte is copied ONCE, into a part buffer taken from its
  :class:`PartPool`. A buffer goes back to the pool when its part is released (its upload
  finished, failed or was cancelled), so a run allocates its buffers once (as many as the
  upload lets exist at a time: see the providers) and reuses them: peak RSS stays flat
  whatever the stream's length, and no page is faulted in again for every part (on this VM
  a fresh 16 MiB part cost more CPU in page faults and copies than the hashing of it);
* :class:`PartBody` sends a part from a memoryview of its buffer: aiohttp writes it in
  :data:`SEND_SLICE` slices and waits for the socket to drain between them (no copy of the
  part into the transport's buffer, no thread per slice); it is also a seekable read-only
  file for SDKs that re-read a body (botocore payload signing, retries): reads return
  memoryview slices of the same buffer;
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from executor.errors import InternalError

#: Bytes handed to the transport per write: larger slices mean fewer Python-level writes, but
#: the transport copies what the socket does not take at once, so this bounds that copy.
SEND_SLICE = 256 << 10


class PartPool:
    """Free list of equal-sized part buffers (the producer's back-pressure bounds it)."""

    def __init__(self, *, part_size: int) -> None:
        self.part_size = part_size
        self._free: list[bytearray] = []
        self.allocated = 0

    def take(self) -> bytearray:
        if self._free:
            return self._free.pop()
        self.allocated += 1
        return bytearray(self.part_size)

    def give(self, buf: bytearray) -> None:
        self._free.append(buf)


class Part:
    """``length`` bytes at the start of a pooled buffer; :meth:`release` returns the buffer
    (idempotent; the part must not be read afterwards)."""

    __slots__ = ("_buf", "_pool", "length")

    def __init__(self, buf: bytearray, length: int, pool: PartPool | None) -> None:
        self._buf: bytearray | None = buf
        self._pool = pool
        self.length = length

    def __len__(self) -> int:
        return self.length

    @property
    def view(self) -> memoryview:
        if self._buf is None:
            raise InternalError("a released part was read")
        return memoryview(self._buf)[: self.length]

    def body(self) -> PartBody:
        return PartBody(self.view)

    def release(self) -> None:
        buf, self._buf = self._buf, None
        if buf is not None and self._pool is not None:
            self._pool.give(buf)


class PartBuffer:
    """Cuts a byte stream into :class:`Part` s of exactly ``part_size`` bytes (see module).

    The caller decides when a new buffer may be taken (:attr:`filling` is False between
    parts), which is where uploads apply back-pressure."""

    def __init__(self, *, part_size: int) -> None:
        if part_size <= 0:
            raise InternalError("part size must be positive")
        self.part_size = part_size
        self.pool = PartPool(part_size=part_size)
        self._buf: bytearray | None = None
        self._fill = 0

    def __len__(self) -> int:
        return self._fill

    @property
    def filling(self) -> bool:
        """A part buffer is held (partly filled)."""
        return self._buf is not None

    def fill(self, view: memoryview) -> tuple[Part | None, memoryview]:
        """Copy from ``view`` into the current part (taking a buffer if none is held); the
        part if it became full, and what of ``view`` is left."""
        if self._buf is None:
            self._buf = self.pool.take()
            self._fill = 0
        n = min(len(view), self.part_size - self._fill)
        self._buf[self._fill : self._fill + n] = view[:n]
        self._fill += n
        if self._fill < self.part_size:
            return None, view[n:]
        part = Part(self._buf, self.part_size, self.pool)
        self._buf, self._fill = None, 0
        return part, view[n:]

    def take_rest(self) -> Part:
        """The final part: what is buffered (possibly nothing)."""
        if self._buf is None:
            return Part(bytearray(), 0, None)
        part = Part(self._buf, self._fill, self.pool)
        self._buf, self._fill = None, 0
        return part


class PartBody(payload.Payload):
    """A part as an aiohttp payload and a seekable read-only file (see module)."""

    _autoclose = True

    def __init__(self, view: memoryview) -> None:
        super().__init__(view, content_type="application/octet-stream")
        self._view = view
        self._size = len(view)
        self._pos = 0

    # -- aiohttp ------------------------------------------------------------------------------

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._view.tobytes().decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        end = len(self._view) if content_length is None else min(content_length, len(self._view))
        for piece in _slices(self._view, end):
            await writer.write(piece)

    # -- file-like (botocore, azure-core) -----------------------------------------------------

    def read(self, size: int = -1) -> memoryview:
        total = len(self._view)
        end = total if size is None or size < 0 else min(total, self._pos + size)
        piece = self._view[self._pos : end]
        self._pos = end
        return piece

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._view)


def _slices(view: memoryview, end: int) -> Iterator[memoryview]:
    for start in range(0, end, SEND_SLICE):
        yield view[start : min(end, start + SEND_SLICE)]
