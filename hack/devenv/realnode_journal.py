"""The real node's host lock and its journal of host changes, and the undo of both.

Guarantees:

* one real node per machine: ``HostLock`` is an ``flock`` on ``/run/openbao-backup-realnode.lock``
  held for the node's whole life (released by the kernel if the owner dies, even by SIGKILL);
  a second run waits up to its timeout and then fails with the holder's PID and command line;
* every host change is **written to the journal (fsync'd) before it is made**: processes
  (PID + start time), the cgroup root, directories with mounts, the bridge, our iptables rules,
  sysctls (their value before we or the kubelet / kube-proxy / CNI plugin could touch them),
  host paths the kubelet creates, containerd's socket (for its shims);
* ``undo()`` reverts everything the journal names, in the reverse order of the bring-up, and is
  idempotent: a run that finds a journal (a crashed or SIGKILLed predecessor) replays it before
  doing anything else; a clean stop replays it too and then deletes it.

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv import realnode_host as host
from devenv import realnode_iptables as iptables

LOCK_PATH = Path("/run/openbao-backup-realnode.lock")
RUN_DIR = Path("/run/openbao-backup-realnode")
JOURNAL = RUN_DIR / "journal.jsonl"


class HostBusy(RuntimeError):
    """Another real node holds this machine."""


class HostLock:
    """An exclusive ``flock`` on the host-wide lock file; the holder's PID is written into it."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, timeout: float) -> HostLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline, waited = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                if not waited and timeout > 0:
                    print(f"realnode: waiting up to {timeout:.0f}s for {holder}", flush=True)
                    waited = True
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise HostBusy(
                        f"another real node runs on this machine (lock {self.path} held by "
                        f"{holder or 'an unknown process'}); one per machine: the bridge, "
                        "iptables and sysctls are host-wide"
                    ) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        cmd = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        os.pwrite(fd, f"pid {os.getpid()}: {cmd[:300]}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


@dataclass
class Journal:
    """Append-only JSON lines; each record is on disk before the change it announces."""

    path: Path = JOURNAL
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = JOURNAL) -> Journal:
        records = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                    records.append(json.loads(line))
        return cls(path=path, records=records)

    def note(self, op: str, **data: Any) -> None:
        record = {"op": op, **data}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def note_sysctls(self, keys: list[str]) -> None:
        """Record each sysctl's current value, unless an earlier record already has it."""
        known = {r["key"] for r in self.records if r["op"] == "sysctl"}
        for key in keys:
            value = host.sysctl_get(key)
            if key not in known and value is not None:
                self.note("sysctl", key=key, value=value)

    def note_process(self, name: str, pid: int) -> None:
        started = host.start_time(pid)
        if started is not None:
            self.note("process", name=name, pid=pid, started=started)

    def of(self, op: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["op"] == op]

    def undo(self) -> list[str]:
        """Revert everything recorded; returns problems (empty when the host is clean)."""
        problems: list[str] = []
        # 1. Our processes, newest first (kube-proxy, kubelet, forwarders, then containerd).
        for rec in reversed(self.of("process")):
            if rec["name"] != "containerd":
                host.kill_process(rec["pid"], rec["started"])
        # 2. Every container process: they all live under our cgroup root.
        for rec in self.of("cgroup"):
            problems += host.remove_cgroup_root(rec["root"])
        # 3. containerd, then its shims (matched by our socket, not by name).
        for rec in reversed(self.of("process")):
            if rec["name"] == "containerd":
                host.kill_process(rec["pid"], rec["started"])
        for rec in self.of("containerd"):
            host.kill_shims(rec["address"])
            if host.shim_pids(rec["address"]):
                problems.append(f"containerd shims for {rec['address']} still running")
        # 4. Mounts (rootfs overlays, netns, shm, kubelet volumes) under our directories.
        problems += host.unmount_under(Path(r["path"]) for r in self.of("mounts"))
        # 5. Fixed host paths the kubelet, containerd's shims and libcni use whatever we say.
        for rec in self.of("host-path"):
            _clean_host_path(rec)
        # 6. Network: the bridge (its veths went with the pods' netns), rules, chains.
        for rec in self.of("bridge"):
            try:
                host.delete_bridge(rec["name"])
            except host.HostError as exc:
                problems.append(str(exc))
        if self.of("iptables"):
            try:
                iptables.purge_kube_chains()
            except host.HostError as exc:
                problems.append(str(exc))
        # 7. Sysctls back to what they were before the first run touched them.
        for rec in self.of("sysctl"):
            try:
                host.sysctl_set(rec["key"], rec["value"])
            except OSError as exc:
                problems.append(f"sysctl {rec['key']}: {exc}")
        # 8. Our state directories (not the persistent containerd root in the cache).
        for rec in self.of("scratch-dir"):
            if not host.mounts_under([Path(rec["path"])]):
                shutil.rmtree(rec["path"], ignore_errors=True)
        return problems

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only if empty
        self.records = []


def _clean_host_path(rec: dict[str, Any]) -> None:
    """A path that did not exist before the run is removed with all it holds (unless ``busy``
    exists: then someone else's daemon uses it); in one that did, only our entries go: those
    named ``prefix*`` and symlinks into ``links_into``."""
    path = Path(rec["path"])
    if not path.is_dir():
        return
    if not rec["existed"]:
        if not (rec.get("busy") and Path(rec["busy"]).exists()):
            shutil.rmtree(path, ignore_errors=True)
        return
    prefix, links_into = str(rec.get("prefix") or ""), str(rec.get("links_into") or "")
    for entry in path.iterdir():
        with contextlib.suppress(OSError):
            named = bool(prefix) and entry.name.startswith(prefix)
            linked = bool(links_into) and entry.is_symlink()
            if named or (linked and os.readlink(entry).startswith(links_into)):
                entry.unlink()
