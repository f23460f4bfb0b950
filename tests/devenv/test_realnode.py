"""The opt-in real node (``hack/devenv/realnode.py``): real containers on containerd + runc
under a real kubelet, scheduled by kube-scheduler, on a bridge with no way off the machine;
and a host exactly as it was after ``stop()``, even after a SIGKILLed run.

Needs root and the packages of hack/install-deps.sh; a missing one FAILS (never skips).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from devenv import realnode_host as host
from devenv import realnode_iptables as iptables
from devenv import realnode_net as net
from devenv.controlplane import ControlPlane, binaries_dir
from devenv.procs import ServerError
from devenv.realnode import HOST_PATHS, SCRATCH, RealNode
from devenv.realnode_containerd import Containerd, archive_config_digest, normalize_ref
from devenv.realnode_images import docker_archive, pause_image, probe_image
from devenv.realnode_journal import JOURNAL, HostBusy
from devenv.realnode_kube import CGROUP_ROOT

ROOT = Path(__file__).resolve().parents[2]
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


# -- helpers -------------------------------------------------------------------------------------


def host_state() -> dict[str, Any]:
    """What a real node may change on the host, as comparable data."""
    return {
        "links": sorted(os.listdir("/sys/class/net")),
        "rules": iptables.leftover_rules(),
        "sysctls": {k: host.sysctl_get(k) for k in net.SYSCTLS},
        "paths": {p: os.path.exists(p) for p, _ in HOST_PATHS},
        "cgroups": [str(h) for h in host.cgroup_hierarchies() if (h / CGROUP_ROOT).exists()],
    }


def node_pids(node: RealNode) -> set[int]:
    """Every process the node runs: agents, containerd, shims, forwarders, containers."""
    pids = {srv.pid for srv in (node.kubelet, node.kube_proxy) if srv is not None}
    pids |= {srv.pid for srv in node.forwarders.servers.values()}
    if node.containerd is not None and node.containerd.server is not None:
        pids.add(node.containerd.server.pid)
        pids |= set(host.shim_pids(node.containerd.address))
    for hier in host.cgroup_hierarchies():
        for procs in (hier / CGROUP_ROOT).rglob("cgroup.procs"):
            pids |= {int(p) for p in procs.read_text().split()}
    return pids


def alive(pid: int) -> bool:
    return host.start_time(pid) is not None


class Kubectl:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        proc = self.cp.run_kubectl(*args, stdin=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout + ("" if check else proc.stderr)

    def apply(self, obj: dict[str, Any], *, check: bool = True) -> str:
        return self("apply", "-f", "-", stdin=json.dumps(obj), check=check)


def hardened_pod(name: str, image: str, args: list[str], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **meta},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": args,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}},
                }
            ],
        },
    }


def wait_phase(kubectl: Kubectl, ns: str, pod: str, phase: str, timeout: float = 90) -> float:
    t0 = time.monotonic()
    kubectl(
        "-n", ns, "wait", f"--for=jsonpath={{.status.phase}}={phase}",
        f"--timeout={int(timeout)}s", f"pod/{pod}",
    )  # fmt: skip
    return time.monotonic() - t0


def rule_packets(table: str, chain: str) -> int:
    """Packets our tagged rules in ``table``/``chain`` have matched."""
    out = host.run(["iptables", "-w", "-t", table, "-L", chain, "-v", "-x", "-n"])
    return sum(int(ln.split()[0]) for ln in out.splitlines() if iptables.RULE_COMMENT in ln)


def tls_names_ok(addr: str, port: int, ca: Path, name: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((addr, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name),
    ):
        return True


def assert_rebuilds_replace_images(node: RealNode, tmp_path: Path) -> None:
    """A new build under the same ref replaces the old one, which leaves the image store."""
    assert node.containerd is not None
    ref = "localhost/obb-test/rebuilt:1"
    digests = []
    for build in (b"1", b"2"):
        archive = tmp_path / f"rebuilt-{build.decode()}.tar"
        docker_archive(archive, ref=ref, files={"x": (build, 0o755)}, entrypoint=["/x"],
                       user="65532:65532")  # fmt: skip
        assert node.import_image(archive, ref) is True
        digests.append(archive_config_digest(archive)[0])
    listing = node.containerd.ctr("images", "ls")
    assert digests[1] in listing
    assert digests[0] not in listing, listing
    node.containerd.ctr("images", "rm", ref)
    node.containerd.prune_unnamed()
    assert digests[1] not in node.containerd.ctr("images", "ls")


def report(label: str, node: RealNode) -> None:
    timings = {k: round(v, 2) for k, v in node.timings.items()}
    print(f"\n[{label}] timings (s): {timings}", flush=True)


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_pods_jobs_and_a_clean_host_afterwards(tmp_path: Path) -> None:
    node = RealNode.prepare(workdir=tmp_path / "node")
    # After prepare: it undoes a crashed predecessor's changes (and changes nothing itself), so
    # this is the host as a clean run must leave it, not one with a killed run's leftovers.
    before = host_state()
    cp = ControlPlane(workdir=tmp_path / "cp", **node.control_plane_options())
    pids: set[int] = set()
    try:
        cp.start()
        node.start(control_plane=cp)
        with pytest.raises(HostBusy, match="another real node"):
            RealNode.prepare(workdir=tmp_path / "second", lock_timeout=0)
        kubectl = Kubectl(cp)
        probe = probe_image()
        assert node.import_image(probe.archive, probe.ref) in (True, False)
        assert node.import_image(probe.archive, probe.ref) is False  # present: not again
        assert_rebuilds_replace_images(node, tmp_path)
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "locked", "labels": RESTRICTED}})  # fmt: skip
        # A Service whose endpoint is off the machine: kube-proxy DNATs, the bridge rule drops.
        kubectl.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "outside", "namespace": "locked"},
                       "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})  # fmt: skip
        kubectl.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "outside-1", "namespace": "locked",
                         "labels": {"kubernetes.io/service-name": "outside"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["1.1.1.1"]}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        })  # fmt: skip
        outside = kubectl(
            "-n", "locked", "get", "svc", "outside", "-o", "jsonpath={.spec.clusterIP}"
        )
        dropped_before = rule_packets("mangle", "FORWARD")

        args = ["report", "connect", "10.0.0.1:443", "connect", "1.1.1.1:80",
                "connect", f"{outside}:80", "echo", "done"]  # fmt: skip
        kubectl.apply(hardened_pod("hardened", probe.ref, args, namespace="locked"))
        node.timings["pod_to_completion"] = wait_phase(kubectl, "locked", "hardened", "Succeeded")
        logs = kubectl("-n", "locked", "logs", "hardened")
        assert "uid=65532 gid=65532" in logs, logs
        assert "CapEff:\t0000000000000000" in logs, logs
        assert "NoNewPrivs:\t1" in logs, logs
        assert "Seccomp:\t2" in logs, logs
        assert "write /: Read-only file system" in logs, logs
        assert "connect 10.0.0.1:443: ok" in logs, logs  # the kubernetes Service, via kube-proxy
        assert "connect 1.1.1.1:80: Network is unreachable" in logs, logs
        assert f"connect {outside}:80: ok" not in logs, logs
        assert logs.rstrip().endswith("done"), logs
        assert rule_packets("mangle", "FORWARD") > dropped_before
        pod = json.loads(kubectl("-n", "locked", "get", "pod", "hardened", "-o", "json"))
        assert pod["spec"]["nodeName"] == node.node_name
        assert pod["status"]["podIP"].startswith("10.203.0.")

        # In-cluster clients verify the apiserver's cert for the Service IP and its names.
        assert cp.pki is not None
        for name in ("10.0.0.1", "kubernetes.default.svc"):
            assert tls_names_ok("10.0.0.1", 443, cp.pki.ca_cert, name)
        assert tls_names_ok(net.GATEWAY, cp.api_port, cp.pki.ca_cert, net.GATEWAY)

        # A Job through the real Job controller, as a real container.
        job = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "once", "namespace": "locked"},
            "spec": {"backoffLimit": 0, "template": {
                "spec": hardened_pod("x", probe.ref, ["echo", "job ran"])["spec"]}},
        }  # fmt: skip
        t0 = time.monotonic()
        kubectl.apply(job)
        kubectl("-n", "locked", "wait", "--for=condition=Complete", "--timeout=90s", "job/once")
        node.timings["job_to_completion"] = time.monotonic() - t0
        assert "job ran" in kubectl("-n", "locked", "logs", "job/once")

        # Pod Security Admission enforces `restricted` in the labelled namespace.
        plain = hardened_pod("plain", probe.ref, ["report"], namespace="locked")
        plain["spec"].pop("securityContext")
        plain["spec"]["containers"][0].pop("securityContext")
        refused = kubectl.apply(plain, check=False)
        assert 'violates PodSecurity "restricted:latest"' in refused, refused

        # Something still running at stop: a sleeping pod.
        kubectl.apply(hardened_pod("sleeper", probe.ref, ["sleep", "600"], namespace="locked"))
        wait_phase(kubectl, "locked", "sleeper", "Running")
        pids = node_pids(node)
        assert len(pids) >= 6, pids  # kubelet, proxy, containerd, forwarder, shims, containers
        memory = {k: f"{v / 2**20:.0f} MiB" for k, v in node.memory().items()}
        print(f"\n[real node] memory: {memory}", flush=True)
    finally:
        try:
            node.stop()
        finally:
            cp.stop()
    report("real node", node)
    assert [p for p in pids if alive(p)] == []
    assert not JOURNAL.exists()
    assert host_state() == before
    assert not host.mounts_under([tmp_path])


CRASHING_RUN = """
import json, sys, time
from pathlib import Path
from devenv.controlplane import ControlPlane, binaries_dir
from devenv.realnode import RealNode
from devenv.realnode_containerd import archive_config_digest, normalize_ref
from devenv.realnode_images import docker_archive, probe_image

