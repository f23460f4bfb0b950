"""Rows of the contract table: the OpenBao section (address, TLS, login, read timeout).

Guarantees: every module-level :class:`~executor.contract.envvar.EnvVar` here is a row of
:data:`executor.contract.TABLE`, in the order written (:mod:`executor.contract.table` collects
them); the module defines rows only and imports none from another section.
"""

from __future__ import annotations

from executor.contract.envvar import AUTH_MODES, BAO_MODES, row

OPENBAO_ADDR = row(
    "OpenBao",
    "OBB_OPENBAO_ADDR",
    "OpenBao API address, http(s)://host[:port]: best a Service selecting the active node, or "
    "any node (sys/leader then names the active one). Behind a load-balancing Service a "
    "restore may hit a standby and fail with a leader error.",
    modes=BAO_MODES,
    required="yes",
)
OPENBAO_CACERT = row(
    "OpenBao",
    "OBB_OPENBAO_CACERT",
    "PEM CA bundle for OpenBao's TLS certificate (system trust store if unset). TLS is always "
    "verified.",
    modes=BAO_MODES,
)
AUTH_METHOD = row(
    "OpenBao",
    "OBB_AUTH_METHOD",
    "jwt or kubernetes (login with the projected ServiceAccount token) or token (static "
    "token file). drill: the login to the RESTORED copy, whose auth state is the live "
    "cluster's.",
    modes=AUTH_MODES,
    required="yes",
)
AUTH_MOUNT = row(
    "OpenBao",
    "OBB_AUTH_MOUNT",
    "Mount path of the auth method (auth/<mount>/login); default: the method name.",
    modes=AUTH_MODES,
)
AUTH_ROLE = row(
    "OpenBao",
    "OBB_AUTH_ROLE",
    "Role to log in with.",
    modes=AUTH_MODES,
    required="jwt, kubernetes",
)
AUTH_TOKEN_FILE = row(
    "OpenBao",
    "OBB_AUTH_TOKEN_FILE",
    "Projected ServiceAccount token (dedicated audience) sent as the login jwt; read at login.",
    default="/var/run/secrets/openbao-backup/token",
    modes=AUTH_MODES,
)
OPENBAO_TOKEN_FILE = row(
    "OpenBao",
    "OBB_OPENBAO_TOKEN_FILE",
    "File holding a static OpenBao token (method token); never revoked by the executor.",
    modes=AUTH_MODES,
    required="token",
)
OPENBAO_READ_TIMEOUT = row(
    "OpenBao",
    "OBB_OPENBAO_READ_TIMEOUT",
    "Longest silence (seconds) tolerated from OpenBao: first snapshot byte, any later byte, "
    "the answer to a restore upload.",
    default="600",
    modes=AUTH_MODES,
)
