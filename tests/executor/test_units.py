"""Small pure pieces: key layout, manifests, redaction, the part pipeline."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from executor import secrets
from executor.errors import StorageError
from executor.layout import (
    Manifest,
    cluster_prefix,
    manifest_key,
    rfc3339,
    snapshot_key,
    snapshot_time,
)
from executor.storage.base import PartBuffer, PartUploader, backoff

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


def test_part_buffer_cuts_exact_parts() -> None:
    buf = PartBuffer(part_size=4)
    assert buf.add(b"abc") == []
    assert buf.add(b"defghij") == [b"abcd", b"efgh"]
    assert buf.take_rest() == b"ij"
    tail = PartBuffer(part_size=4, keep_tail=True)
    assert tail.add(b"abcd") == []  # the last byte may be the end of the stream
    assert tail.add(b"e") == [b"abcd"]
    assert tail.take_rest() == b"e"


async def test_part_uploader_bounds_parts_in_flight() -> None:
    in_flight = 0
    peak = 0
    gate = asyncio.Event()

    async def upload(number: int, data: bytes) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return number * 10

    up: PartUploader[int] = PartUploader(concurrency=3, upload=upload)
    for n in range(1, 4):
        await up.submit(n, b"x")
    blocked = asyncio.create_task(up.submit(4, b"x"))
    for _ in range(20):  # let every runnable task take its steps; no wall-clock wait
        await asyncio.sleep(0)
    assert not blocked.done(), "the producer must wait for a free slot"
    gate.set()
    await blocked
    for n in range(5, 9):
        await up.submit(n, b"x")
    assert await up.drain() == {n: n * 10 for n in range(1, 9)}
    assert peak == 3


async def test_part_uploader_reports_the_first_failure() -> None:
    async def upload(number: int, data: bytes) -> None:
        if number == 2:
            raise StorageError("part 2 refused")
        await asyncio.sleep(0.01)

    up: PartUploader[None] = PartUploader(concurrency=2, upload=upload)

    async def produce() -> None:
        for n in range(1, 100):
            await up.submit(n, b"x")
            await asyncio.sleep(0)

    with pytest.raises(StorageError, match="part 2 refused"):
        await produce()
    await up.cancel()


async def test_part_uploader_wraps_foreign_errors() -> None:
    async def upload(number: int, data: bytes) -> None:
        raise RuntimeError("boom")

    up: PartUploader[None] = PartUploader(concurrency=1, upload=upload)
    await up.submit(1, b"x")
    with pytest.raises(StorageError, match="part 1 failed: RuntimeError: boom"):
        await up.drain()


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff(50) == 5.0
