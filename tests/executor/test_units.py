"""Small pure pieces: key layout, manifests, redaction, the part pipeline."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from executor import secrets
from executor.errors import InternalError, StorageError
from executor.layout import (
    Manifest,
    cluster_prefix,
    manifest_key,
    rfc3339,
    snapshot_key,
    snapshot_time,
)
from executor.storage.base import NumberedUpload, PartUploader, backoff
from executor.storage.parts import Part, PartBody, PartBuffer

T = dt.datetime(2026, 11, 21, 23, 30, 45, 999999, tzinfo=dt.UTC)


def test_snapshot_key_layout() -> None:
    key = snapshot_key(
        path_prefix="backups/prod", namespace="ns", cluster="bao", taken_at=T, suffix="0123abcd"
    )
    assert key == "backups/prod/ns/bao/20261121T233045Z-0123abcd.snap"
    assert manifest_key(key) == key + ".manifest.json"
    assert snapshot_time(key) == T.replace(microsecond=0)
    assert cluster_prefix(path_prefix="", namespace="ns", cluster="bao") == "ns/bao/"
    no_prefix = snapshot_key(
        path_prefix="", namespace="ns", cluster="bao", taken_at=T, suffix="ffffffff"
    )
    assert no_prefix.startswith("ns/bao/20261121T233045Z")


def test_keys_sort_by_time() -> None:
    earlier = snapshot_key(
        path_prefix="p",
        namespace="n",
        cluster="c",
        taken_at=T - dt.timedelta(seconds=1),
        suffix="ffffffff",
    )
    later = snapshot_key(path_prefix="p", namespace="n", cluster="c", taken_at=T, suffix="00000000")
    assert earlier < later


def test_key_time_is_utc() -> None:
    local = T.astimezone(dt.timezone(dt.timedelta(hours=5)))
    key = snapshot_key(
        path_prefix="", namespace="n", cluster="c", taken_at=local, suffix="00000000"
    )
    assert "20261121T233045Z" in key


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="suffix"):
        snapshot_key(path_prefix="", namespace="n", cluster="c", taken_at=T, suffix="XYZ")
    with pytest.raises(ValueError, match="not a snapshot key"):
        manifest_key("a/b.tar")
    assert snapshot_time("a/b/not-a-snapshot.snap") is None


def manifest() -> Manifest:
    return Manifest(
        key="p/n/c/20261121T233045Z-0123abcd.snap",
        sha256="b" * 64,
        size=10,
        createdAt=rfc3339(T),
        takenAt=rfc3339(T),
        namespace="n",
        cluster="c",
        clusterUID="u",
        trigger="scheduled",
        backupName=None,
        openbaoVersion="2.7.2",
        raftIndex=5,
        raftTerm=2,
        raftConfigurationIndex=1,
        snapshotMetaVersion=1,
        executorVersion="0.1.0",
    )


def test_manifest_round_trip_and_strictness() -> None:
    m = manifest()
    assert Manifest.from_json(m.to_json()) == m
    data = json.loads(m.to_json())
    data["unknown"] = 1
    assert Manifest.from_json(json.dumps(data)) == m
    for field, value in [
        ("size", "10"),
        ("sha256", "B" * 64),
        ("raftIndex", True),
        ("v", 2),
        ("key", None),
        ("size", -1),
    ]:
        bad = dict(data, **{field: value})
        with pytest.raises(ValueError, match=r"manifest"):
            Manifest.from_json(json.dumps(bad))
    with pytest.raises(ValueError, match="not JSON"):
        Manifest.from_json(b"\x00not json")


def test_scrub_registered_values_and_known_shapes() -> None:
    secrets.register("hvs.CAESIJ-super-token")
    secrets.register("abc")  # too short to register
    text = secrets.scrub(
        "token hvs.CAESIJ-super-token; X-Vault-Token: s.other-token-value; "
        "Authorization: Bearer ya29.a0AfH6SMB; AccountKey=Eby8vdM02x==;BlobEndpoint=x; "
        "https://a.blob.core.windows.net/c?sv=2020&sig=abcDEF%2B123&se=1; "
        '{"client_token": "s.login-token", "jwt": "eyJ.x.y"} abc'
    )
    for leaked in (
        "hvs.CAESIJ-super-token",
        "s.other-token-value",
        "ya29.a0AfH6SMB",
        "Eby8vdM02x==",
        "abcDEF%2B123",
        "s.login-token",
        "eyJ.x.y",
    ):
        assert leaked not in text
    assert text.endswith("abc")
    assert "BlobEndpoint=x" in text


def _cut(buf: PartBuffer, data: bytes) -> list[bytes]:
    parts: list[bytes] = []
    view = memoryview(data)
    while view:
        part, view = buf.fill(view)
        if part is not None:
            parts.append(part.view.tobytes())
            part.release()
    return parts


def test_part_buffer_cuts_exact_parts() -> None:
    buf = PartBuffer(part_size=4)
    assert _cut(buf, b"abc") == []
    assert buf.filling
    assert _cut(buf, b"defghij") == [b"abcd", b"efgh"]
    rest = buf.take_rest()
    assert rest.view.tobytes() == b"ij"
    assert not buf.filling
    assert len(buf.take_rest()) == 0  # nothing buffered: an empty final part


def test_part_buffers_are_reused_not_reallocated() -> None:
    buf = PartBuffer(part_size=1 << 10)
    parts = _cut(buf, bytes(range(256)) * 4 * 50)  # 50 parts, each released when sent
    assert len(parts) == 50
    assert parts[7] == bytes(range(256)) * 4
    assert buf.pool.allocated == 1


def test_a_released_part_cannot_be_read() -> None:
    buf = PartBuffer(part_size=2)
    part, _ = buf.fill(memoryview(b"ab"))
    assert part is not None
    part.release()
    part.release()  # idempotent
    with pytest.raises(InternalError, match="released part"):
        _ = part.view


async def test_part_body_is_a_seekable_file_over_the_part() -> None:
    body = PartBody(memoryview(b"0123456789"))
    assert body.size == 10
    assert bytes(body.read(4)) == b"0123"
    assert body.tell() == 4
    assert bytes(body.read()) == b"456789"
    assert bytes(body.read(3)) == b""
    body.seek(2)
    assert bytes(body.read(2)) == b"23"


def _one() -> Part:
    return Part(bytearray(b"x"), 1, None)


async def test_part_uploader_bounds_parts_in_flight() -> None:
    in_flight = 0
    peak = 0
    gate = asyncio.Event()

    async def upload(number: int, data: Part) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return number * 10

    up: PartUploader[int] = PartUploader(concurrency=3, upload=upload)
    for n in range(1, 4):
        await up.submit(n, _one())
    blocked = asyncio.create_task(up.submit(4, _one()))
    for _ in range(20):  # let every runnable task take its steps; no wall-clock wait
        await asyncio.sleep(0)
    assert not blocked.done(), "the producer must wait for a free slot"
    gate.set()
    await blocked
    for n in range(5, 9):
        await up.submit(n, _one())
    assert await up.drain() == {n: n * 10 for n in range(1, 9)}
    assert peak == 3


async def test_part_uploader_reports_the_first_failure() -> None:
    async def upload(number: int, data: Part) -> None:
        if number == 2:
            raise StorageError("part 2 refused")
        await asyncio.sleep(0.01)

    up: PartUploader[None] = PartUploader(concurrency=2, upload=upload)

    async def produce() -> None:
        for n in range(1, 100):
            await up.submit(n, _one())
            await asyncio.sleep(0)

    with pytest.raises(StorageError, match="part 2 refused"):
        await produce()
    await up.cancel()


async def test_part_uploader_wraps_foreign_errors() -> None:
    async def upload(number: int, data: Part) -> None:
        raise RuntimeError("boom")

    up: PartUploader[None] = PartUploader(concurrency=1, upload=upload)
    await up.submit(1, _one())
    with pytest.raises(StorageError, match="part 1 failed: RuntimeError: boom"):
        await up.drain()


async def test_numbered_upload_holds_at_most_concurrency_buffers() -> None:
    gate = asyncio.Event()
    sent: dict[int, bytes] = {}

    class Gated(NumberedUpload[int]):
        async def _upload_part(self, number: int, part: Part) -> int:
            await gate.wait()
            sent[number] = part.view.tobytes()
            return number

    up = Gated(key="k", part_size=4, concurrency=2, max_parts=100)
    data = bytes(range(42))
    writer = asyncio.create_task(up.write(data))
    for _ in range(20):  # let every runnable task take its steps; no wall-clock wait
        await asyncio.sleep(0)
    assert not writer.done(), "the producer must wait for a free buffer"
    assert up._buffer.pool.allocated == 2
    gate.set()
    await writer
    assert await up._all_parts(size=len(data)) == list(range(1, 12))
    assert b"".join(sent[n] for n in sorted(sent)) == data
    assert up._buffer.pool.allocated == 2


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff(50) == 5.0


def test_s3_parts_carry_a_crc32_only_over_tls() -> None:
    from executor.storage.s3_upload import crc32_b64, part_checksum

    assert part_checksum(endpoint=None)  # AWS's own endpoints are HTTPS
    assert part_checksum(endpoint="https://minio.example:9000")
    assert not part_checksum(endpoint="http://127.0.0.1:9000")  # signed payload instead
    # x-amz-checksum-crc32 of "123456789" (CRC-32 check value 0xCBF43926), base64 big-endian
    assert crc32_b64(memoryview(b"123456789")) == "y/Q5Jg=="


def test_azure_blocks_carry_an_md5_only_without_tls() -> None:
    from executor.storage.azure_blocks import block_md5

    assert not block_md5(scheme="https")
    assert block_md5(scheme="http")


async def test_part_body_writes_the_whole_part_again_for_a_retry() -> None:
    class Writer:
        def __init__(self) -> None:
            self.out = bytearray()

        async def write(self, chunk: bytes | bytearray | memoryview) -> None:
            self.out += chunk

    data = bytes(range(256)) * 4096  # 1 MiB: several send slices
    body = PartBody(memoryview(data))
    for _ in range(2):  # aiohttp writes the same payload object again when botocore retries
        writer = Writer()
        await body.write(writer)  # type: ignore[arg-type]
        assert bytes(writer.out) == data
    await body.close()
    writer = Writer()
    await body.write_with_length(writer, 10)  # type: ignore[arg-type]
    assert bytes(writer.out) == data[:10]
