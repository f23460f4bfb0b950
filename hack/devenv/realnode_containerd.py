"""A private containerd (CRI) for the real node, and image import without a registry.

Guarantees:

* its own config, socket and state under the run dir, its root (content store, snapshots,
  metadata) under ``<cache>/realnode/containerd`` so imported images survive between runs;
  it never reads ``/etc/containerd`` and listens on no TCP port (the CRI streaming server is on
  127.0.0.1);
* CRI: runc v2 with cgroupfs, ``restrict_oom_score_adj = true`` (this VM denies raising
  oom_score_adj), our sandbox (pause) image, CNI config from our own conf dir and plugins from
  ``/usr/lib/cni``, netns mounts under our state dir;
* ``import_image(archive, ref)`` imports a docker-archive into the ``k8s.io`` namespace only if
  ``ref`` is not already there with the same image config digest (recorded as a label), tags
  it as ``ref`` and returns whether it imported; an image no name points to any more (the CRI
  plugin's ``sha256:`` alias of a replaced build) is removed, so the cache does not grow with
  every rebuild;
* ``purge_containers()`` removes every container (and task) in ``k8s.io``: at stop, and at start
  for the records a crashed run left in the persistent metadata;
* ``wipe_store()`` stops containerd, deletes the persistent root (it is a cache) and starts
  clean; the caller re-imports what it needs. The real node does so when an import fails:
  seen on this machine, containerd's metadata named a snapshot its snapshotter no longer had
  ("parent snapshot ... does not exist"), and every import of an image sharing that layer
  failed.

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devenv.procs import Server, ServerError

NAMESPACE = "k8s.io"
CONFIG_LABEL = "org.openbao-backup.image-config"
CNI_BIN_DIR = "/usr/lib/cni"
_DISABLED = [
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
]


def normalize_ref(ref: str) -> str:
    """What containerd and the kubelet call ``ref`` (``foo:1`` → ``docker.io/library/foo:1``)."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    if digest:
        return f"{name}@{digest}"
    return name if ":" in name.rsplit("/", 1)[1] else f"{name}:latest"


def archive_config_digest(archive: Path) -> tuple[str, list[str]]:
    """The image config digest and RepoTags of a docker-archive (first image)."""
    with tarfile.open(archive) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        entry = json.loads(manifest_file.read())[0]
        config = tar.extractfile(entry["Config"])
        assert config is not None
        digest = "sha256:" + hashlib.sha256(config.read()).hexdigest()
    return digest, list(entry.get("RepoTags") or [])


def config_toml(
    *, root: Path, state: Path, address: str, sandbox_image: str, cni_conf_dir: Path
) -> str:
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{root}"',
            f'state = "{state}"',
            f"disabled_plugins = {json.dumps(_DISABLED)}",
            "[grpc]",
            f'  address = "{address}"',
            "[debug]",
            '  level = "info"',
            f"{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            "  disable_tcp_service = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            f"{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f'  Root = "{state.parent / "runc"}"',
            f"{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{cni_conf_dir}"',
            "  max_conf_num = 1",
            f"{cri}.registry]",
            f'  config_path = "{state.parent / "certs.d"}"',
            "",
        ]
    )


@dataclass
class Containerd:
    root: Path  # persistent (cache)
    state: Path  # scratch (run dir)
    socket_path: Path
    cni_conf_dir: Path
    sandbox_image: str
    log_path: Path
    on_start: Callable[[int], None] | None = None  # gets the PID at once (the journal)
    server: Server | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return str(self.socket_path)

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> Containerd:
        config = self.state.parent / "containerd.toml"
        config.write_text(
            config_toml(
                root=self.root,
                state=self.state,
                address=self.address,
                sandbox_image=self.sandbox_image,
                cni_conf_dir=self.cni_conf_dir,
            )
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.server = Server(
            "containerd", ["containerd", "--config", str(config)], self.log_path
        ).start()
        if self.on_start is not None:
            self.on_start(self.server.pid)
        self.server.wait_until(self._serving, timeout=30, what="containerd socket")
        return self

    def start_clean(self) -> int:
        """Start, and if a crashed run left containers in the persistent metadata, delete them
        and restart (the CRI plugin caches what it found at start). Returns how many."""
        self.start()
        purged = self.purge_containers()
        if purged:
            self.stop()
            self.start()
        return purged

    def _serving(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.address)
        self.ctr("version")
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=15)

    def wipe_store(self) -> None:
        """Stop, delete the persistent root (content, snapshots, metadata), start clean."""
        self.stop()
        shutil.rmtree(self.root)
        self.start_clean()

    def ctr(self, *args: str, timeout: float = 300) -> str:
        argv = ["ctr", "--address", self.address, "--namespace", NAMESPACE, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        if proc.returncode != 0:
            raise ServerError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The labels of image ``ref`` (normalized), or None if it is not there."""
        out = self.ctr("images", "ls", f"name=={normalize_ref(ref)}").splitlines()[1:]
        if not out:
            return None
        last = out[0].split()[-1]
        if last == "-":
            return {}
        return dict(kv.split("=", 1) for kv in last.split(",") if "=" in kv)

    def import_image(self, archive: Path, ref: str) -> bool:
        """Import ``archive`` as ``ref`` unless that exact image is there; True if imported."""
        digest, tags = archive_config_digest(archive)
        want = normalize_ref(ref)
        if (self.image_labels(want) or {}).get(CONFIG_LABEL) == digest:
            return False
        self.ctr("images", "import", str(archive), timeout=600)
        names = [normalize_ref(t) for t in tags]
        if want not in names:
            if not names:
                raise ServerError(f"{archive} names no image (no RepoTags); cannot tag {ref}")
            self.ctr("images", "tag", "--force", names[0], want)
        self.ctr("images", "label", want, f"{CONFIG_LABEL}={digest}")
        self.prune_unnamed()
        return True

    def prune_unnamed(self) -> list[str]:
        """Remove ``sha256:<id>`` aliases whose image has no name left; returns them."""
        rows = [line.split() for line in self.ctr("images", "ls").splitlines()[1:] if line]
        named = {row[2] for row in rows if not row[0].startswith("sha256:")}
        stale = [row[0] for row in rows if row[0].startswith("sha256:") and row[2] not in named]
        if stale:
            self.ctr("images", "rm", "--sync", *stale)
        return stale

    def purge_containers(self, *, timeout: float = 30.0) -> int:
        """Kill and delete every task and container in ``k8s.io``; returns how many."""
        ids = self.ctr("containers", "ls", "-q").split()
        if not ids:
            return 0
        tasks = [line.split()[0] for line in self.ctr("tasks", "ls").splitlines()[1:] if line]
        for tid in tasks:
            subprocess.run(
                ["ctr", "--address", self.address, "-n", NAMESPACE, "tasks", "kill", "-a",
                 "-s", "SIGKILL", tid],
                capture_output=True, check=False, timeout=30,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while tasks and time.monotonic() < deadline:
            running = [
                line.split()[0]
                for line in self.ctr("tasks", "ls").splitlines()[1:]
                if line and line.split()[-1] not in ("STOPPED", "UNKNOWN")
            ]
            if not running:
                break
            time.sleep(0.1)
        for tid in tasks:
            subprocess.run(
                ["ctr", "--address", self.address, "-n", NAMESPACE, "tasks", "delete", "-f", tid],
                capture_output=True, check=False, timeout=30,
            )  # fmt: skip
        self.ctr("containers", "delete", *ids)
        return len(ids)
