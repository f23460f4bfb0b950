"""Running the executor as a subprocess against real servers, and inspecting what it left."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv.storage import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    MOTO_ACCESS_KEY,
    MOTO_REGION,
    MOTO_SECRET_KEY,
    azurite_connection_string,
)

from executor.report import Report

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    report: Report
    raw_report: str
    stdout: str
    stderr: str


async def run_executor(
    mode: str,
    env: dict[str, str],
    *,
    tmp: Path,
    timeout: float = 300,
    started: asyncio.Future[asyncio.subprocess.Process] | None = None,
) -> Run:
    """``python -m executor MODE`` with exactly ``env`` (plus PATH); the parsed report.

    ``started`` receives the process once it runs (to signal it)."""
    term = tmp / f"termination-{uuid.uuid4().hex[:6]}"
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "OBB_TERMINATION_MESSAGE_PATH": str(term),
        "OBB_STORAGE_RETRIES": "1",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "executor",
        mode,
        env=full,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if started is not None:
        started.set_result(proc)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    raw = term.read_text() if term.exists() else ""
    stdout, stderr = out.decode(), err.decode()
    assert raw, f"no termination message; exit {proc.returncode}\nstderr:\n{stderr[-4000:]}"
    assert stdout.strip() == raw, "stdout must carry the same report"
    return Run(proc.returncode, Report.from_json(raw), raw, stdout, stderr)


def cluster_env(
    *, namespace: str = "team-a", name: str = "bao", prefix: str = ""
) -> dict[str, str]:
    env = {
        "OBB_CLUSTER_NAMESPACE": namespace,
        "OBB_CLUSTER_NAME": name,
        "OBB_CLUSTER_UID": f"uid-{uuid.uuid4().hex[:8]}",
        "OBB_TRIGGER": "manual",
    }
    if prefix:
        env["OBB_PATH_PREFIX"] = prefix
    return env


def token_env(addr: str, token: str, tmp: Path) -> dict[str, str]:
    path = tmp / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(token)
    return {
        "OBB_OPENBAO_ADDR": addr,
        "OBB_AUTH_METHOD": "token",
        "OBB_OPENBAO_TOKEN_FILE": str(path),
    }


def storage_env(provider: str, *, endpoint: str, bucket: str) -> dict[str, str]:
    if provider == "s3":
        return {
            "OBB_PROVIDER": "s3",
            "OBB_BUCKET": bucket,
            "OBB_ENDPOINT": endpoint,
            "OBB_REGION": MOTO_REGION,
            "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
            "OBB_PART_SIZE": "5Mi",
        }
    if provider == "gcs":
        return {
            "OBB_PROVIDER": "gcs",
            "OBB_BUCKET": bucket,
            "OBB_ENDPOINT": endpoint,
            "OBB_EMULATOR": "true",
            "OBB_PART_SIZE": "256Ki",
        }
    return {
        "OBB_PROVIDER": "azure",
        "OBB_BUCKET": bucket,
        "OBB_ENDPOINT": endpoint,
        "OBB_AZURE_ACCOUNT": AZURITE_ACCOUNT,
        "AZURE_STORAGE_KEY": AZURITE_KEY,
        "OBB_PART_SIZE": "256Ki",
    }


# -- inspecting the bucket with the providers' plain clients ---------------------------------


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        region_name=MOTO_REGION,
    )


def list_keys(provider: str, *, endpoint: str, bucket: str) -> dict[str, int]:
    """Every committed object -> size."""
    if provider == "s3":
        out = s3_client(endpoint).list_objects_v2(Bucket=bucket)
        return {o["Key"]: o["Size"] for o in out.get("Contents", [])}
    if provider == "gcs":
        import urllib.request

        with urllib.request.urlopen(f"{endpoint}/storage/v1/b/{bucket}/o") as resp:
            data = json.loads(resp.read())
        return {o["name"]: int(o["size"]) for o in data.get("items", [])}
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azurite_connection_string(endpoint))
    return {b.name: b.size for b in svc.get_container_client(bucket).list_blobs()}


def read_object(provider: str, *, endpoint: str, bucket: str, key: str) -> bytes:
    if provider == "s3":
        data: bytes = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
        return data
    if provider == "gcs":
        import urllib.parse
        import urllib.request

        url = f"{endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media"
        with urllib.request.urlopen(url) as resp:
            body: bytes = resp.read()
            return body
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azurite_connection_string(endpoint))
    blob: bytes = svc.get_blob_client(bucket, key).download_blob().readall()
    return blob


def write_object(provider: str, *, endpoint: str, bucket: str, key: str, data: bytes) -> None:
    if provider == "s3":
        s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=data)
        return
    if provider == "gcs":
        import urllib.parse
        import urllib.request

        url = (
            f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name="
            f"{urllib.parse.quote(key, safe='')}"
        )
        req = urllib.request.Request(url, data=data, method="POST")
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200
        return
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azurite_connection_string(endpoint))
    svc.get_blob_client(bucket, key).upload_blob(data, overwrite=True)


def object_metadata(provider: str, *, endpoint: str, bucket: str, key: str) -> dict[str, str]:
    """sha256/size as the provider records them (S3: tags)."""
    if provider == "s3":
        tags = s3_client(endpoint).get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        return {t["Key"]: t["Value"] for t in tags}
    if provider == "gcs":
        import urllib.parse
        import urllib.request

        url = f"{endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}"
        with urllib.request.urlopen(url) as resp:
            meta: dict[str, str] = json.loads(resp.read()).get("metadata", {})
            return meta
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azurite_connection_string(endpoint))
    props = svc.get_blob_client(bucket, key).get_blob_properties()
    return {k.replace("_", "-"): v for k, v in props.metadata.items()}


def pending_multipart_uploads(endpoint: str, bucket: str) -> list[str]:
    out = s3_client(endpoint).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in out.get("Uploads", [])]


def gcs_session_status(uri: str) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        uri, data=b"", method="PUT", headers={"Content-Range": "bytes */*"}
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
