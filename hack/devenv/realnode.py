"""An opt-in real Kubernetes node beside the local control plane: containerd + runc, kubelet,
kube-proxy (and the control plane's kube-scheduler), with pods on a local bridge that has no
route off the machine. Real Pods, Jobs and Deployments run as real containers.

Use::

    with RealNode.prepare(workdir=d / "node") as node:      # host lock, crash recovery
        cp = ControlPlane(workdir=d / "cp", **node.control_plane_options()).start()
        try:
            node.start(control_plane=cp)                     # returns when the Node is Ready
            node.import_image(archive, "openbao-backup:dev")  # docker-archive, once per digest
            host, port = node.expose(bao_port)               # 127.0.0.1:port as pods see it
            ...
        finally:
            node.stop()                                       # before cp.stop()
            cp.stop()

Guarantees:

* one real node per machine (``realnode_journal.HostLock``); ``prepare()`` first undoes what a
  crashed predecessor left (its journal), then refuses if the host still has a bridge or
  ``KUBE-*``/``CNI-*`` chains it cannot account for;
* every host change is journaled before it is made, and ``stop()`` undoes all of it: processes
  by PID, every container process (by our cgroup root), shims of our containerd only, mounts
  under our directories, the bridge, our iptables rules and the kubelet/kube-proxy chains, the
  sysctls (restored to their values before the run), host paths the kubelet created;
  ``stop()`` raises if anything could not be undone (and keeps the journal for the next run);
* ``start()`` returns only when the Node is Ready, schedulable and without the not-ready taint,
  kube-proxy is healthy and the apiserver is reachable from pods (``kubernetes`` Service →
  the gateway forwarder → 127.0.0.1), with TLS verification for in-cluster clients;
* nothing listens beyond 127.0.0.1 and the bridge gateway; images are never pulled (no
  registry): ``import_image`` them, and use ``imagePullPolicy: IfNotPresent`` or ``Never``.

Needs root and the packages of ``hack/install-deps.sh`` (tested on cgroup v1). ``timings`` and
``memory()`` report what it costs. Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from devenv import realnode_host as host
from devenv import realnode_iptables as iptables
from devenv import realnode_net as net
from devenv.certs import issue_cert
from devenv.controlplane import (
    REAL_NODE_CONTROLLERS,
    ControlPlane,
    ControlPlaneOptions,
    binaries_dir,
)
from devenv.procs import Server, ServerError, free_port
from devenv.realnode_containerd import Containerd
from devenv.realnode_images import LocalImage, cache_root, pause_image
from devenv.realnode_journal import RUN_DIR, HostLock, Journal
from devenv.realnode_kube import CGROUP_ROOT, node_ready, start_kube_proxy, start_kubelet

NODE_NAME = "obb-realnode"
SCRATCH = RUN_DIR / "run"
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "socat", "iptables",
              "iptables-save", "iptables-restore", "ip", "conntrack", "gcc")  # fmt: skip
CNI_PLUGINS = ("bridge", "host-local", "loopback")
# Fixed paths outside our directories: the kubelet's device-plugin socket dir and container
# log symlinks, the shims' socket dir, libcni's result cache (files named after the network).
HOST_PATHS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/var/lib/kubelet", {}),
    ("/var/log/containers", {"links_into": "{workdir}"}),
    ("/var/log/pods", {}),
    ("/run/containerd", {"busy": "/run/containerd/containerd.sock"}),
    ("/var/lib/cni", {}),
    ("/var/lib/cni/results", {"prefix": f"{net.NETWORK_NAME}-"}),
)


def _log(msg: str) -> None:
    print(f"realnode: {msg}", flush=True)


def missing_prerequisites(bin_dir: Path) -> list[str]:
    """What this machine lacks for a real node (empty when it has everything)."""
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    missing += [f"/usr/lib/cni/{p}" for p in CNI_PLUGINS if not Path(f"/usr/lib/cni/{p}").exists()]
    missing += [
        str(bin_dir / b)
        for b in ("kubelet", "kube-proxy", "kube-scheduler")
        if not (bin_dir / b).exists()
    ]
    if os.geteuid() != 0:
        missing.append("root (containerd, iptables, a bridge)")
    return missing


class RealNode:
    node_name = NODE_NAME
    gateway = net.GATEWAY
    pod_subnet = net.POD_SUBNET

    def __init__(
        self, *, workdir: Path, bin_dir: Path, lock: HostLock, journal: Journal, pause: LocalImage
    ) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.lock = lock
        self.journal = journal
        self.pause = pause
        self.timings: dict[str, float] = {}
        self.containerd: Containerd | None = None
        self.kubelet: Server | None = None
        self.kube_proxy: Server | None = None
        self.forwarders = net.Forwarders(journal=journal, log_dir=workdir)
        self.control_plane: ControlPlane | None = None
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls, *, workdir: Path, bin_dir: Path | None = None, lock_timeout: float = 600.0
    ) -> RealNode:
        """Take the machine, clean up after a crashed predecessor, build the pause image."""
        bins = bin_dir or binaries_dir()
        missing = missing_prerequisites(bins)
        if missing:
            raise ServerError("the real node needs: " + ", ".join(missing))
        lock = HostLock().acquire(timeout=lock_timeout)
        try:
            t0 = time.monotonic()
            leftovers = Journal.load()
            if leftovers.records:
                _log(f"undoing a previous run's {len(leftovers.records)} journaled changes")
                problems = leftovers.undo()
                if problems:
                    raise ServerError("could not undo a previous run: " + "; ".join(problems))
                leftovers.discard()
            unclean = iptables.leftover_rules()
            if host.link_exists(net.BRIDGE):
                unclean.append(f"bridge {net.BRIDGE} exists")
            if unclean:
                raise ServerError(
                    "host has Kubernetes networking this run did not create (another cluster?): "
                    + "; ".join(unclean[:10])
                )
            recovered = time.monotonic() - t0
            t0 = time.monotonic()
            pause = pause_image()
            workdir.mkdir(parents=True, exist_ok=True)
            node = cls(workdir=workdir, bin_dir=bins, lock=lock, journal=Journal(), pause=pause)
            node.timings.update(recovery=recovered, pause_image=time.monotonic() - t0)
            return node
        except BaseException:
            lock.release()
            raise

    def control_plane_options(self) -> ControlPlaneOptions:
        """``ControlPlane(**options)`` for a control plane this node can join."""
        return {
            "advertise_address": net.GATEWAY,
            "serving_ips": (net.GATEWAY,),
            "kubelet_access": True,
            "extra_controllers": REAL_NODE_CONTROLLERS,
            "scheduler": True,
        }

    def start(self, *, control_plane: ControlPlane) -> RealNode:
        """Bring the node up on a started control plane; on failure, undo it all and raise."""
        cp = control_plane
        if self._stopped or self.control_plane is not None:
            raise ServerError("a RealNode starts once; prepare() a new one")
        if not (cp.advertise_address == net.GATEWAY and cp.kubelet_access and cp.scheduler):
            raise ServerError("start the ControlPlane with **RealNode.control_plane_options()")
        self.control_plane = cp
        try:
            self._start(cp)
        except BaseException as exc:
            try:
                self.stop()
            except ServerError as cleanup:
                exc.add_note(f"and undoing the bring-up failed too: {cleanup}")
            raise
        return self

    def _start(self, cp: ControlPlane) -> None:
        assert cp.pki is not None
        j, t_all = self.journal, time.monotonic()
        j.note("run", pid=os.getpid(), workdir=str(self.workdir))
        j.note("scratch-dir", path=str(SCRATCH))
        for d in (SCRATCH, self.workdir / "kubelet"):
            j.note("mounts", path=str(d))
        j.note_sysctls(net.SYSCTLS)
        for path, how in HOST_PATHS:
            extra = {k: v.format(workdir=self.workdir) for k, v in how.items()}
            j.note("host-path", path=path, existed=Path(path).exists(), **extra)
        net.write_cni_config(SCRATCH / "net.d", SCRATCH / "cni-ipam")
        net.bring_up(j)
        j.note("cgroup", root=CGROUP_ROOT)
        host.make_cgroup_root(CGROUP_ROOT)

        t0 = time.monotonic()
        j.note("containerd", address=str(SCRATCH / "containerd.sock"))
        self.containerd = Containerd(
            root=cache_root() / "containerd",
            state=SCRATCH / "containerd",
            socket_path=SCRATCH / "containerd.sock",
            cni_conf_dir=SCRATCH / "net.d",
            sandbox_image=self.pause.ref,
            log_path=self.workdir / "containerd.log",
            on_start=lambda pid: j.note_process("containerd", pid),
        )
        self.containerd.start_clean()
        self.timings["containerd"] = time.monotonic() - t0
        t0 = time.monotonic()
        self._import(self.pause.archive, self.pause.ref)
        self.timings["pause_import"] = time.monotonic() - t0

        t0 = time.monotonic()
        cert, key = issue_cert(
            cp.pki, self.workdir / "pki", "kubelet", server=True,
            ips=[net.GATEWAY], dns=[NODE_NAME],
        )  # fmt: skip
        kubelet_healthz, proxy_healthz = free_port(), free_port()
        self.kubelet = start_kubelet(
            bin_dir=self.bin_dir, workdir=self.workdir, kubeconfig=cp.kubeconfig,
            node_name=NODE_NAME, runtime_endpoint=self.containerd.endpoint,
            ca_cert=cp.pki.ca_cert, serving_cert=cert, serving_key=key,
            healthz_port=kubelet_healthz,
        )  # fmt: skip
        j.note_process("kubelet", self.kubelet.pid)
        self.kube_proxy = start_kube_proxy(
            bin_dir=self.bin_dir, workdir=self.workdir, kubeconfig=cp.kubeconfig,
            node_name=NODE_NAME, healthz_port=proxy_healthz,
        )  # fmt: skip
        j.note_process("kube-proxy", self.kube_proxy.pid)
        self.expose(cp.api_port)
        ready: Callable[[], bool] = lambda: node_ready(cp, NODE_NAME)  # noqa: E731
        self.kubelet.wait_until(ready, timeout=120, what="Node Ready and schedulable")
        self.kube_proxy.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{proxy_healthz}/healthz"),
            timeout=60,
            what="kube-proxy healthz",
        )
        self.timings["node_ready"] = time.monotonic() - t0
        self.timings["start"] = time.monotonic() - t_all

    def stop(self) -> None:
        """Stop everything and restore the host; idempotent. Raises if something is left."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        problems: list[str] = []
        try:
            self.forwarders.stop()
            for srv in (self.kube_proxy, self.kubelet):
                if srv is not None:
                    srv.stop(timeout=15)
            if self.containerd is not None and self.containerd.server is not None:
                if self.containerd.server.alive():
                    try:
                        self.containerd.purge_containers()
                    except ServerError as exc:
                        problems.append(f"purging containers: {exc}")
                self.containerd.stop()
            problems += self.journal.undo()
        finally:
            if not problems:
                self.journal.discard()
            self.lock.release()
            self.timings["stop"] = time.monotonic() - t0
        if problems:
            raise ServerError("the real node left things behind: " + "; ".join(problems))

    def __enter__(self) -> RealNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use --------------------------------------------------------------------------------

    def import_image(self, archive: Path, ref: str) -> bool:
        """Make a docker-archive available to pods as ``ref``; False if it already was."""
        if self.containerd is None:
            raise ServerError("import_image() needs a started node")
        t0 = time.monotonic()
        imported = self._import(archive, ref)
        self.timings[f"import {ref}"] = time.monotonic() - t0
        return imported

    def _import(self, archive: Path, ref: str) -> bool:
        """Import; if that fails, wipe the image store once (it is a cache, and a damaged one
        fails every later import: see :mod:`devenv.realnode_containerd`), re-import the sandbox
        image and try again. A second failure is raised."""
        assert self.containerd is not None
        try:
            return self.containerd.import_image(archive, ref)
        except ServerError as exc:
            _log(f"import of {ref} failed; wiping the image store and retrying: {exc}")
            self.containerd.wipe_store()
            self.containerd.import_image(self.pause.archive, self.pause.ref)
            return self.containerd.import_image(archive, ref)

    def expose(self, port: int) -> tuple[str, int]:
        """Forward ``<gateway>:<port>`` to ``127.0.0.1:<port>``; the address pods use."""
        return self.forwarders.expose(port)

    def check_alive(self) -> None:
        for srv in (self.kubelet, self.kube_proxy):
            if srv is not None:
                srv.check_alive()
        if self.containerd is not None and self.containerd.server is not None:
            self.containerd.server.check_alive()

    def memory(self) -> dict[str, int]:
        """Resident memory (bytes) of each component this node runs, and the scheduler."""
        procs: dict[str, Server | None] = {"kubelet": self.kubelet, "kube-proxy": self.kube_proxy}
        if self.containerd is not None:
            procs["containerd"] = self.containerd.server
        if self.control_plane is not None:
            procs["kube-scheduler"] = self.control_plane.kube_scheduler
        out = {}
        for name, srv in procs.items():
            if srv is not None and srv.alive():
                out[name] = host.rss(srv.pid)
        if self.containerd is not None:
            shims = host.shim_pids(self.containerd.address)
            out["containerd-shims"] = sum(host.rss(pid) for pid in shims)
        return out


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return int(resp.status) == 200
