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
* dependencies never come from an index during the build: a wheelhouse is downloaded on the host
  from the hashed locks (``pip download --require-hashes --only-binary=:all:``), put into a staged
  build context, and installed with ``--no-index --require-hashes`` under ``--network none``;
* dockerd runs only while building, private to it: its own data root (under the cache, so layers
  persist), exec root, pid file and socket; no bridge, no iptables, no IP forwarding; in a private
  mount namespace whose /run is a fresh tmpfs, so it starts its own managed containerd and never
  sees another one (nor leaves shim sockets in the host's /run). It is stopped by PID, also on
  failure. One flock (``images/.lock``) serialises builds and every use of that dockerd;
* each stage's time is printed to stderr (debootstrap, python, verify, pack, wheelhouse,
  dockerd, import, build, save).

CLI: ``PYTHONPATH=hack .venv/bin/python -m devenv.images [--gzip-size]``.
Needs root, /usr/bin/docker + /usr/sbin/dockerd (Debian's docker.io 20.10; not the newer
client-only /usr/local/bin/docker), containerd, runc, debootstrap, unshare, strip.
Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devenv.procs import Server, ServerError, log_tail

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "hack" / "images"
BASE_SCRIPT = SCRIPTS / "base-rootfs.sh"
BUILD_LOCK = SCRIPTS / "build-requirements.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"

