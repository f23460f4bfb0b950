"""Tiny container images built on this machine, with no registry: the pod sandbox (pause)
image and a probe image for tests, each a single static C binary.

Guarantees:

* ``pause_image()`` compiles ``build/pause/linux/pause.c`` from the pinned k8s.io/kubernetes
  module in the Go module cache (``go env GOMODCACHE``; ``go mod download`` if missing) with
  ``gcc -static``; ``probe_image()`` compiles the probe below the same way;
* each is a docker-archive (``docker save`` layout: manifest.json, config, one layer.tar) written
  by ``docker_archive`` with fixed timestamps and owners, so the same inputs give the same bytes;
* archives are cached by a hash of their inputs (source, compiler version, architecture) under
  ``${OPENBAO_BACKUP_CACHE:-~/.cache/openbao-backup}/realnode/images/``; the ref is
  ``localhost/openbao-backup/<name>:<hash>``, so a changed input is a new image.

The probe (``/probe`` as entrypoint) runs its arguments as steps: ``report`` (uid/gid, CapEff,
NoNewPrivs, Seccomp, whether ``/`` is writable), ``connect HOST:PORT`` (3 s; prints ``ok`` or the
error text), ``echo TEXT``, ``sleep SECONDS``, ``exit CODE``; no arguments means ``report``.
Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent.parent
_BUILDER = "realnode-images/1"  # bump to invalidate every cached archive
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

PROBE_C = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void report(void) {
  char line[256];
  printf("uid=%d gid=%d\n", (int)getuid(), (int)getgid());
  FILE *f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "NoNewPrivs:", 11) ||
        !strncmp(line, "Seccomp:", 8))
      fputs(line, stdout);
  if (f) fclose(f);
  int fd = open("/probe-write-test", O_CREAT | O_WRONLY, 0644);
  printf("write /: %s\n", fd >= 0 ? "ok" : strerror(errno));
}

static void try_connect(const char *target) {
  char host[64];
  const char *colon = strrchr(target, ':');
  size_t n = colon ? (size_t)(colon - target) : 0;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  if (!colon || n >= sizeof host) { printf("connect %s: bad target\n", target); return; }
  memcpy(host, target, n); host[n] = 0;
  sa.sin_port = htons((unsigned short)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    printf("connect %s: bad address\n", target);
    return;
  }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), err = 0;
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    err = errno;
    if (err == EINPROGRESS) {
      struct pollfd p = {.fd = s, .events = POLLOUT};
      socklen_t len = sizeof err;
      if (poll(&p, 1, 3000) == 1) getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      else err = ETIMEDOUT;
    }
  }
  printf("connect %s: %s\n", target, err ? strerror(err) : "ok");
  close(s);
}

int main(int argc, char **argv) {
  if (argc < 2) report();
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "report")) report();
    else if (!strcmp(argv[i], "connect") && i + 1 < argc) try_connect(argv[++i]);
    else if (!strcmp(argv[i], "echo") && i + 1 < argc) puts(argv[++i]);
    else if (!strcmp(argv[i], "sleep") && i + 1 < argc) sleep((unsigned)atoi(argv[++i]));
    else if (!strcmp(argv[i], "exit") && i + 1 < argc) { fflush(stdout); return atoi(argv[++i]); }
    else { fprintf(stderr, "probe: unknown step %s\n", argv[i]); return 2; }
    fflush(stdout);
  }
  return 0;
}
"""


class ImageBuildError(RuntimeError):
    """A tiny image could not be built (missing compiler or module source)."""


@dataclass(frozen=True)
class LocalImage:
    ref: str
    archive: Path


def cache_root() -> Path:
    base = os.environ.get("OPENBAO_BACKUP_CACHE") or str(Path.home() / ".cache/openbao-backup")
    return Path(base) / "realnode"


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, (data, mode) in sorted(members.items()):
            info = _reproducible(tarfile.TarInfo(name))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(
    path: Path, *, ref: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], user: str
) -> None:
    """Write a one-layer docker-archive (as ``docker save`` makes) with ``files`` at ``/``."""
    layer = _tar(files)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": _ARCH,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": _BUILDER}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]
    outer = _tar(
        {
            "manifest.json": (json.dumps(manifest).encode(), 0o644),
            config_name: (config_bytes, 0o644),
            f"{diff_id}/layer.tar": (layer, 0o644),
        }
    )
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(outer)
    tmp.replace(path)


def _gcc_version() -> str:
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        raise ImageBuildError("gcc is needed to build the pause and probe images") from exc
    return out.stdout.splitlines()[0]


def static_c_image(name: str, source: str, *, defines: tuple[str, ...] = ()) -> LocalImage:
    """A docker-archive holding only ``/<name>``, compiled statically from ``source``."""
    key = hashlib.sha256(
        "\0".join([_BUILDER, _ARCH, _gcc_version(), *defines, source]).encode()
    ).hexdigest()[:16]
    ref = f"localhost/openbao-backup/{name}:{key}"
    directory = cache_root() / "images"
    archive = directory / f"{name}-{key}.tar"
    if archive.exists():
        return LocalImage(ref=ref, archive=archive)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="obb-cc-") as tmp:
        src, out = Path(tmp) / f"{name}.c", Path(tmp) / name
        src.write_text(source)
        argv = ["gcc", "-static", "-Os", "-s", *(f"-D{d}" for d in defines), "-o", str(out)]
        proc = subprocess.run([*argv, str(src)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageBuildError(f"gcc -static {name}.c failed:\n{proc.stderr[-3000:]}")
        docker_archive(
            archive,
            ref=ref,
            files={name: (out.read_bytes(), 0o755)},
            entrypoint=[f"/{name}"],
            user="65535:65535" if name == "pause" else "65532:65532",
        )
    return LocalImage(ref=ref, archive=archive)


def _kube_module_dir() -> Path:
    tools = HACK / "tools"
    version = next(
        line.split()[1]
        for line in (tools / "go.mod").read_text().splitlines()
        if line.strip().startswith("k8s.io/kubernetes ")
    )
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    gomodcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True, cwd=tools
    ).stdout.strip()
    path = Path(gomodcache) / f"k8s.io/kubernetes@{version}"
    if not path.is_dir():
        subprocess.run(
            ["go", "mod", "download", f"k8s.io/kubernetes@{version}"],
            capture_output=True,
            check=True,
            cwd=tools,
            env=env,
        )
    return path


def pause_image() -> LocalImage:
    """The pod sandbox image, from the pinned Kubernetes module's ``build/pause``."""
    try:
        module = _kube_module_dir()
    except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
        raise ImageBuildError(f"cannot find the k8s.io/kubernetes module source: {exc}") from exc
    source = (module / "build/pause/linux/pause.c").read_text()
    return static_c_image("pause", source, defines=(f"VERSION={module.name.split('@')[1]}",))


def probe_image() -> LocalImage:
    """The probe image (see the module docstring); runs as 65532 by default."""
    return static_c_image("probe", PROBE_C)
