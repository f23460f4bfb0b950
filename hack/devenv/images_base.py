"""The product image's base (part of ``devenv.images``): a local stand-in for
``python:3.11-slim-bookworm``, its inputs and key, and its root filesystem as a tarball.

Guarantees:

* the base image is a local stand-in for ``python:3.11-slim-bookworm``: ``debootstrap
  --variant=minbase bookworm`` from the Debian mirror apt uses here (with its -updates and
  -security suites), the runtime libraries of CPython's extension modules, and the host
  toolchain's CPython (``sys.base_prefix`` of .venv's interpreter) copied to /usr/local as the
  official image lays it out (hack/images/base-rootfs.sh), imported with ``docker import`` as
  ``openbao-backup-base:<key>``. Why not Debian's python3.11: bookworm ships 3.11.2, and the
  project requires >= 3.11.3 (gcloud-aio-auth's floor). Its key hashes the script, the apt
  sources' text and the interpreter (version, libpython's bytes), not the mirror's state: a cached
  base keeps what the mirror served when it was built (listed in ``base-<key>.rootfs.packages``).
  For the same mirror state the root-filesystem tarball, hence the base layer, is byte-identical
  (file times clamped to the newest suite's Release date);
* the root-filesystem steps run with a clean PATH (Debian's binaries, never /usr/local's); each
  is timed (debootstrap, python, verify, pack) and the tarball is cached by the base key.

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devenv.images_steps import (
    ROOT,
    SCRIPTS,
    SYSTEM_PATH,
    ImageBuildError,
    Timings,
    cache_dir,
    input_hash,
    need_tools,
    run_step,
)

BASE_SCRIPT = SCRIPTS / "base-rootfs.sh"
BASE_REPO = "openbao-backup-base"
# Bump to invalidate every cached base image (also covers what is passed to docker import).
BASE_BUILDER = "images-base/1"
_DEBIAN_SUITES = {"bookworm", "bookworm-updates", "bookworm-security"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


@dataclass(frozen=True)
class BaseInputs:
    key: str
    sources: str  # deb822 text of the Debian suites, written into the image
    mirror: str  # the bookworm suite's URI, for debootstrap
    python_prefix: Path
    python_version: str  # e.g. "3.11.7"

    @property
    def ref(self) -> str:
        return f"{BASE_REPO}:{self.key}"


def _stanzas(text: str) -> list[tuple[str, dict[str, str]]]:
    """deb822 paragraphs: (raw text, {field: value}); '#' lines kept in the raw text only."""
    out: list[tuple[str, dict[str, str]]] = []
    for raw in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = ""
        for line in raw.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                last = last.strip().lower()
                fields[last] = value.strip()
        if fields:
            out.append((raw.strip("\n"), fields))
    return out


def debian_sources(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(deb822 text of the host's enabled Debian bookworm suites, the bookworm suite's URI)."""
    stanzas: list[str] = []
    mirror = ""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for raw, f in _stanzas(path.read_text()):
            suites = set(f.get("suites", "").split())
            if f.get("enabled", "yes").lower() == "no" or "deb" not in f.get("types", "").split():
                continue
            if not suites or not suites <= _DEBIAN_SUITES:
                continue
            stanzas.append(raw)
            if "bookworm" in suites and not mirror:
                mirror = f.get("uris", "").split()[0]
    one_line = apt_dir / "sources.list"
    for line in one_line.read_text().splitlines() if one_line.exists() else []:
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        rest = words[1:]
        if rest and rest[0].startswith("["):  # [options]: the image uses Debian's keyring
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 3 and rest[1] in _DEBIAN_SUITES:
            stanzas.append(
                f"Types: deb\nURIs: {rest[0]}\nSuites: {rest[1]}\n"
                f"Components: {' '.join(rest[2:])}\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
            )
            if rest[1] == "bookworm" and not mirror:
                mirror = rest[0]
    if not mirror:
        raise ImageBuildError(
            f"no enabled Debian bookworm apt source in {apt_dir}/sources.list(.d): the base image "
            "is debootstrapped from the mirror apt uses"
        )
    return "\n\n".join(stanzas) + "\n", mirror


def _toolchain_python() -> tuple[Path, str]:
    """(sys.base_prefix, version) of the project's interpreter (.venv's)."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        raise ImageBuildError(f"{python} is missing: run hack/install-deps.sh")
    code = "import json, sys; print(json.dumps([sys.base_prefix, list(sys.version_info[:3])]))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    prefix, (major, minor, micro) = json.loads(out.stdout)
    if (major, minor) != (3, 11) or micro < 3:
        raise ImageBuildError(
            f"the image's CPython comes from {prefix}, which is {major}.{minor}.{micro}; "
            "it must be 3.11.x with x >= 3 (pyproject: requires-python >= 3.11.3)"
        )
    return Path(prefix), f"{major}.{minor}.{micro}"


def base_inputs() -> BaseInputs:
    sources, mirror = debian_sources()
    prefix, version = _toolchain_python()
    # The interpreter's build: its library's bytes (a rebuilt 3.11.7 is another input).
    libpython = next(iter(sorted((prefix / "lib").glob("libpython3*.so.1.0"))), None)
    if libpython is None:
        raise ImageBuildError(f"{prefix}/lib has no libpython3*.so.1.0 (a shared-library build)")
    key = input_hash(
        BASE_BUILDER.encode(),
        _ARCH.encode(),
        BASE_SCRIPT.read_bytes(),
        sources.encode(),
        mirror.encode(),
        json.dumps(import_changes(version)).encode(),
        f"{prefix}\0{version}".encode(),
        libpython.read_bytes(),
    )[:16]
    return BaseInputs(key, sources, mirror, prefix, version)


def import_changes(python_version: str) -> list[str]:
    """The image config ``docker import`` sets, as python:3.11-slim-bookworm has it."""
    return [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={python_version}",
        'CMD ["python3"]',
    ]


def base_rootfs(base: BaseInputs, t: Timings) -> Path:
    """The base image's root filesystem as a tarball, cached by the base key."""
    tarball = cache_dir() / f"base-{base.key}.rootfs.tar"
    if tarball.exists():
        return tarball
    need_tools("debootstrap", "unshare", "chroot", "strip")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root")
    work = cache_dir() / "tmp" / "base"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs, sources = work / "rootfs", work / "debian.sources"
    sources.write_text(base.sources)
    log = cache_dir() / "logs" / f"base-{base.key}.log"
    log.unlink(missing_ok=True)
    env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LC_ALL": "C"}
    script = ["sh", str(BASE_SCRIPT)]
    try:
        with t.stage("debootstrap"):
            argv = [*script, "debootstrap", str(rootfs), base.mirror, str(sources)]
            run_step(argv, log=log, what="debootstrap", env=env)
        with t.stage("python"):
            argv = [*script, "python", str(rootfs), str(base.python_prefix)]
            run_step(argv, log=log, what="copying CPython", env=env)
        with t.stage("verify"):
            run_step([*script, "verify", str(rootfs)], log=log, what="checking the base", env=env)
        with t.stage("pack"):
            part = tarball.with_suffix(".part")
            packages = tarball.with_suffix(".packages")  # the suites' dates, the packages
            argv = [*script, "pack", str(rootfs), str(part), str(packages)]
            run_step(argv, log=log, what="packing", env=env)
            part.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball
