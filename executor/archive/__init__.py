"""Inline verification of an OpenBao Raft snapshot stream, in constant memory.

Guarantees:

* :class:`SnapshotVerifier` is fed the exact bytes of a snapshot as they stream past and keeps
  the SHA-256 and length of the whole stream; it never holds more than what
  :mod:`executor.archive.gunzip` holds (a gzip header, 32 KiB of output, one inflate step),
  one 512-byte tar header and the three small members (``meta.json`` <= 1 MiB,
  ``SHA256SUMS`` and ``SHA256SUMS.sealed`` <= 64 KiB each, :mod:`executor.archive.tar`);
  ``state.bin`` is only hashed, whatever its size;
* :meth:`SnapshotVerifier.finish` returns a :class:`VerifiedSnapshot` only if ALL of these hold,
  and raises :class:`~executor.errors.ArchiveError` naming the first failure otherwise:

  - the stream is one complete gzip member whose trailer's CRC-32 and length match the
    decompressed bytes (:class:`~executor.archive.gunzip.GzipMember`), with nothing after it;
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

Cost: every byte is hashed twice with SHA-256 (the stream, for the manifest; ``state.bin``, for
``SHA256SUMS``): different bytes (the gzip framing lies between them), so neither hash can be
derived from the other, and both are kept. The gzip CRC-32 is the only check of the tar
headers and ``SHA256SUMS.sealed`` against corruption on the way from OpenBao, so it is kept
too; what was made cheaper is how it is computed (stored blocks are not copied by an inflate,
see :mod:`executor.archive.gunzip`).

What it cannot check: ``SHA256SUMS.sealed`` is sealed with the cluster's barrier keys, so only
OpenBao can verify it (at restore time).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from executor.archive.gunzip import GzipMember
from executor.archive.tar import MEMBERS, META, SEALED, STATE, SUMS, TarReader
from executor.errors import ArchiveError

__all__ = [
    "MEMBERS",
    "META",
    "SEALED",
    "STATE",
    "SUMS",
    "SnapshotMeta",
    "SnapshotVerifier",
    "VerifiedSnapshot",
    "verify_bytes",
]

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


class SnapshotVerifier:
    """Feed snapshot bytes in order; :meth:`finish` proves the stream complete (see module)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._size = 0
        self._tar = TarReader()
        self._gzip = GzipMember(self._tar.feed)
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
        self._gzip.feed(data)

    def finish(self) -> VerifiedSnapshot:
        if self._size == 0:
            raise ArchiveError("empty snapshot stream (0 bytes)")
        if not self._gzip.eof:
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
    def _check_sums(tar: TarReader) -> None:
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
