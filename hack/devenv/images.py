"""The project's container image, built on this machine with no image registry, cached by its
inputs, as a docker-archive that ``ctr -n k8s.io images import`` takes (the real-node lane).

Guarantees:

* ``product_image()`` returns ``ghcr.io/openbao-backup/openbao-backup:0.1.0`` (the ref the chart's
  default values and ``controller.settings.executor_image`` use) built from the project's
  ``Dockerfile``, saved with ``docker save``; the archive is cached under
  ``${OPENBAO_BACKUP_CACHE:-~/.cache/openbao-backup}/images/`` by a hash of every input: the
  base image's key, Dockerfile, .dockerignore, requirements/runtime.txt, the build backend's lock
  (hack/images/build-requirements.txt), pyproject.toml, README.md and the contents (not times)
  of controller/ and executor/ (git-tracked files plus untracked files git does not ignore, as in
  the working tree: an uncommitted edit is a new key). A warm call only hashes files (no dockerd);
* the base image is a local stand-in for ``python:3.11-slim-bookworm`` built from the Debian
  mirror apt uses and the host toolchain's CPython (``devenv.images_base`` states how, and what
  its key covers);
* dependencies never come from an index during the build: a wheelhouse is downloaded on the host
  from the hashed locks (``pip download --require-hashes --only-binary=:all:``), put into a staged
  build context, and installed with ``--no-index --require-hashes`` under ``--network none``;
* dockerd runs only while building, private to it, and is stopped by PID, also on failure
  (``devenv.images_dockerd``). One flock (``images/.lock``) serialises builds and every use of
  that dockerd (``devenv.images_steps``);
* each stage's time is printed to stderr (debootstrap, python, verify, pack, wheelhouse,
  dockerd, import, build, save).

CLI: ``PYTHONPATH=hack .venv/bin/python -m devenv.images [--gzip-size]``.
Needs root, /usr/bin/docker + /usr/sbin/dockerd (Debian's docker.io 20.10; not the newer
client-only /usr/local/bin/docker), containerd, runc, debootstrap, unshare, strip.
Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The ``X as X`` names are re-exported: importers have always taken them from here.
from devenv.images_base import BASE_BUILDER, BASE_REPO, base_rootfs, import_changes
from devenv.images_base import BaseInputs as BaseInputs
from devenv.images_base import base_inputs as base_inputs
from devenv.images_base import debian_sources as debian_sources
from devenv.images_dockerd import DOCKER, dockerd
from devenv.images_dockerd import Docker as Docker
from devenv.images_dockerd import private_dockerd as private_dockerd
from devenv.images_steps import ROOT, SCRIPTS, build_lock, input_hash, run_step
from devenv.images_steps import ImageBuildError as ImageBuildError
from devenv.images_steps import Timings as Timings
from devenv.images_steps import cache_dir as cache_dir

BUILD_LOCK = SCRIPTS / "build-requirements.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"

PRODUCT_REF = "ghcr.io/openbao-backup/openbao-backup:0.1.0"
BUILD_STAGE_REF = "openbao-backup-build:cache"  # the Dockerfile's build stage, kept as cache
KEY_LABEL = "org.openbao-backup.devenv.inputs"
# Bump to invalidate every cached product image (also covers what this module passes to docker).
_PRODUCT_BUILDER = "images-product/2"
_KEEP_ARCHIVES = 3


@dataclass(frozen=True)
class ImageArchive:
    ref: str  # e.g. "ghcr.io/openbao-backup/openbao-backup:0.1.0"
    archive: Path  # docker-archive tarball (docker save), importable with `ctr images import`
    key: str  # the input hash


def product_inputs() -> dict[str, Path]:
    """Build-context path -> file: exactly what is staged for ``docker build``."""
    files = {
        name: ROOT / name
        for name in (
            "Dockerfile",
            ".dockerignore",
            "requirements/runtime.txt",
            "pyproject.toml",
            "README.md",
        )
    }
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
         "--", "controller", "executor"],
        capture_output=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        raise ImageBuildError(f"git ls-files failed: {listed.stderr.decode(errors='replace')}")
    for name in sorted({n.decode() for n in listed.stdout.split(b"\0") if n}):
        path = ROOT / name
        if path.is_file() and "__pycache__" not in path.parts:  # skips tracked but deleted
            files[name] = path
    return files


def product_key(base: BaseInputs, files: dict[str, Path]) -> str:
    parts = [_PRODUCT_BUILDER.encode(), base.key.encode(), PRODUCT_REF.encode()]
    parts += [BUILD_LOCK.read_bytes()]
    for name in sorted(files):
        parts += [name.encode(), files[name].read_bytes()]
    return input_hash(*parts)[:16]


def _wheelhouse(base: BaseInputs, t: Timings) -> Path:
    """The wheels of both locks, downloaded (hashes checked) on the host, cached by the locks."""
    key = input_hash(
        RUNTIME_LOCK.read_bytes(), BUILD_LOCK.read_bytes(), base.python_version.encode()
    )
    directory = cache_dir() / "wheelhouse" / key[:16]
    if directory.is_dir():
        return directory
    python = base.python_prefix / "bin" / "python3"
    tmp = cache_dir() / "tmp" / "wheelhouse"
    shutil.rmtree(tmp, ignore_errors=True)
    with t.stage("wheelhouse"):
        run_step(
            [str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--require-hashes", "--only-binary=:all:", "-d", str(tmp),
             "-r", str(RUNTIME_LOCK), "-r", str(BUILD_LOCK)],
            log=cache_dir() / "logs" / "wheelhouse.log",
            what="pip download (wheelhouse)",
        )  # fmt: skip
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(directory)
    return directory


def _stage_context(files: dict[str, Path], wheelhouse: Path) -> Path:
    ctx = cache_dir() / "tmp" / "context"
    shutil.rmtree(ctx, ignore_errors=True)
    for name, path in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ctx / name)
    (ctx / "wheelhouse").mkdir()
    for wheel in wheelhouse.iterdir():
        try:
            os.link(wheel, ctx / "wheelhouse" / wheel.name)
        except OSError:
            shutil.copy2(wheel, ctx / "wheelhouse" / wheel.name)
    return ctx


def _prune(docker: Docker, base: BaseInputs, keep: Path) -> None:
    """Keep the cache bounded: other bases, dangling images, all but the newest archives."""
    tags = docker("images", BASE_REPO, "--format", "{{.Tag}}").stdout.split()
    old = [f"{BASE_REPO}:{tag}" for tag in tags if tag != base.key]
    if old:
        docker("rmi", *old, check=False)
    docker("image", "prune", "--force", check=False)
    for old_base in cache_dir().glob("base-*.rootfs.*"):
        if not old_base.name.startswith(f"base-{base.key}."):
            old_base.unlink(missing_ok=True)
    archives = sorted(
        cache_dir().glob("product-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old_archive in archives[_KEEP_ARCHIVES:]:
        if old_archive != keep:
            old_archive.unlink(missing_ok=True)


def build_product(t: Timings) -> ImageArchive:
    base = base_inputs()
    files = product_inputs()
    key = product_key(base, files)
    archive = cache_dir() / f"product-{key}.tar"
    result = ImageArchive(ref=PRODUCT_REF, archive=archive, key=key)
    if archive.exists():
        return result
    with build_lock():
        if archive.exists():  # built by whoever held the lock before us
            return result
        shutil.rmtree(cache_dir() / "tmp", ignore_errors=True)  # a crashed run's leftovers
        wheelhouse = _wheelhouse(base, t)
        rootfs = base_rootfs(base, t)
        ctx = _stage_context(files, wheelhouse)
        try:
            with dockerd(t) as docker:
                with t.stage("import"):
                    if docker("image", "inspect", base.ref, check=False).returncode != 0:
                        changes = [a for c in import_changes(base.python_version)
                                   for a in ("--change", c)]  # fmt: skip
                        docker("import", *changes, "--message", BASE_BUILDER,
                               str(rootfs), base.ref)  # fmt: skip
                with t.stage("build"):
                    log = cache_dir() / "logs" / f"build-{key}.log"
                    log.unlink(missing_ok=True)
                    build = [DOCKER, "build", "--network", "none", "--force-rm",
                             "--build-arg", f"BASE_IMAGE={base.ref}",
                             "--build-arg", f"VERSION={project_version()}"]  # fmt: skip
                    # The build stage gets a tag of its own: otherwise its layers (the
                    # dependency install) are dangling images, pruned below, and never reused.
                    run_step(
                        [*build, "--target", "build", "-t", BUILD_STAGE_REF, str(ctx)],
                        log=log, what="docker build (build stage)", env=docker.env(),
                    )  # fmt: skip
                    run_step(
                        [*build, "--label", f"{KEY_LABEL}={key}", "-t", PRODUCT_REF, str(ctx)],
                        log=log, what="docker build", env=docker.env(),
                    )  # fmt: skip
                with t.stage("save"):
                    part = archive.with_suffix(".part")
                    docker("save", "-o", str(part), PRODUCT_REF)
                    part.chmod(0o644)
                    part.replace(archive)
                _prune(docker, base, keep=archive)
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
    return result


def project_version() -> str:
    """The version pyproject.toml declares (the image's OCI version label)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def product_image() -> ImageArchive:
    """The product image as a docker-archive: built (base first) if its inputs changed."""
    return build_product(Timings())


# -- archive helpers -----------------------------------------------------------------------------


def archive_config(archive: Path) -> tuple[str, dict[str, object]]:
    """(image id, image config) of a single-image docker-archive."""
    with tarfile.open(archive) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
        config_file = tar.extractfile(manifest[0]["Config"])
        assert config_file is not None
        config: dict[str, object] = json.load(config_file)
    image_id = "sha256:" + Path(manifest[0]["Config"]).name.removesuffix(".json")
    return image_id, config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.images", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--gzip-size", action="store_true", help="also measure the gzipped size")
    args = parser.parse_args(argv)
    t = Timings()
    t0 = time.monotonic()
    try:
        image = build_product(t)
    except ImageBuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    total = time.monotonic() - t0
    size = image.archive.stat().st_size
    print(f"ref      {image.ref}")
    print(f"archive  {image.archive}")
    print(f"key      {image.key}")
    print(f"size     {size / 1e6:.1f} MB (docker-archive, uncompressed)")
    if args.gzip_size:
        packer, gzipped = zlib.compressobj(6, zlib.DEFLATED, 31), 0  # 31: gzip framing
        with image.archive.open("rb") as src:
            while chunk := src.read(1 << 20):
                gzipped += len(packer.compress(chunk))
        gzipped += len(packer.flush())
        print(f"gzipped  {gzipped / 1e6:.1f} MB")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in t.stages.items()) or "all cached"
    print(f"timings  {stages}; total {total:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