PRODUCT_REF = "ghcr.io/openbao-backup/openbao-backup:0.1.0"
BASE_REPO = "openbao-backup-base"
BUILD_STAGE_REF = "openbao-backup-build:cache"  # the Dockerfile's build stage, kept as cache
KEY_LABEL = "org.openbao-backup.devenv.inputs"
CGROUP_PARENT = "openbao-backup-images"
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
# Bump to invalidate every cached image (also covers what this module passes to docker).
_BASE_BUILDER = "images-base/1"
_PRODUCT_BUILDER = "images-product/2"
_KEEP_ARCHIVES = 3
_DEBIAN_SUITES = {"bookworm", "bookworm-updates", "bookworm-security"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
# A clean PATH for dockerd and the root-filesystem steps: Debian's binaries, never /usr/local's.
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(RuntimeError):
    """The image could not be built (a missing tool, a failed step: the message says which)."""


@dataclass(frozen=True)
class ImageArchive:
    ref: str  # e.g. "ghcr.io/openbao-backup/openbao-backup:0.1.0"
    archive: Path  # docker-archive tarball (docker save), importable with `ctr images import`
    key: str  # the input hash


@dataclass
class Timings:
    """Seconds per stage, printed to stderr as each ends."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.monotonic() - t0
            print(f"images: {name} {self.stages[name]:.1f}s", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("OPENBAO_BACKUP_CACHE") or str(Path.home() / ".cache/openbao-backup")
    return Path(base) / "images"


# -- inputs --------------------------------------------------------------------------------------


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


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


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
    key = _sha(
        _BASE_BUILDER.encode(),
        _ARCH.encode(),
        BASE_SCRIPT.read_bytes(),
        sources.encode(),
        mirror.encode(),
        json.dumps(_import_changes(version)).encode(),
        f"{prefix}\0{version}".encode(),
        libpython.read_bytes(),
    )[:16]
    return BaseInputs(key, sources, mirror, prefix, version)


def _import_changes(python_version: str) -> list[str]:
    """The image config ``docker import`` sets, as python:3.11-slim-bookworm has it."""
    return [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={python_version}",
        'CMD ["python3"]',
    ]


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
    return _sha(*parts)[:16]


# -- running things ------------------------------------------------------------------------------


def _need(*paths: str) -> None:
    missing = [p for p in paths if shutil.which(p) is None]
    if missing:
        raise ImageBuildError(
            f"missing {', '.join(missing)}: apt-get install docker.io containerd runc debootstrap "
            "binutils util-linux (hack/install-deps.sh)"
        )


def _run(argv: Sequence[str], *, log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a build step with its output appended to ``log``; fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{what} failed (exit {proc.returncode}); log {log}:\n{log_tail(log, 30)}"
        )


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """The cache's build lock (one build, one private dockerd at a time)."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("images: waiting for another build (images/.lock)", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Docker:
    """The Debian docker client, talking to the private dockerd."""

    host: str
    config_dir: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.config_dir), DOCKER_BUILDKIT="0")
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [DOCKER, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ImageBuildError(f"docker {' '.join(args)}: exit {proc.returncode}: {proc.stderr}")
        return proc


def _stop_pid(pid_file: Path, comm: str) -> None:
    """SIGTERM, then SIGKILL, the process named in ``pid_file`` if it is still ``comm``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                return
            os.kill(pid, sig)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)


@contextlib.contextmanager
def _dockerd(t: Timings | None = None) -> Iterator[Docker]:
    """Start the private dockerd (the caller holds the lock); stop it by PID on exit."""
    t = t or Timings()
    _need(DOCKER, DOCKERD, "containerd", "runc", "unshare")
    if os.geteuid() != 0:
        raise ImageBuildError("the private dockerd needs root")
    data_root = cache_dir() / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    # A dockerd whose owner was killed outright must not share the data root with a new one.
    marker = cache_dir() / "dockerd.run"
    if marker.exists():
        _stop_daemons(Path(marker.read_text().strip()))
    run = Path(tempfile.mkdtemp(prefix="obb-dockerd-"))  # short: unix socket paths
    marker.write_text(str(run))
    (run / "client").mkdir()
    config = run / "daemon.json"
    # 20.10 writes a "trust key" to /etc/docker/key.json unless told otherwise.
    config.write_text(json.dumps({"deprecated-key-path": str(data_root / "key.json")}))
    socket_path = run / "docker.sock"
    argv = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount -t tmpfs -o mode=755 obb-dockerd-run /run && exec "$@"', "sh",
        DOCKERD,
        "--config-file", str(config),
        "--data-root", str(data_root),
        "--exec-root", str(run / "exec"),
        "--pidfile", str(run / "dockerd.pid"),
        "-H", f"unix://{socket_path}",
        "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
        "--oom-score-adjust=0",  # the VM denies CAP_SYS_RESOURCE (negative scores)
        "--cgroup-parent", f"/{CGROUP_PARENT}",  # not "docker": removed again on stop
    ]  # fmt: skip
    log = cache_dir() / "logs" / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    server = Server("dockerd", argv, log, env={"PATH": _SYSTEM_PATH, "HOME": str(run)})
    docker = Docker(host=f"unix://{socket_path}", config_dir=run / "client")

    def serving() -> bool:
        probe = ["version", "--format", "{{.Server.Version}}"]
        return docker(*probe, check=False, timeout=10).returncode == 0

    try:
        with t.stage("dockerd"):
            server.start()
            try:
                server.wait_until(serving, timeout=60, what="docker version")
            except ServerError as exc:
                raise ImageBuildError(str(exc)) from exc
        yield docker
    finally:
        server.stop(timeout=30)
        _stop_daemons(run)
        marker.unlink(missing_ok=True)


def _stop_daemons(run: Path) -> None:
    """Stop (by their pid files) what a dockerd run left, remove its run dir and cgroups.
    dockerd stops its containerd; should it have died first, containerd goes by its pid file."""
    if run.name.startswith("obb-dockerd-"):
        _stop_pid(run / "dockerd.pid", "dockerd")
        _stop_pid(run / "exec" / "containerd" / "containerd.pid", "containerd")
        shutil.rmtree(run, ignore_errors=True)
    _remove_cgroups()


def _remove_cgroups() -> None:
    """The (empty) cgroups the build's containers left in each hierarchy."""
    for parent in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        for directory in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()


@contextlib.contextmanager
def private_dockerd() -> Iterator[Docker]:
    """The build's dockerd, for a caller's own use (tests): under the build lock, so do not call
    ``product_image()`` inside it."""
    with _locked(), _dockerd() as docker:
        yield docker


# -- stages --------------------------------------------------------------------------------------


def _wheelhouse(base: BaseInputs, t: Timings) -> Path:
    """The wheels of both locks, downloaded (hashes checked) on the host, cached by the locks."""
    key = _sha(RUNTIME_LOCK.read_bytes(), BUILD_LOCK.read_bytes(), base.python_version.encode())
    directory = cache_dir() / "wheelhouse" / key[:16]
    if directory.is_dir():
        return directory
    python = base.python_prefix / "bin" / "python3"
    tmp = cache_dir() / "tmp" / "wheelhouse"
    shutil.rmtree(tmp, ignore_errors=True)
    with t.stage("wheelhouse"):
        _run(
            [str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--require-hashes", "--only-binary=:all:", "-d", str(tmp),
             "-r", str(RUNTIME_LOCK), "-r", str(BUILD_LOCK)],
            log=cache_dir() / "logs" / "wheelhouse.log",
            what="pip download (wheelhouse)",
        )  # fmt: skip
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(directory)
    return directory


def _base_rootfs(base: BaseInputs, t: Timings) -> Path:
    """The base image's root filesystem as a tarball, cached by the base key."""
    tarball = cache_dir() / f"base-{base.key}.rootfs.tar"
    if tarball.exists():
        return tarball
    _need("debootstrap", "unshare", "chroot", "strip")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root")
    work = cache_dir() / "tmp" / "base"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs, sources = work / "rootfs", work / "debian.sources"
    sources.write_text(base.sources)
    log = cache_dir() / "logs" / f"base-{base.key}.log"
    log.unlink(missing_ok=True)
    env = {"PATH": _SYSTEM_PATH, "HOME": "/root", "LC_ALL": "C"}
    script = ["sh", str(BASE_SCRIPT)]
    try:
        with t.stage("debootstrap"):
            argv = [*script, "debootstrap", str(rootfs), base.mirror, str(sources)]
            _run(argv, log=log, what="debootstrap", env=env)
        with t.stage("python"):
            argv = [*script, "python", str(rootfs), str(base.python_prefix)]
            _run(argv, log=log, what="copying CPython", env=env)
        with t.stage("verify"):
            _run([*script, "verify", str(rootfs)], log=log, what="checking the base", env=env)
        with t.stage("pack"):
            part = tarball.with_suffix(".part")
            packages = tarball.with_suffix(".packages")  # the suites' dates, the packages
            argv = [*script, "pack", str(rootfs), str(part), str(packages)]
            _run(argv, log=log, what="packing", env=env)
            part.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


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
    with _locked():
        if archive.exists():  # built by whoever held the lock before us
            return result
        shutil.rmtree(cache_dir() / "tmp", ignore_errors=True)  # a crashed run's leftovers
        wheelhouse = _wheelhouse(base, t)
        rootfs = _base_rootfs(base, t)
        ctx = _stage_context(files, wheelhouse)
        try:
            with _dockerd(t) as docker:
                with t.stage("import"):
                    if docker("image", "inspect", base.ref, check=False).returncode != 0:
                        changes = [a for c in _import_changes(base.python_version)
                                   for a in ("--change", c)]  # fmt: skip
                        docker("import", *changes, "--message", _BASE_BUILDER,
                               str(rootfs), base.ref)  # fmt: skip
                with t.stage("build"):
                    log = cache_dir() / "logs" / f"build-{key}.log"
                    log.unlink(missing_ok=True)
                    build = [DOCKER, "build", "--network", "none", "--force-rm",
                             "--build-arg", f"BASE_IMAGE={base.ref}",
                             "--build-arg", f"VERSION={project_version()}"]  # fmt: skip
                    # The build stage gets a tag of its own: otherwise its layers (the
                    # dependency install) are dangling images, pruned below, and never reused.
                    _run(
                        [*build, "--target", "build", "-t", BUILD_STAGE_REF, str(ctx)],
                        log=log, what="docker build (build stage)", env=docker.env(),
                    )  # fmt: skip
                    _run(
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
