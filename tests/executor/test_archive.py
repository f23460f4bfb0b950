"""The inline snapshot verifier: every incomplete or inconsistent archive is refused."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path

import pytest

from executor.archive import SnapshotVerifier, VerifiedSnapshot, verify_bytes
from executor.errors import ArchiveError, VerificationError
from tests.executor import snapshots


def feed_in(data: bytes, step: int) -> VerifiedSnapshot:
    v = SnapshotVerifier()
    for i in range(0, len(data), step):
        v.feed(data[i : i + step])
    return v.finish()


def test_valid_archive_reports_hash_size_and_meta() -> None:
    data = snapshots.build(index=77, term=9)
    result = verify_bytes(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert (result.meta.index, result.meta.term, result.meta.version) == (77, 9, 1)
    assert result.meta.configuration_index == 1


@pytest.mark.parametrize("step", [1, 3, 511, 512, 513, 4096, 1 << 20])
def test_any_chunking_gives_the_same_result(step: int) -> None:
    data = snapshots.build(state=bytes(range(256)) * 50)
    assert feed_in(data, step) == verify_bytes(data)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_dialects_are_accepted(fmt: int) -> None:
    verify_bytes(snapshots.build(tar_format=fmt))


def test_compressed_gzip_is_accepted() -> None:
    verify_bytes(snapshots.build(level=6))


def test_member_order_does_not_matter() -> None:
    verify_bytes(
        snapshots.build(order=("SHA256SUMS.sealed", "SHA256SUMS", "state.bin", "meta.json"))
    )


def test_empty_stream_is_refused() -> None:
    with pytest.raises(ArchiveError, match="empty"):
        SnapshotVerifier().finish()


def test_every_truncation_is_refused() -> None:
    data = snapshots.build(state=b"x" * 5000)
    cuts = sorted({*range(0, len(data), 37), *range(max(0, len(data) - 1100), len(data))})
    for cut in cuts:
        with pytest.raises(ArchiveError):
            verify_bytes(data[:cut])


def test_truncated_tar_inside_complete_gzip_is_refused() -> None:
    raw = gzip.decompress(snapshots.build())
    end = raw.rstrip(b"\0")
    for cut in (len(end), len(end) + 512, 2048, 600):
        with pytest.raises(ArchiveError):
            verify_bytes(gzip.compress(raw[:cut], compresslevel=0))


def test_single_end_block_is_refused() -> None:
    raw = gzip.decompress(snapshots.build())
    body_end = len(raw.rstrip(b"\0"))
    body_end += (-body_end) % 512
    with pytest.raises(ArchiveError, match="incomplete"):
        verify_bytes(gzip.compress(raw[: body_end + 512], compresslevel=0))


def test_byte_flips_are_detected() -> None:
    data = snapshots.build(state=b"y" * 3000)
    for offset in range(0, len(data), max(1, len(data) // 150)):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x01
        with pytest.raises(ArchiveError):
            verify_bytes(bytes(corrupt))


@pytest.mark.parametrize("garbage", [b"x", b"\0" * 10, snapshots.build()])
def test_trailing_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(ArchiveError, match="trailing"):
        verify_bytes(snapshots.build() + garbage)


def test_trailing_garbage_in_a_later_chunk_is_refused() -> None:
    v = SnapshotVerifier()
    v.feed(snapshots.build())
    with pytest.raises(ArchiveError, match="trailing"):
        v.feed(b"more")


def test_not_gzip_fails_on_feed() -> None:
    v = SnapshotVerifier()
    with pytest.raises(ArchiveError, match="gzip"):
        v.feed(b"PK\x03\x04 this is a zip file, not a snapshot")


@pytest.mark.parametrize("missing", ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"])
def test_missing_member_is_refused(missing: str) -> None:
    with pytest.raises(ArchiveError):
        verify_bytes(snapshots.build(omit=[missing]))


def test_empty_sealed_sums_is_refused() -> None:
    with pytest.raises(ArchiveError, match=r"sealed is empty"):
        verify_bytes(snapshots.build(sealed=b""))


def test_unexpected_member_is_refused() -> None:
    with pytest.raises(ArchiveError, match="unexpected file"):
        verify_bytes(snapshots.build(extra=[("evil.sh", b"#!/bin/sh")]))


def test_duplicate_member_is_refused() -> None:
    with pytest.raises(ArchiveError, match="duplicate"):
        verify_bytes(snapshots.build(extra=[("state.bin", b"again")]))


def test_directory_entry_is_refused() -> None:
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        d = tarfile.TarInfo("meta.json")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
    with pytest.raises(ArchiveError, match="type"):
        verify_bytes(gzip.compress(raw.getvalue()))


def test_wrong_state_hash_is_refused() -> None:
    good = snapshots.sums_for({"meta.json": snapshots.meta_json(size=5), "state.bin": b"other"})
    with pytest.raises(ArchiveError, match=r"state\.bin does not match"):
        verify_bytes(snapshots.build(state=b"state", sums=good))


def test_sums_listing_extra_or_missing_files_is_refused() -> None:
    state = b"abc"
    meta = snapshots.meta_json(size=3)
    base = snapshots.sums_for({"meta.json": meta, "state.bin": state})
    with pytest.raises(ArchiveError, match="exactly"):
        verify_bytes(snapshots.build(state=state, meta=meta, sums=base.splitlines(True)[0]))
    extra = base + b"0" * 64 + b"  other\n"
    with pytest.raises(ArchiveError, match="exactly"):
        verify_bytes(snapshots.build(state=state, meta=meta, sums=extra))


@pytest.mark.parametrize("sums", [b"not a sums file\n", b"\xff\xfe\n", b"zz  state.bin\n"])
def test_malformed_sums_is_refused(sums: bytes) -> None:
    with pytest.raises(ArchiveError):
        verify_bytes(snapshots.build(sums=sums))


@pytest.mark.parametrize(
    "meta",
    [
        b"{not json",
        b"[]",
        b'{"Index": 1, "Term": 1}',
        b'{"Index": "1", "Term": 1, "Version": 1}',
        b'{"Index": -1, "Term": 1, "Version": 1}',
        b'{"Index": true, "Term": 1, "Version": 1}',
    ],
)
def test_bad_meta_is_refused(meta: bytes) -> None:
    state = b"s"
    sums = snapshots.sums_for({"meta.json": meta, "state.bin": state})
    with pytest.raises(ArchiveError):
        verify_bytes(snapshots.build(state=state, meta=meta, sums=sums))


def test_meta_size_must_match_state() -> None:
    state = b"12345"
    meta = snapshots.meta_json(size=6)
    sums = snapshots.sums_for({"meta.json": meta, "state.bin": state})
    with pytest.raises(ArchiveError, match="Size=6"):
        verify_bytes(snapshots.build(state=state, meta=meta, sums=sums))


def test_oversized_small_member_is_refused_at_its_header() -> None:
    meta = b" " * (2 << 20)
    v = SnapshotVerifier()
    data = snapshots.build(meta=meta, sums=b"")
    with pytest.raises(ArchiveError, match="implausibly large"):
        v.feed(data[: 64 << 10])


def test_corrupt_tar_header_fails_early() -> None:
    raw = bytearray(gzip.decompress(snapshots.build()))
    raw[0:9] = b"xxxxxxxxx"  # the name changes, the header checksum no longer matches
    v = SnapshotVerifier()
    with pytest.raises(ArchiveError, match="checksum"):
        v.feed(gzip.compress(bytes(raw), compresslevel=0))


def test_archive_error_is_a_verification_error() -> None:
    assert issubclass(ArchiveError, VerificationError)


def test_big_state_in_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "big.snap"
    sha, size = snapshots.write_big(path, state_size=48 << 20)
    tracemalloc.start()
    try:
        v = SnapshotVerifier()
        with path.open("rb") as f:
            for chunk in snapshots.read_chunks(f, 1 << 20):
                v.feed(chunk)
        result = v.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.sha256, result.size) == (sha, size)
    assert result.meta.state_size == 48 << 20
    assert peak < 8 << 20, f"verifier peaked at {peak} bytes"
