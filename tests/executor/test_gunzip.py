"""The gzip member reader: it accepts and refuses exactly what zlib does, with the same output,
on the stored-block fast path and on the zlib path it hands over to."""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import pytest

from executor.archive.gunzip import WINDOW, GzipMember
from executor.errors import ArchiveError

HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
GO_FINAL_BLOCK = zlib.compress(b"", wbits=-15)  # the empty fixed-Huffman block Go ends with


def stored(data: bytes, *, final: bool, block: int = 65535) -> bytes:
    """Raw deflate stored blocks, as Go's gzip.NoCompression writes them."""
    out = bytearray()
    pieces = [data[i : i + block] for i in range(0, len(data), block)] or [b""]
    for i, piece in enumerate(pieces):
        last = final and i == len(pieces) - 1
        out += bytes([1 if last else 0]) + struct.pack("<HH", len(piece), len(piece) ^ 0xFFFF)
        out += piece
    return bytes(out)


def wrap(deflate: bytes, content: bytes, *, header: bytes = HEADER) -> bytes:
    return header + deflate + struct.pack("<II", zlib.crc32(content), len(content) & 0xFFFFFFFF)


def ours(data: bytes, step: int) -> bytes:
    out = bytearray()
    member = GzipMember(out.extend)
    for i in range(0, len(data), step):
        member.feed(data[i : i + step])
    if not member.eof:
        raise ArchiveError("incomplete")
    return bytes(out)


def zlibs(data: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data)
    if not d.eof or d.unused_data:
        raise zlib.error("incomplete or trailing data")
    return out


def go_style(content: bytes) -> bytes:
    return wrap(stored(content, final=False) + GO_FINAL_BLOCK, content)


@pytest.mark.parametrize("step", [1, 5, 4096, 65536, 1 << 20])
def test_go_no_compression_stream_is_read_like_zlib(step: int) -> None:
    content = random.Random(1).randbytes(300_000)
    data = go_style(content)
    assert zlibs(data) == content
    assert ours(data, step) == content


@pytest.mark.parametrize("step", [1, 3, 1000, 1 << 20])
def test_compressed_blocks_after_stored_ones_may_refer_back_into_them(step: int) -> None:
    head = random.Random(2).randbytes(100_000)
    tail = head[-20_000:] * 2  # compresses to back-references into the stored output
    c = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=head[-WINDOW:])
    compressed = c.compress(tail) + c.flush()
    with pytest.raises(zlib.error):  # it really needs the earlier output
        zlib.decompressobj(wbits=-15).decompress(compressed)
    data = wrap(stored(head, final=False) + compressed, head + tail)
    assert zlibs(data) == head + tail
    assert ours(data, step) == head + tail


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_python_gzip_at_any_level_is_read_like_zlib(level: int) -> None:
    content = (b"snapshot " * 5000) + random.Random(level).randbytes(70_000)
    data = gzip.compress(content, compresslevel=level, mtime=0)
    assert ours(data, 777) == content


def test_optional_header_fields_are_skipped_and_the_header_crc_checked() -> None:
    content = b"x" * 1000
    body = stored(content, final=True)
    fields = struct.pack("<H", 4) + b"ab\x00c" + b"name.tar\x00" + b"a comment\x00"
    head = b"\x1f\x8b\x08" + bytes([0x02 | 0x04 | 0x08 | 0x10]) + b"\x00" * 6 + fields
    good = head + struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    data = wrap(body, content, header=good)
    assert zlibs(data) == content
    assert ours(data, 1) == content
    bad = head + struct.pack("<H", (zlib.crc32(head) + 1) & 0xFFFF)
    with pytest.raises(ArchiveError, match="header CRC"):
        ours(wrap(body, content, header=bad), 64)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"PK\x03\x04" + b"\0" * 20, "not a gzip"),
        (b"\x1f\x8b\x07" + b"\0" * 20, "compression method"),
        (b"\x1f\x8b\x08\x20" + b"\0" * 20, "flags"),
        (HEADER + b"\x06" + b"\0" * 20, "invalid block type"),
        (HEADER + b"\x00\x05\x00\x00\x00" + b"\0" * 20, "stored block lengths"),
        (wrap(stored(b"abc", final=True), b"abd"), "CRC-32"),
        (HEADER + stored(b"abc", final=True) + struct.pack("<II", zlib.crc32(b"abc"), 4), "length"),
        (go_style(b"abc") + b"\0", "trailing"),
    ],
)
def test_bad_streams_are_refused_naming_the_problem(data: bytes, match: str) -> None:
    with pytest.raises(ArchiveError, match=match):
        ours(data, 1 << 20)


def test_a_flipped_payload_byte_fails_the_crc() -> None:
    content = random.Random(3).randbytes(200_000)
    data = bytearray(go_style(content))
    data[len(HEADER) + 100_000] ^= 0x40  # inside the second stored block's payload
    with pytest.raises(ArchiveError, match="CRC-32"):
        ours(bytes(data), 65536)


@pytest.mark.parametrize("make", ["go", "gzip0", "gzip6"])
def test_every_single_byte_flip_is_judged_like_zlib(make: str) -> None:
    """Differential: for each flipped byte both readers accept (with equal output) or both
    refuse; and every truncation is incomplete for both."""
    content = random.Random(4).randbytes(3000) + b"padding " * 500
    data = {
        "go": go_style(content),
        "gzip0": gzip.compress(content, compresslevel=0, mtime=0),
        "gzip6": gzip.compress(content, compresslevel=6, mtime=0),
    }[make]
    for offset in range(len(data)):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x01
        try:
            expected: bytes | None = zlibs(bytes(corrupt))
        except zlib.error:
            expected = None
        try:
            got: bytes | None = ours(bytes(corrupt), 997)
        except ArchiveError:
            got = None
        assert got == expected, f"offset {offset}"
    for cut in range(0, len(data), 13):
        with pytest.raises(ArchiveError):
            ours(data[:cut], 4096)


def test_a_reused_input_buffer_cannot_change_the_window_a_compressed_block_refers_to() -> None:
    head = random.Random(5).randbytes(50_000)
    tail = head[-20_000:] * 2
    c = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=head[-WINDOW:])
    data = wrap(stored(head, final=False) + c.compress(tail) + c.flush(), head + tail)
    out = bytearray()
    member = GzipMember(out.extend)
    buf = bytearray(4096)
    for i in range(0, len(data), len(buf)):
        piece = data[i : i + len(buf)]
        buf[: len(piece)] = piece
        member.feed(memoryview(buf)[: len(piece)])
        buf[:] = b"\xff" * len(buf)  # the caller scribbles over its buffer
    assert member.eof
    assert bytes(out) == head + tail
