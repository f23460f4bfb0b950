"""What every stage of the product image build shares (part of ``devenv.images``): the cache
directory, its build lock, the step runner, stage timings.

Guarantees:

* everything is cached under ``${OPENBAO_BACKUP_CACHE:-~/.cache/openbao-backup}/images/``;
* one flock (``images/.lock``) serialises builds and every use of the build's private dockerd
  (``devenv.images_dockerd``); a caller that has to wait says so on stderr, then blocks;
* a build step runs with its output appended to a log file; a failed step raises
  :class:`ImageBuildError` with the log's last 30 lines, a missing tool names the packages that
  provide it (hack/install-deps.sh);
* each stage's time is printed to stderr as it ends (``images: <stage> <seconds>s``).

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devenv.procs import log_tail

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "hack" / "images"
# A clean PATH for dockerd and the root-filesystem steps: Debian's binaries, never /usr/local's.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(RuntimeError):
    """The image could not be built (a missing tool, a failed step: the message says which)."""


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


def input_hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def need_tools(*paths: str) -> None:
    missing = [p for p in paths if shutil.which(p) is None]
    if missing:
        raise ImageBuildError(
            f"missing {', '.join(missing)}: apt-get install docker.io containerd runc debootstrap "
            "binutils util-linux (hack/install-deps.sh)"
        )


def run_step(
    argv: Sequence[str], *, log: Path, what: str, env: dict[str, str] | None = None
) -> None:
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
def build_lock() -> Iterator[None]:
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
