"""The product image built on this machine (``hack/devenv/images.py``): a docker-archive that
``ctr images import`` takes, cached by its inputs, and an image that actually runs the controller
and the executor as the non-root user, on a read-only root, with exactly the locked dependencies.

Needs root and the packages of hack/install-deps.sh (docker.io, containerd, runc, debootstrap);
a missing one FAILS with the tool's name (never skips). A cold build takes about 2 minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devenv.images import (
    KEY_LABEL,
    PRODUCT_REF,
    Docker,
    ImageArchive,
    archive_config,
    base_inputs,
    private_dockerd,
    product_image,
    product_inputs,
    product_key,
    project_version,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
UID = "65532:65532"
OCI = "org.opencontainers.image."

# Runs inside the image: what the controller and the executor need, as JSON on stdout.
PROBE = r"""
import errno, importlib.metadata as md, json, os, ssl, sys, zoneinfo
import controller.app, executor.__main__  # every import of both entry points resolves
try:
    open("/probe-write-test", "w")
    root = "writable"
except OSError as exc:
    root = errno.errorcode[exc.errno]
zoneinfo.ZoneInfo("Europe/Berlin")  # time-zone schedules need the tz database
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "root": root,
    "version": list(sys.version_info[:3]), "prefix": sys.prefix,
    "cas": ssl.create_default_context().cert_store_stats()["x509_ca"],
    "dists": {d.metadata["Name"]: d.version for d in md.distributions()},
}))
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line):
            pins[normalize(m[1])] = m[2]
    assert len(pins) > 20, pins
    return pins


@pytest.fixture(scope="module")
def image() -> ImageArchive:
    if os.geteuid() != 0:
        raise AssertionError("building the image needs root (debootstrap, a private dockerd)")
    return product_image()


@pytest.fixture(scope="module")
def loaded(image: ImageArchive) -> Iterator[tuple[Docker, str]]:
    """The private dockerd with the archive loaded; the image is run by its ID (the config's
    digest), so a later build re-using the tag cannot swap it."""
    image_id, _ = archive_config(image.archive)
    with private_dockerd() as docker:
        docker("load", "--input", str(image.archive))
        yield docker, image_id


def run(
    loaded: tuple[Docker, str], *args: str, entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A throwaway container: no network, read-only root, no capabilities, the image's user."""
    docker, image_id = loaded
    argv = ["run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]  # fmt: skip
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return docker(*argv, image_id, *args, check=False, timeout=120)


# -- the archive ---------------------------------------------------------------------------------


def test_archive_is_one_image_with_the_shipped_ref_and_intact_layers(image: ImageArchive) -> None:
    assert image.ref == PRODUCT_REF
    assert image.archive.name == f"product-{image.key}.tar"
    with tarfile.open(image.archive) as tar:
        names = set(tar.getnames())
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
        assert len(manifest) == 1, manifest
        assert manifest[0]["RepoTags"] == [PRODUCT_REF]
        config_file = tar.extractfile(manifest[0]["Config"])
        assert config_file is not None
        config_bytes = config_file.read()
        config = json.loads(config_bytes)
        assert Path(manifest[0]["Config"]).stem == hashlib.sha256(config_bytes).hexdigest()
        diff_ids = config["rootfs"]["diff_ids"]
        assert len(diff_ids) == len(manifest[0]["Layers"]) >= 2  # base + the venv
        for layer, diff_id in zip(manifest[0]["Layers"], diff_ids, strict=True):
            assert layer in names
            data = tar.extractfile(layer)
            assert data is not None
            digest = hashlib.sha256()
            while chunk := data.read(1 << 20):
                digest.update(chunk)
            assert f"sha256:{digest.hexdigest()}" == diff_id, layer


def test_image_config_is_the_dockerfiles(image: ImageArchive) -> None:
    _, config = archive_config(image.archive)
    assert config["os"] == "linux"
    cfg: dict[str, Any] = config["config"]  # type: ignore[assignment]
    assert cfg["User"] == UID
    assert cfg["Entrypoint"] == ["python", "-m"]
    assert cfg["Cmd"] == ["controller"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert cfg["Labels"][KEY_LABEL] == image.key
    oci = {k.removeprefix(OCI): v for k, v in cfg["Labels"].items() if k.startswith(OCI)}
    assert oci["version"] == project_version()
    assert oci["licenses"] == "Apache-2.0"
    assert oci["source"].startswith("https://")
    assert oci["base.name"].startswith("openbao-backup-base:")  # the build arg reached it
    assert {"title", "description", "revision"} <= oci.keys()


# -- the cache -----------------------------------------------------------------------------------


def test_a_warm_call_reuses_the_archive_without_dockerd(image: ImageArchive) -> None:
    t0 = time.monotonic()
    again = product_image()
    elapsed = time.monotonic() - t0
    assert again == image
    assert elapsed < 1.0, f"warm product_image() took {elapsed:.2f}s"


def test_the_key_follows_file_contents_not_times(tmp_path: Path) -> None:
    base = base_inputs()
    files = product_inputs()
    assert {"Dockerfile", ".dockerignore", "requirements/runtime.txt", "pyproject.toml"} <= set(
        files
    )
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "controller", "executor"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert {t for t in tracked if (ROOT / t).is_file()} <= set(files)
    key = product_key(base, files)

    name = "controller/settings.py"
    same = tmp_path / "same.py"
    shutil.copyfile(files[name], same)  # same bytes, a new mtime
    os.utime(same, (0, 0))
    assert product_key(base, {**files, name: same}) == key

    edited = tmp_path / "edited.py"
    edited.write_bytes(files[name].read_bytes() + b"\n# an uncommitted edit\n")
    assert product_key(base, {**files, name: edited}) != key

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_bytes(files["Dockerfile"].read_bytes() + b"\n")
    assert product_key(base, {**files, "Dockerfile": dockerfile}) != key


# -- the image runs ------------------------------------------------------------------------------


def test_image_imports_both_entry_points_as_nonroot_on_a_read_only_root(
    loaded: tuple[Docker, str],
) -> None:
    proc = run(loaded, "-c", PROBE, entrypoint="python")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (got["uid"], got["gid"]) == (65532, 65532)
    assert got["root"] == "EROFS"
    assert tuple(got["version"]) >= (3, 11, 3)
    assert got["prefix"] == "/opt/venv"
    assert got["cas"] > 50  # Debian's ca-certificates: TLS to OpenBao, S3, GCS, Azure
    installed = {normalize(name): version for name, version in got["dists"].items()}
    # Exactly the lock, plus the project; pip and setuptools left the runtime venv.
    assert installed == {**locked_pins(), "openbao-backup": "0.1.0"}


def test_entrypoint_runs_the_controller_and_the_executor(loaded: tuple[Docker, str]) -> None:
    proc = run(loaded, "controller", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m controller")

    # Without its configuration the executor ends with its report before any network call.
    proc = run(loaded, "executor", "backup")
    assert proc.returncode == 10, (proc.stdout, proc.stderr)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "failed"
    assert report["error"]["class"] == "configuration"
