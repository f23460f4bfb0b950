"""The real servers behind the product's boundaries answer the way the product needs.

Each storage server round-trips an object through the client library the product uses;
OpenBao serves a valid Raft snapshot archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid

import aiohttp
import pytest
from aiobotocore.session import get_session
from devenv.openbao import OpenBao
from devenv.storage import (
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    StorageServer,
    azurite_connection_string,
)

pytestmark = pytest.mark.integration

PAYLOAD = b"openbao-backup\x00" * 70_000  # ~1 MiB, binary


async def test_openbao_serves_a_valid_snapshot(openbao: OpenBao) -> None:
    openbao.kv_put("foundation/probe", {"value": "hello"})
    status, body = openbao.request("GET", "sys/storage/raft/snapshot", timeout=60)
    assert status == 200
    assert body[:2] == b"\x1f\x8b", "snapshot is not gzip"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body)), mode="r:") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert {"meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"} <= set(members)
    assert members["SHA256SUMS.sealed"], "sealed hash file is empty"
    sums: dict[str, str] = {}
    for line in members["SHA256SUMS"].decode().splitlines():
        if line:
            digest, name = line.split()
            sums[name] = digest
    for name in ("meta.json", "state.bin"):
        assert sums[name] == hashlib.sha256(members[name]).hexdigest()
    meta = json.loads(members["meta.json"])
    assert meta["Index"] > 0


async def test_s3_round_trip_with_aiobotocore(s3_server: StorageServer, s3_bucket: str) -> None:
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name=MOTO_REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    ) as s3:
        key = f"probe/{uuid.uuid4().hex}.bin"
        await s3.put_object(Bucket=s3_bucket, Key=key, Body=PAYLOAD)
        got = await s3.get_object(Bucket=s3_bucket, Key=key)
        async with got["Body"] as stream:
            assert await stream.read() == PAYLOAD
        listed = await s3.list_objects_v2(Bucket=s3_bucket)
        assert [o["Key"] for o in listed["Contents"]] == [key]


async def test_gcs_round_trip_with_gcloud_aio(gcs_server: StorageServer, gcs_bucket: str) -> None:
    from gcloud.aio.storage import Storage

    async with aiohttp.ClientSession() as http:
        storage = Storage(session=http, api_root=gcs_server.endpoint)  # type: ignore[arg-type]
        name = f"probe/{uuid.uuid4().hex}.bin"
        await storage.upload(gcs_bucket, name, PAYLOAD)
        assert await storage.download(gcs_bucket, name) == PAYLOAD
        meta = await storage.download_metadata(gcs_bucket, name)
        assert int(meta["size"]) == len(PAYLOAD)


async def test_azure_round_trip_with_blob_aio(
    azurite_server: StorageServer, azure_container: str
) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    conn = azurite_connection_string(azurite_server.endpoint)
    async with BlobServiceClient.from_connection_string(conn) as svc:
        blob = svc.get_blob_client(azure_container, f"probe/{uuid.uuid4().hex}.bin")
        await blob.upload_blob(PAYLOAD)
        downloaded = await (await blob.download_blob()).readall()
        assert downloaded == PAYLOAD
