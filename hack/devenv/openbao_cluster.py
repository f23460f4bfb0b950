"""Multi-node OpenBao Raft clusters on 127.0.0.1 for tests (``bao server`` processes; the
single node and the :class:`OpenBao` handle are ``devenv.openbao``).

Guarantees:

* ``start_openbao_cluster`` starts ``size`` (default 3) Raft nodes joined by ``retry_join`` to
  each other, initialises the first (Shamir 1/1), unseals all, and returns only once every node
  is a Raft voter and one is active; with ``kv=True`` (the default) ``secret/`` is a KV v2 mount
  that already serves on the active node;
* autopilot's server stabilization time is 1 s (10 s by default), so a step-down can elect
  another node soon;
* node i is ``{name}-{i}`` in ``workdir/{name}-{i}``; ``nodes[i]`` is an :class:`OpenBao` for
  it (its own API address, the shared unseal key and root token); ``active()`` waits for the
  node that answers sys/health 200 (e.g. during an election) and fails at once if a node died;
* every node is stopped by PID, all at once (``OpenBaoCluster.stop``: each SIGTERM, bounded
  wait, then SIGKILL), also when starting the cluster fails;
* ``step_down`` runs ``bao operator step-down`` (the CLI, as an operator would) without the
  caller's ``VAULT_*``/``BAO_*`` environment.

Test infrastructure, not product code.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from devenv.openbao import OpenBao, bao_binary, server_config, server_env
from devenv.procs import Server, ServerError, free_port


@dataclass
class OpenBaoCluster:
    """Three (or more) ``bao server`` processes forming one Raft cluster on 127.0.0.1.

    ``nodes[i]`` is an :class:`OpenBao` for node i (its own API address, the shared unseal key
    and root token); :meth:`active` names the node that answers sys/health 200 right now."""

    nodes: list[OpenBao]
    unseal_key: str = ""
    root_token: str = ""

    def active(self, timeout: float = 30.0) -> OpenBao:
        """The active node (waits for one, e.g. during an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                node.server.check_alive()
                try:
                    if node.health().get("_status") == 200:
                        return node
                except (OSError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise ServerError(f"no active node in the cluster after {timeout:.0f}s")
            time.sleep(0.05)

    def standbys(self) -> list[OpenBao]:
        leader = self.active()
        return [n for n in self.nodes if n is not leader]

    def step_down(self, node: OpenBao) -> None:
        """``bao operator step-down`` against ``node`` (the CLI, as an operator would)."""
        import subprocess

        env = server_env()
        env.update({"BAO_ADDR": node.addr, "BAO_TOKEN": self.root_token})
        out = subprocess.run(
            [str(bao_binary()), "operator", "step-down"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise ServerError(
                f"bao operator step-down at {node.addr} failed: "
                f"{out.stderr.decode(errors='replace')[-500:]}"
            )

    def voters(self) -> list[str]:
        """node_ids of the Raft voters, as the active node reports them."""
        cfg = self.active().api("GET", "sys/storage/raft/configuration")
        return [s["node_id"] for s in cfg["data"]["config"]["servers"] if s.get("voter")]

    def stop(self) -> None:
        """Stop every node by PID, all at once (each SIGTERM, bounded wait, then SIGKILL)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))


def start_openbao_cluster(
    workdir: Path, *, name: str = "raft", size: int = 3, kv: bool = True
) -> OpenBaoCluster:
    """Start ``size`` Raft nodes joined by ``retry_join`` to each other, initialise the first
    (Shamir 1/1), unseal all, and wait until every node is a Raft voter and one is active.

    Node i is ``{name}-{i}`` in ``workdir/{name}-{i}``; stop them all with
    :meth:`OpenBaoCluster.stop` (by PID)."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    env = server_env()
    nodes: list[OpenBao] = []
    cluster = OpenBaoCluster(nodes=nodes)
    try:
        for i, (port, cluster_port) in enumerate(ports):
            node_id = f"{name}-{i}"
            home = workdir / node_id
            data = home / "raft"
            data.mkdir(parents=True, exist_ok=True)
            addr = f"http://127.0.0.1:{port}"
            joins = "".join(
                f'  retry_join {{\n    leader_api_addr = "http://127.0.0.1:{p}"\n  }}\n'
                for j, (p, _) in enumerate(ports)
                if j != i
            )
            config = home / "config.hcl"
            config.write_text(
                server_config(
                    data=data, node_id=node_id, port=port, cluster_port=cluster_port, raft=joins
                )
            )
            srv = Server(
                node_id,
                [str(bao_binary()), "server", f"-config={config}"],
                home / "bao.log",
                env=env,
            )
            srv.start()
            nodes.append(OpenBao(server=srv, addr=addr, data_dir=data))
        for node in nodes:
            node.server.wait_until(
                functools.partial(_answers_health, node), timeout=30, what="sys/health"
            )
        first = nodes[0]
        init = first.api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token="")
        cluster.unseal_key = (init.get("keys_base64") or init["keys"])[0]
        cluster.root_token = init["root_token"]
        for node in nodes:
            node.unseal_key, node.root_token = cluster.unseal_key, cluster.root_token
        first.unseal()
        # New servers are promoted to voters after autopilot's stabilization time (10 s by
        # default): shorten it so a step-down can elect another node soon.
        first.api(
            "POST", "sys/storage/raft/autopilot/configuration", {"server_stabilization_time": "1s"}
        )
        for node in nodes[1:]:
            # A joining node takes the unseal key once its retry_join reached the leader;
            # before that the key is not accepted yet, so retry.
            node.server.wait_until(
                functools.partial(_unseal_follower, node), timeout=60, what="joined and unsealed"
            )
        first.server.wait_until(
            lambda: len(cluster.voters()) == size, timeout=60, what=f"{size} Raft voters"
        )
        if kv:
            leader = cluster.active()
            leader.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
            leader.server.wait_until(
                lambda: leader.request("GET", "secret/config")[0] == 200,
                timeout=20,
                what="kv-v2 ready",
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _answers_health(node: OpenBao) -> bool:
    return node.health().get("_status") in (501, 503, 200)


def _unseal_follower(node: OpenBao) -> bool:
    """One unseal attempt; True once the node is an unsealed standby (or active)."""
    if node.health().get("_status") in (200, 429, 473):
        return True
    node.request("PUT", "sys/unseal", {"key": node.unseal_key}, token="")
    return node.health().get("_status") in (200, 429, 473)