workdir = Path(sys.argv[1])
node = RealNode.prepare(workdir=workdir / "node")
cp = ControlPlane(workdir=workdir / "cp", **node.control_plane_options()).start()
node.start(control_plane=cp)
probe = probe_image()
node.import_image(probe.archive, probe.ref)
servers = [cp.etcd, cp.apiserver, cp.kcm, cp.kube_scheduler]
print(json.dumps({"cp_pids": [s.pid for s in servers if s is not None],
                  "kubeconfig": str(cp.kubeconfig), "kubectl": str(cp.kubectl),
                  "image": probe.ref}), flush=True)
time.sleep(3600)
"""


@pytest.mark.integration
def test_a_sigkilled_run_is_undone_by_the_next(tmp_path: Path) -> None:
    before = host_state()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'hack'}:{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, str(tmp_path / "crashed")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    cp_pids: list[int] = []
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline() or "{}")
        assert info, f"the crashing run did not come up (exit {child.poll()})"
        cp_pids = info["cp_pids"]
        pod = hardened_pod("sleeper", info["image"], ["sleep", "600"], namespace="default")
        subprocess.run(
            [info["kubectl"], "--kubeconfig", info["kubeconfig"], "apply", "-f", "-"],
            input=json.dumps(pod), text=True, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [info["kubectl"], "--kubeconfig", info["kubeconfig"], "wait", "pod/sleeper",
             "--for=jsonpath={.status.phase}=Running", "--timeout=90s"],
            check=True, capture_output=True,
        )  # fmt: skip
        crashed_shims = host.shim_pids(str(SCRATCH / "containerd.sock"))
        assert crashed_shims
        child.kill()  # SIGKILL: no finally, no stop()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        for pid in cp_pids:  # the crashed run's control plane is not the node's to undo
            if host.start_time(pid) is not None:
                os.killpg(pid, signal.SIGKILL)
    assert JOURNAL.exists()
    assert host.link_exists(net.BRIDGE)

    node = RealNode.prepare(workdir=tmp_path / "node")
    cp = ControlPlane(workdir=tmp_path / "cp", **node.control_plane_options())
    try:
        assert [p for p in crashed_shims if alive(p)] == []
        assert not host.mounts_under([tmp_path / "crashed"])
        cp.start()
        node.start(control_plane=cp)
        probe = probe_image()
        assert node.import_image(probe.archive, probe.ref) is False  # the image store persists
        kubectl = Kubectl(cp)
        kubectl.apply(hardened_pod("again", probe.ref, ["echo", "fine"], namespace="default"))
        wait_phase(kubectl, "default", "again", "Succeeded")
        assert "fine" in kubectl("logs", "again")
    finally:
        try:
            node.stop()
        finally:
            cp.stop()
    report("after a crash", node)
    assert host_state() == before
    assert not JOURNAL.exists()


@pytest.mark.integration
def test_a_machine_without_the_prerequisites_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"the real node needs: .*kubelet"):
        RealNode.prepare(workdir=tmp_path, bin_dir=tmp_path)


@pytest.mark.integration
def test_a_failed_bring_up_undoes_itself(tmp_path: Path) -> None:
    """A kubelet that dies at once: start() fails with its log, and the host is as before."""
    before = host_state()
    real = binaries_dir()
    bins = tmp_path / "bin"
    bins.mkdir()
    for binary in real.iterdir():
        (bins / binary.name).symlink_to(binary)
    (bins / "kubelet").unlink()
    (bins / "kubelet").write_text("#!/bin/sh\necho 'kubelet: broken on purpose' >&2\nexit 3\n")
    (bins / "kubelet").chmod(0o755)
    node = RealNode.prepare(workdir=tmp_path / "node", bin_dir=bins)
    cp = ControlPlane(workdir=tmp_path / "cp", bin_dir=real, **node.control_plane_options())
    try:
        cp.start()
        with pytest.raises(ServerError, match="broken on purpose"):
            node.start(control_plane=cp)
        node.stop()  # already stopped by the failed start: a no-op
    finally:
        cp.stop()
    assert not JOURNAL.exists()
    assert host_state() == before
    RealNode.prepare(workdir=tmp_path / "again", lock_timeout=0).stop()  # the lock is free


# -- the pure parts ------------------------------------------------------------------------------


def test_image_refs_are_normalized_as_the_kubelet_does() -> None:
    assert normalize_ref("openbao-backup:dev") == "docker.io/library/openbao-backup:dev"
    assert normalize_ref("ghcr.io/o/r:1") == "ghcr.io/o/r:1"
    assert normalize_ref("localhost/x/y") == "localhost/x/y:latest"
    assert normalize_ref("org/app") == "docker.io/org/app:latest"
    assert normalize_ref("r:5000/app@sha256:ab") == "r:5000/app@sha256:ab"


def test_only_our_rules_and_kube_chains_are_purged() -> None:
    assert iptables.ours(":KUBE-SERVICES - [0:0]")
    assert iptables.ours("-A FORWARD -m comment --comment kubernetes -j KUBE-FORWARD")
    assert iptables.ours("-A POSTROUTING -s 10.203.0.0/24 -g CNI-abc")
    assert iptables.ours(
        f"-A FORWARD -i obbr0 -m comment --comment {iptables.RULE_COMMENT} -j DROP"
    )
    assert not iptables.ours(":DOCKER - [0:0]")
    assert not iptables.ours("-A FORWARD -j DOCKER-USER")
    assert not iptables.ours(":FORWARD ACCEPT [0:0]")


def test_docker_archives_are_reproducible(tmp_path: Path) -> None:
    files = {"hello": (b"#!/hello\n", 0o755)}
    for name in ("a.tar", "b.tar"):
        docker_archive(tmp_path / name, ref="localhost/t:1", files=files, entrypoint=["/hello"],
                       user="65532:65532")  # fmt: skip
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    digest, tags = archive_config_digest(tmp_path / "a.tar")
    assert tags == ["localhost/t:1"]
    assert digest.startswith("sha256:")


def test_a_wiped_image_store_starts_empty_and_imports_again(tmp_path: Path) -> None:
    """The recovery ``RealNode`` takes on a damaged store: a private containerd on a scratch
    root (no kubelet, no network) imports an image, wipes its store, and imports it again."""
    probe = probe_image()
    (tmp_path / "net.d").mkdir()
    (tmp_path / "state").mkdir()
    containerd = Containerd(
        root=tmp_path / "root",
        state=tmp_path / "state" / "containerd",
        socket_path=tmp_path / "c.sock",
        cni_conf_dir=tmp_path / "net.d",
        sandbox_image=pause_image().ref,
        log_path=tmp_path / "containerd.log",
    )
    containerd.start_clean()
    try:
        assert containerd.import_image(probe.archive, probe.ref)
        assert not containerd.import_image(probe.archive, probe.ref), "already there"
        containerd.wipe_store()
        assert containerd.image_labels(probe.ref) is None, "the wiped store still has it"
        assert containerd.import_image(probe.archive, probe.ref)
    finally:
        containerd.stop()
