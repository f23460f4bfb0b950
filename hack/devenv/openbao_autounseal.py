"""Transit auto-unseal for tests: an OpenBao acting as the "KMS", and single Raft nodes sealed
by its transit key (the plain single node is ``devenv.openbao``).

Guarantees:

* ``start_transit_kms`` returns a Shamir-sealed single node (``devenv.openbao.start_openbao``)
  with the transit engine at ``transit/`` and a key ``key_name``; it is stopped again if that
  setup fails;
* ``transit_seal_stanza`` is the HCL ``seal "transit"`` stanza for that key; it holds the KMS
  root token (a secret), so the config file it goes into is made mode 0600;
* ``start_openbao_autounseal`` starts a single-node Raft OpenBao (127.0.0.1, ports picked free,
  without the caller's ``VAULT_*``/``BAO_*`` environment) whose config holds the seal stanza,
  initialises it with one recovery share, and returns only once it unsealed itself and is
  active (with ``kv=True``, the default, with a serving KV v2 at ``secret/``); the recovery key
  is ``extra["recovery_key"]``, ``unseal_key`` stays empty. A failed start stops the node by
  PID.

Test infrastructure, not product code.
"""

from __future__ import annotations

from pathlib import Path

from devenv.openbao import OpenBao, bao_binary, server_config, server_env, start_openbao
from devenv.procs import Server, free_port


def start_transit_kms(workdir: Path, *, name: str = "kms", key_name: str = "autounseal") -> OpenBao:
    """An OpenBao acting as the "KMS" of a transit auto-unseal: a Shamir-sealed single node
    (see :func:`start_openbao`) with the transit engine at ``transit/`` and a key
    ``key_name``. Its root token is what :func:`transit_seal_stanza` puts in the seal."""
    kms = start_openbao(workdir, name=name, kv=False)
    try:
        kms.api("POST", "sys/mounts/transit", {"type": "transit"})
        kms.api("POST", f"transit/keys/{key_name}", {})
    except BaseException:
        kms.stop()
        raise
    kms.extra["transit_key"] = key_name
    return kms


def transit_seal_stanza(kms: OpenBao, *, key_name: str = "autounseal") -> str:
    """The HCL ``seal "transit"`` stanza that auto-unseals with ``kms``'s transit key (it holds
    the KMS root token: a secret)."""
    return (
        'seal "transit" {\n'
        f'  address = "{kms.addr}"\n'
        f'  token = "{kms.root_token}"\n'
        f'  key_name = "{key_name}"\n'
        '  mount_path = "transit/"\n'
        "  disable_renewal = true\n"
        "}\n"
    )


def start_openbao_autounseal(
    workdir: Path, *, seal: str, name: str = "openbao-au", kv: bool = True
) -> OpenBao:
    """Start a single-node Raft OpenBao whose config also holds ``seal`` (an HCL seal stanza,
    e.g. :func:`transit_seal_stanza`), initialise it with one recovery share (it unseals
    itself) and wait until it is active. The recovery key is ``extra["recovery_key"]``;
    ``unseal_key`` stays empty."""
    port, cluster_port = free_port(), free_port()
    home = workdir / name
    data = home / "raft"
    data.mkdir(parents=True, exist_ok=True)
    addr = f"http://127.0.0.1:{port}"
    config = home / "config.hcl"
    config.write_text(
        server_config(data=data, node_id=name, port=port, cluster_port=cluster_port, extra=seal)
    )
    config.chmod(0o600)
    env = server_env()
    srv = Server(
        name, [str(bao_binary()), "server", f"-config={config}"], home / "bao.log", env=env
    )
    srv.start()
    bao = OpenBao(server=srv, addr=addr, data_dir=data)
    try:
        srv.wait_until(
            lambda: bao.health().get("_status") in (501, 503, 200), timeout=30, what="sys/health"
        )
        init = bao.api("PUT", "sys/init", {"recovery_shares": 1, "recovery_threshold": 1}, token="")
        recovery = init.get("recovery_keys_base64") or init.get("recovery_keys") or []
        bao.extra["recovery_key"] = recovery[0] if recovery else ""
        bao.root_token = init["root_token"]
        bao.wait_active(timeout=60)
        if kv:
            bao.ensure_kv_mount("secret", version=2)
    except BaseException:
        bao.stop()
        raise
    return bao
