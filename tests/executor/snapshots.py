"""Builders of OpenBao-format snapshot archives for tests and the benchmark.

An OpenBao Raft snapshot is gzip (no compression) of a tar holding meta.json, state.bin,
SHA256SUMS and SHA256SUMS.sealed, in that order. These builders produce the same shape (and
malformed variants of it) without an OpenBao.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def meta_json(*, index: int = 42, term: int = 3, size: int | None = None) -> bytes:
    meta: dict[str, Any] = {
        "Version": 1,
        "ID": "bolt-snapshot",
        "Index": index,
        "Term": term,
        "Peers": None,
        "Configuration": {"Servers": [{"Suffrage": 0, "ID": "n1", "Address": "127.0.0.1:1"}]},
        "ConfigurationIndex": 1,
    }
    if size is not None:
        meta["Size"] = size
    return (json.dumps(meta, separators=(",", ":")) + "\n").encode()


def sums_for(members: dict[str, bytes]) -> bytes:
    return b"".join(
        f"{hashlib.sha256(members[n]).hexdigest()}  {n}\n".encode()
        for n in ("meta.json", "state.bin")
        if n in members
    )


def build(
    *,
    state: bytes = b"bolt-state " * 300,
    index: int = 42,
    term: int = 3,
    sealed: bytes = b"\x0a\xb4" + b"s" * 180,
    sums: bytes | None = None,
    meta: bytes | None = None,
    omit: Iterable[str] = (),
    extra: Iterable[tuple[str, bytes]] = (),
    order: Iterable[str] = ("meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"),
    tar_format: int = tarfile.USTAR_FORMAT,
    level: int = 0,
) -> bytes:
    """A snapshot archive (valid unless told otherwise)."""
    members: dict[str, bytes] = {
        "meta.json": meta
        if meta is not None
        else meta_json(index=index, term=term, size=len(state)),
        "state.bin": state,
    }
    members["SHA256SUMS"] = sums if sums is not None else sums_for(members)
    members["SHA256SUMS.sealed"] = sealed
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        for name in order:
            if name in omit:
                continue
            _add(tar, name, members[name])
        for name, data in extra:
            _add(tar, name, data)
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


class _Pattern(io.RawIOBase):
    """``size`` bytes of a fast pseudo-random pattern, readable once."""

    def __init__(self, size: int, block: bytes) -> None:
        self._left = size
        self._block = block

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._left)
        filled = 0
        while filled < n:
            take = min(len(self._block), n - filled)
            view[filled : filled + take] = self._block[:take]
            filled += take
        self._left -= n
        return n


def _pattern_block() -> bytes:
    return os.urandom(1 << 20)


def write_big(path: Path, *, state_size: int) -> tuple[str, int]:
    """Write a snapshot with a ``state_size``-byte state.bin to ``path`` in constant memory.

    Returns (sha256, size) of the archive.
    """
    block = _pattern_block()
    digest = hashlib.sha256()
    for chunk in _pattern_chunks(state_size, block):
        digest.update(chunk)
    state_sha = digest.hexdigest()
    meta = meta_json(index=123456, term=7, size=state_size)
    sums = (f"{hashlib.sha256(meta).hexdigest()}  meta.json\n{state_sha}  state.bin\n").encode()
    with (
        path.open("wb") as out,
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=0, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
    ):
        _add(tar, "meta.json", meta)
        info = tarfile.TarInfo("state.bin")
        info.size = state_size
        info.mode = 0o600
        tar.addfile(info, io.BufferedReader(_Pattern(state_size, block), 1 << 20))
        _add(tar, "SHA256SUMS", sums)
        _add(tar, "SHA256SUMS.sealed", b"\x0a\xb4" + os.urandom(183))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size


def _pattern_chunks(size: int, block: bytes) -> Iterator[bytes]:
    left = size
    while left:
        take = min(left, len(block))
        yield block[:take]
        left -= take


def read_chunks(f: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    yield from iter(lambda: f.read(size), b"")
