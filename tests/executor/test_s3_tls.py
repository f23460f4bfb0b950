"""The S3 path as it runs against AWS: over TLS, where each part carries a CRC32 (the check S3
verifies on the part) and the payload is not hashed a second time for the signature.

moto serves HTTPS here with a certificate from a fresh test CA (``OBB_STORAGE_CACERT``), so
the executor takes exactly the branch production takes (``part_checksum`` is true); the
plain-HTTP branch (signed payload) is what the rest of tests/executor runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devenv.certs import make_pki
from devenv.openbao import OpenBao
from devenv.storage import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY, start_moto

from tests.executor.harness import cluster_env, run_executor, storage_env, token_env


@pytest.fixture
def tls_moto(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """moto on https://127.0.0.1:PORT; (endpoint, CA bundle)."""
    pki = make_pki(tmp_path / "pki")
    srv = start_moto(tmp_path, tls=pki)
    try:
        yield srv.endpoint, pki.ca_cert
    finally:
        srv.stop()


def _client(endpoint: str, ca: Path) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=MOTO_REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        verify=str(ca),
    )


async def test_backup_over_tls_sends_crc32_parts(
    tls_moto: tuple[str, Path], openbao: OpenBao, tmp_path: Path
) -> None:
    endpoint, ca = tls_moto
    s3 = _client(endpoint, ca)
    s3.create_bucket(Bucket="tls-bucket")
    env = {
        **cluster_env(),
        **token_env(openbao.addr, openbao.root_token, tmp_path),
        **storage_env("s3", endpoint=endpoint, bucket="tls-bucket"),
        "OBB_STORAGE_CACERT": str(ca),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr
    assert run.report.key is not None
    body = s3.get_object(Bucket="tls-bucket", Key=run.report.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == run.report.sha256
    head = s3.head_object(Bucket="tls-bucket", Key=run.report.key, ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32"), f"the object has no CRC32 checksum: {head}"
    assert "ChecksumSHA256" not in head
