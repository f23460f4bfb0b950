"""The real node's Kubernetes agents: kubelet and kube-proxy, configured for this machine.

Guarantees:

* kubelet: on containerd's CRI socket, cgroupfs under its own cgroup root (``/obb-realnode``,
  so every container process can be found and killed), ``failCgroupV1: false`` (this VM has
  cgroup v1), swap allowed; serves only on the bridge gateway (10250, x509 client auth against
  the control plane's CA, AlwaysAllow; no anonymous access, no read-only port), healthz on
  127.0.0.1; node IP = the gateway; its root dir, pod logs, volume plugin dir and resolv.conf
  are ours (pods get an empty resolv.conf: there is no DNS); eviction and image GC only near
  a full disk, so a busy disk on a dev machine does not evict test pods;
* kube-proxy: iptables mode, cluster CIDR = the pod subnet, NodePorts only on the bridge,
  ``localhostNodePorts: false`` (no ``route_localnet``), conntrack sysctls left alone (all
  zero), metrics and healthz on 127.0.0.1;
* both authenticate with the control plane's admin kubeconfig (test infrastructure only) and
  run as their own session, stopped by PID.

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import json
from pathlib import Path

from devenv.controlplane import ControlPlane
from devenv.procs import Server, free_port
from devenv.realnode_net import GATEWAY, POD_SUBNET

CGROUP_ROOT = "obb-realnode"
KUBELET_PORT = 10250
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def node_ready(cp: ControlPlane, name: str) -> bool:
    """The Node is Ready, schedulable and without the not-ready taint."""
    node = cp.get(f"/api/v1/nodes/{name}")
    spec, status = node.get("spec") or {}, node.get("status") or {}
    assert isinstance(spec, dict)
    assert isinstance(status, dict)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    taints = {t.get("key") for t in spec.get("taints") or []}
    return ready and not spec.get("unschedulable") and NOT_READY_TAINT not in taints


def kubelet_config(
    *,
    runtime_endpoint: str,
    ca_cert: Path,
    serving_cert: Path,
    serving_key: Path,
    pod_logs_dir: Path,
    resolv_conf: Path,
    healthz_port: int,
) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": runtime_endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(pod_logs_dir),
        "resolvConf": str(resolv_conf),
        "clusterDomain": "cluster.local",
        "registerNode": True,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "volumePluginDir": str(pod_logs_dir.parent / "volume-plugins"),
        "nodeStatusUpdateFrequency": "4s",
        "nodeStatusReportFrequency": "1m",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "maxPods": 110,
    }


def start_kubelet(
    *,
    bin_dir: Path,
    workdir: Path,
    kubeconfig: Path,
    node_name: str,
    runtime_endpoint: str,
    ca_cert: Path,
    serving_cert: Path,
    serving_key: Path,
    healthz_port: int,
) -> Server:
    root = workdir / "kubelet"
    logs = workdir / "pod-logs"
    for d in (root, logs):
        d.mkdir(parents=True, exist_ok=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("# no DNS on the real node\n")
    config = workdir / "kubelet-config.json"
    config.write_text(
        json.dumps(
            kubelet_config(
                runtime_endpoint=runtime_endpoint,
                ca_cert=ca_cert,
                serving_cert=serving_cert,
                serving_key=serving_key,
                pod_logs_dir=logs,
                resolv_conf=resolv,
                healthz_port=healthz_port,
            ),
            indent=2,
        )
    )
    return Server(
        "kubelet",
        [
            str(bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--hostname-override={node_name}",
            f"--node-ip={GATEWAY}",
            "--v=1",
        ],
        workdir / "kubelet.log",
    ).start()


def kube_proxy_config(*, kubeconfig: Path, node_name: str, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "bindAddress": GATEWAY,
        "clusterCIDR": POD_SUBNET,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "minSyncPeriod": "0s"},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "tcpBeLiberal": False,
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }


def start_kube_proxy(
    *, bin_dir: Path, workdir: Path, kubeconfig: Path, node_name: str, healthz_port: int
) -> Server:
    config = workdir / "kube-proxy-config.json"
    config.write_text(
        json.dumps(
            kube_proxy_config(kubeconfig=kubeconfig, node_name=node_name, healthz_port=healthz_port)
        )
    )
    return Server(
        "kube-proxy",
        [str(bin_dir / "kube-proxy"), f"--config={config}", "--v=1"],
        workdir / "kube-proxy.log",
    ).start()
