"""Host primitives for the real node: each one a small, idempotent change or its undo.

Guarantees:

* every function here is safe to call again, and an undo of something that is already gone is
  a no-op (so crash recovery can replay a whole journal without knowing how far a run got);
* processes are identified by PID **and** their kernel start time, so a recycled PID is never
  signalled; containerd shims are matched by their ``-address`` argument (our socket only);
* cgroups and mounts are touched only under our own cgroup root and our own directories
  (iptables: ``devenv.realnode_iptables``).

Test/dev infrastructure for Linux as root, not product code.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


class HostError(RuntimeError):
    """A host change failed (with the command's output)."""


def run(argv: list[str], *, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, input=input_text, check=False, timeout=60
    )
    if check and proc.returncode != 0:
        raise HostError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# -- processes ------------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def kill_process(pid: int, started: int, *, group: bool = True, timeout: float = 10.0) -> None:
    """SIGTERM the process (and its group) if it is still the one we started; SIGKILL later."""
    if start_time(pid) != started:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if start_time(pid) != started:
                return
            time.sleep(0.05)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def shim_pids(address: str) -> list[int]:
    """PIDs of containerd shims serving the containerd at ``address`` (and no other)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if not argv or "containerd-shim" not in Path(argv[0]).name:
            continue
        if any(a == "-address" and b == address for a, b in itertools.pairwise(argv)):
            found.append(int(entry.name))
    return found


def kill_shims(address: str) -> int:
    pids = shim_pids(address)
    for pid in pids:
        started = start_time(pid)
        if started is not None:
            kill_process(pid, started, group=False, timeout=3.0)
    return len(pids)


# -- cgroups (v1 and the hybrid unified mount) ------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy under /sys/fs/cgroup."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        mnt = Path(_unescape(left.split()[4]))
        if fstype in ("cgroup", "cgroup2") and mnt.is_relative_to(CGROUP_FS):
            out.append(mnt)
    return out


def make_cgroup_root(name: str) -> None:
    """``/sys/fs/cgroup/<each hierarchy>/<name>`` (cpuset gets its parent's cpus and mems)."""
    for hier in cgroup_hierarchies():
        path = hier / name
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            mine = path / knob
            if mine.exists() and not mine.read_text().strip():
                mine.write_text((hier / knob).read_text())


def remove_cgroup_root(name: str, *, timeout: float = 15.0) -> list[str]:
    """SIGKILL every process under our cgroup root, then remove the cgroups, deepest first.

    Returns what could not be removed (empty when clean)."""
    roots = [h / name for h in cgroup_hierarchies() if (h / name).is_dir()]
    deadline = time.monotonic() + timeout
    while True:
        pids = {pid for root in roots for d in _walk_dirs(root) for pid in _procs(d)}
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    left = []
    for root in roots:
        for d in sorted(_walk_dirs(root), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append(f"{d}: {exc.strerror}")
    return left


def _walk_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    yield root
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            yield Path(dirpath) / name


def _procs(cgroup: Path) -> list[int]:
    try:
        return [int(x) for x in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


# -- mounts ---------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(roots: Iterable[Path]) -> list[Path]:
    """Mount points at or below any of ``roots``, deepest (latest) first."""
    resolved = [Path(os.path.realpath(r)) for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = Path(_unescape(line.split()[4]))
        if any(mnt == r or mnt.is_relative_to(r) for r in resolved):
            found.append(mnt)
    return list(reversed(found))


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_MNT_DETACH = 2


def unmount_under(roots: Iterable[Path]) -> list[str]:
    """Lazily unmount everything mounted at or below ``roots``; returns failures."""
    failures: list[str] = []
    for _ in range(5):  # stacked mounts show up again once the top one is gone
        points = mounts_under(roots)
        if not points:
            return failures
        for mnt in points:
            if _libc.umount2(str(mnt).encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (22, 2):  # EINVAL: not a mount point any more; ENOENT
                    failures.append(f"{mnt}: {os.strerror(err)}")
    return failures + [f"{m}: still mounted" for m in mounts_under(roots)]


# -- sysctls --------------------------------------------------------------------------------


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def sysctl_get(key: str) -> str | None:
    try:
        return _sysctl_path(key).read_text().strip()
    except OSError:
        return None


def sysctl_set(key: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if sysctl_get(key) != value:
            _sysctl_path(key).write_text(value)


# -- the bridge -----------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_bridge(name: str, gateway: str, prefix: int) -> None:
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    if f"inet {gateway}/{prefix} " not in run(["ip", "-4", "addr", "show", "dev", name]):
        run(["ip", "addr", "add", f"{gateway}/{prefix}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_bridge(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name])


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
