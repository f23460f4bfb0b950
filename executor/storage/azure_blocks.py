"""One Azure block-blob upload: staged blocks from reused buffers, one commit.

Guarantees:

* a snapshot is uploaded as blocks of ``OBB_PART_SIZE`` bytes with ``stage_block`` (at most
  ``OBB_CONCURRENCY`` in flight, each sent without a copy from a reused part buffer,
  :mod:`executor.storage.parts`) and
  becomes visible only through ONE ``commit_block_list`` after the verifier accepted the
  stream; the commit carries the sha256/size and context as blob metadata (atomically) and
  ``If-None-Match: *`` (an existing blob is never overwritten);
* every block is integrity-checked by the service at the cheapest cost available
  (:func:`block_md5`): over HTTPS by TLS alone (azure-storage-blob's own guidance: a
  transactional hash adds nothing over HTTPS; MD5 runs at ~0.3-0.7 GiB/s here, the largest
  cost only we paid, and CRC64 needs the native azure-storage-extensions package, which
  Azurite does not check either); over plain HTTP (Azurite, tests) each block carries a
  transactional MD5 (``Content-MD5``), computed in a worker thread, that the service checks;
* on failure nothing is committed: :meth:`AzureUpload.abort` cancels the blocks in flight;
  staged blocks stay invisible and the service discards them (after a week); there is no blob
  at the key;
* block ids are the zero-padded block number (equal length; base64 on the wire); at most
  50,000 blocks (``OBB_PART_SIZE`` x 50,000 is the largest snapshot);
* metadata names are made C# identifiers (:func:`meta_name`), as Azure requires.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

from azure.core import MatchConditions
from azure.storage.blob import BlobBlock, ContentSettings

from executor.log import get_logger
from executor.storage.azure_errors import translated
from executor.storage.base import META_SHA256, META_SIZE, NumberedUpload
from executor.storage.parts import Part

log = get_logger("executor.storage.azure")

MAX_BLOCKS = 50_000


def meta_name(name: str) -> str:
    """Azure metadata names must be C# identifiers."""
    return name.replace("-", "_")


def _md5(data: memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def block_md5(*, scheme: str) -> bool:
    """Whether blocks carry a transactional MD5: only without TLS (see the module)."""
    return scheme.lower() != "https"


def _block_id(number: int) -> str:
    """Equal-length block ids (the SDK base64-encodes them on the wire)."""
    return f"{number:08d}"


class AzureUpload(NumberedUpload[str]):
    """One block-blob upload (see module guarantees)."""

    unit = "blocks"

    def __init__(
        self,
        *,
        blob: Any,
        container: str,
        key: str,
        part_size: int,
        concurrency: int,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(
            key=key, part_size=part_size, concurrency=concurrency, max_parts=MAX_BLOCKS
        )
        self._blob = blob
        self._container = container
        self._metadata = dict(metadata)
        self._md5 = block_md5(scheme=str(getattr(blob, "scheme", "https")))

    async def _upload_part(self, number: int, part: Part) -> str:
        block_id = _block_id(number)
        extra: dict[str, bytes] = {}
        if self._md5:  # off the event loop (the SDK would hash inline)
            extra["transactional_content_md5"] = await asyncio.to_thread(_md5, part.view)
        with translated(f"staging block {number} of {self.key}", container=self._container):
            await self._blob.stage_block(block_id, part.body(), length=len(part), **extra)
        return block_id

    async def commit(self, *, sha256: str, size: int) -> None:
        ids = await self._all_parts(size=size)
        metadata = {
            **self._metadata,
            meta_name(META_SHA256): sha256,
            meta_name(META_SIZE): str(size),
        }
        with translated(f"committing {self.key}", container=self._container):
            await self._blob.commit_block_list(
                [BlobBlock(block_id=block_id) for block_id in ids],
                content_settings=ContentSettings(content_type="application/gzip"),
                metadata=metadata,
                match_condition=MatchConditions.IfMissing,
            )
        self._finished = True
        log.info("block blob committed", key=self.key, blocks=len(ids), size=size)

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._uploader.cancel()
        log.info("upload abandoned: nothing committed, staged blocks expire", key=self.key)
