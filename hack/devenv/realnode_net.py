"""The real node's pod network: a local bridge with no way off the machine, and forwarders
that let pods reach servers bound to 127.0.0.1.

Guarantees:

* pods live on bridge ``obbr0`` (``10.203.0.0/24``, gateway ``10.203.0.1`` on the host),
  CNI ``bridge`` + ``host-local`` with ``ipMasq: false`` and no uplink; their only routes are
  the pod subnet and the Service range (``10.0.0.0/24``, via the gateway): anything else fails
  in the pod with "Network is unreachable";
* defence in depth: iptables drops every packet forwarded from the bridge to any other
  interface (mangle and filter FORWARD, first in the chain, tagged with our comment), so even
  a Service whose endpoint is off the machine, or a route added by hand, goes nowhere;
* ``Forwarders.expose(port)`` starts one ``socat`` on ``<gateway>:<port>`` → ``127.0.0.1:<port>``
  (idempotent per port) and returns the address pods use; each runs in its own session and is
  stopped by PID; the journal records it before it can accept a connection.

Test/dev infrastructure, not product code.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from devenv import realnode_host as host
from devenv import realnode_iptables as iptables
from devenv.procs import Server
from devenv.realnode_journal import Journal

BRIDGE = "obbr0"
POD_SUBNET = "10.203.0.0/24"
GATEWAY = "10.203.0.1"
PREFIX = 24
SERVICE_CIDR = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range
NETWORK_NAME = "obb-realnode"
# The sysctls the bring-up, the CNI bridge plugin (isGateway turns on forwarding), kube-proxy
# and the kubelet (its "kernel tunables") may change: journaled before, restored after.
SYSCTLS = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
]
# (binary, table, chain, rule): forwarded traffic from the bridge may only go back to it.
ISOLATION_RULES = [
    ("iptables", "mangle", "FORWARD", ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]),
    ("iptables", "filter", "FORWARD", ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]),
    ("iptables", "filter", "FORWARD", ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]),
]


def cni_conflist(ipam_dir: Path) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": SERVICE_CIDR}],
                },
            }
        ],
    }


def write_cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    ipam_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-obb-realnode.conflist").write_text(json.dumps(cni_conflist(ipam_dir), indent=2))


def bring_up(journal: Journal) -> None:
    """The bridge with the gateway address, forwarding for the pod subnet, the isolation rules."""
    journal.note("bridge", name=BRIDGE)
    host.create_bridge(BRIDGE, GATEWAY, PREFIX)
    journal.note("iptables", rules=[r[:3] for r in ISOLATION_RULES])
    # Inserted in reverse so that, each going first, they end up in the order listed.
    for binary, table, chain, rule in reversed(ISOLATION_RULES):
        iptables.ensure_rule(binary, table, chain, rule, first=True)
    # Service traffic between pods on one bridge needs bridged frames to see iptables; the
    # bridge plugin turns on ip_forward itself (isGateway); set it here so the node is usable
    # before the first pod.
    host.sysctl_set("net.bridge.bridge-nf-call-iptables", "1")
    host.sysctl_set("net.ipv4.ip_forward", "1")


@dataclass
class Forwarders:
    """socat forwarders from the bridge gateway to loopback servers."""

    journal: Journal
    log_dir: Path
    servers: dict[int, Server] = field(default_factory=dict)

    def expose(self, port: int) -> tuple[str, int]:
        """Make ``127.0.0.1:<port>`` reachable from pods at the returned address."""
        srv = self.servers.get(port)
        if srv is not None and srv.alive():
            return GATEWAY, port
        srv = Server(
            f"forward-{port}",
            [
                "socat",
                f"TCP-LISTEN:{port},bind={GATEWAY},reuseaddr,fork",
                f"TCP:127.0.0.1:{port}",
            ],
            self.log_dir / f"forward-{port}.log",
        ).start()
        self.journal.note_process(f"forward-{port}", srv.pid)
        self.servers[port] = srv

        def listening() -> bool:
            with socket.create_connection((GATEWAY, port), timeout=1):
                return True

        srv.wait_until(listening, timeout=10, what=f"socat on {GATEWAY}:{port}")
        return GATEWAY, port

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stop(timeout=5)
        self.servers.clear()
