"""The image build's private dockerd (part of ``devenv.images``), and the Debian docker client
that talks to it.

Guarantees:

* dockerd runs only while building, private to it: its own data root (under the cache, so layers
  persist), exec root, pid file and socket; no bridge, no iptables, no IP forwarding; in a private
  mount namespace whose /run is a fresh tmpfs, so it starts its own managed containerd and never
  sees another one (nor leaves shim sockets in the host's /run). It is stopped by PID, also on
  failure. One flock (``images/.lock``) serialises builds and every use of that dockerd;
* a dockerd whose owner was killed outright is stopped (by its pid files, each checked against
  the process name) before a new one starts on the same data root; the (empty) cgroups the
  build's containers left under ``/openbao-backup-images`` are removed on stop;
* the client is ``/usr/bin/docker`` (Debian's docker.io 20.10; not the newer client-only
  /usr/local/bin/docker) with no ``DOCKER_*`` variable of the caller's environment, its own
  config dir, and the classic builder (``DOCKER_BUILDKIT=0``).

Needs root, /usr/bin/docker + /usr/sbin/dockerd, containerd, runc, unshare.
Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devenv.images_steps import (
    SYSTEM_PATH,
    ImageBuildError,
    Timings,
    build_lock,
    cache_dir,
    need_tools,
)
from devenv.procs import Server, ServerError

CGROUP_PARENT = "openbao-backup-images"
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"


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
def dockerd(t: Timings | None = None) -> Iterator[Docker]:
    """Start the private dockerd (the caller holds the lock); stop it by PID on exit."""
    t = t or Timings()
    need_tools(DOCKER, DOCKERD, "containerd", "runc", "unshare")
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
    server = Server("dockerd", argv, log, env={"PATH": SYSTEM_PATH, "HOME": str(run)})
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
    with build_lock(), dockerd() as docker:
        yield docker
