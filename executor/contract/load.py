"""Turning an environment into a :class:`~executor.contract.config.Config`: the entry point
and the sections every mode shares (general, cluster, OpenBao), the backup's marker and the
delete's keys.

Guarantees:

* :func:`load_config` returns a typed, frozen :class:`~executor.contract.config.Config` or
  raises one :class:`~executor.errors.ConfigurationError` listing *every* problem found, each
  naming the variable; it reads no variable outside :data:`~executor.contract.TABLE` (except
  ``AWS_REGION``/``AWS_DEFAULT_REGION``, only to know whether S3 needs a default region);
* only the sections of the mode are loaded (storage always; OpenBao for backup, restore and
  drill; the mode's own section);
* a delete's keys all lie directly under this cluster's prefix, each once; a marker path is a
  KV path (never under ``sys/``, ``auth/``, ``identity/``, ``cubbyhole/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from executor.contract.config import (
    BackupSettings,
    ClusterRef,
    Config,
    DeleteSettings,
    MarkerSettings,
    OpenBaoAuth,
    OpenBaoSettings,
    RestoreSettings,
    VerifySettings,
)
from executor.contract.envvar import (
    AUTH_METHODS,
    BAO_MODES,
    MAX_DELETE_KEYS_JSON,
    MODES,
    EnvVar,
    Mode,
)
from executor.contract.load_drill import load_drill
from executor.contract.load_storage import load_storage
from executor.contract.reader import Reader, check_key_shape
from executor.contract.vars_general import (
    BACKUP_NAME,
    CLUSTER_NAME,
    CLUSTER_NAMESPACE,
    CLUSTER_UID,
    CONNECT_TIMEOUT,
    LOG_LEVEL,
    TERMINATION_MESSAGE_PATH,
    TIMEOUT,
    TRIGGER,
)
from executor.contract.vars_modes import (
    DELETE_KEYS,
    DRILL_ADDR,
    MARKER_KV_VERSION,
    MARKER_PATH,
    RESTORE_APPLY_TIMEOUT,
    RESTORE_FORCE,
    RESTORE_KEY,
    VERIFY_KEY,
)
from executor.contract.vars_openbao import (
    AUTH_METHOD,
    AUTH_MOUNT,
    AUTH_ROLE,
    AUTH_TOKEN_FILE,
    OPENBAO_ADDR,
    OPENBAO_CACERT,
    OPENBAO_READ_TIMEOUT,
    OPENBAO_TOKEN_FILE,
)
from executor.errors import ConfigurationError
from executor.layout import cluster_prefix

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TRIGGER = re.compile(r"^[A-Za-z0-9._:-]{1,63}$")
#: Longest accepted OBB_MARKER_PATH (keeps the report well within its 4 KiB).
MAX_MARKER_PATH = 256
_API_PATH = re.compile(r"^[A-Za-z0-9_.+=@-]+(/[A-Za-z0-9_.+=@-]+)+$")


def load_config(*, mode: str, environ: Mapping[str, str]) -> Config:
    """Parse and validate the environment for ``mode``; raise ConfigurationError listing all
    problems."""
    r = Reader(environ)
    if mode not in MODES:
        raise ConfigurationError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    m: Mode = mode

    term = Path(r.text(TERMINATION_MESSAGE_PATH) or "/dev/termination-log")
    log_level = r.choice(LOG_LEVEL, ("debug", "info", "warning", "error")) or "info"
    timeout = r.number(TIMEOUT, lo=0, hi=7 * 24 * 3600)
    connect_timeout = r.number(CONNECT_TIMEOUT, lo=0.1, hi=600)

    namespace = r.text(CLUSTER_NAMESPACE, required=True) or ""
    if namespace and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        r.problem(CLUSTER_NAMESPACE, f"must be a DNS label (got {namespace!r})")
    name = r.text(CLUSTER_NAME, required=True) or ""
    if name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        r.problem(CLUSTER_NAME, f"must be a DNS subdomain name (got {name!r})")
    uid = r.text(CLUSTER_UID, required=(m == "backup"))
    cluster = ClusterRef(namespace=namespace, name=name, uid=uid)

    storage = load_storage(r, m, connect_timeout=connect_timeout)
    openbao = _openbao(r, connect_timeout=connect_timeout) if m in BAO_MODES else None
    if m == "drill":
        openbao = _openbao(r, connect_timeout=connect_timeout, addr_var=DRILL_ADDR)

    backup = restore = delete = None
    verify = None
    drill = None
    if m == "backup":
        trigger = r.text(TRIGGER) or "manual"
        if not _TRIGGER.match(trigger):
            r.problem(TRIGGER, f"must be 1-63 of [A-Za-z0-9._:-] (got {trigger!r})")
        backup = BackupSettings(trigger=trigger, backup_name=r.text(BACKUP_NAME), marker=_marker(r))
    elif m == "restore":
        key = r.text(RESTORE_KEY, required=True) or ""
        if key:
            check_key_shape(r, RESTORE_KEY, key)
        restore = RestoreSettings(
            key=key,
            force=r.flag(RESTORE_FORCE),
            apply_timeout=r.number(RESTORE_APPLY_TIMEOUT, lo=1, hi=3600),
        )
    elif m == "verify":
        key = r.text(VERIFY_KEY, required=True) or ""
        if key:
            check_key_shape(r, VERIFY_KEY, key)
        verify = VerifySettings(key=key)
    elif m == "drill":
        drill = load_drill(r, openbao)
    else:
        delete = DeleteSettings(keys=_delete_keys(r, storage.path_prefix, namespace, name))

    if r.problems:
        raise ConfigurationError("invalid configuration: " + "; ".join(r.problems))
    return Config(
        mode=m,
        cluster=cluster,
        storage=storage,
        openbao=openbao,
        backup=backup,
        restore=restore,
        delete=delete,
        termination_message_path=term,
        log_level=log_level,
        timeout=timeout,
        verify=verify,
        drill=drill,
    )


def _delete_keys(r: Reader, prefix: str, namespace: str, name: str) -> tuple[str, ...]:
    raw = r.text(DELETE_KEYS, required=True)
    if raw is None:
        return ()
    if len(raw.encode()) > MAX_DELETE_KEYS_JSON:
        r.problem(DELETE_KEYS, f"longer than {MAX_DELETE_KEYS_JSON} bytes: delete in batches")
        return ()
    try:
        keys = json.loads(raw)
    except ValueError:
        r.problem(DELETE_KEYS, "is not valid JSON")
        return ()
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        r.problem(DELETE_KEYS, "must be a non-empty JSON list of strings")
        return ()
    own = cluster_prefix(path_prefix=prefix, namespace=namespace, cluster=name)
    out: list[str] = []
    for key in keys:
        if not check_key_shape(r, DELETE_KEYS, key):
            continue
        if not key.startswith(own) or "/" in key[len(own) :]:
            r.problem(DELETE_KEYS, f"{key!r} is outside this cluster's prefix {own!r}")
            continue
        if key not in out:
            out.append(key)
    return tuple(out)


def _openbao(
    r: Reader, *, connect_timeout: float, addr_var: EnvVar = OPENBAO_ADDR
) -> OpenBaoSettings:
    addr = r.url(addr_var, required=True) or ""
    cacert = r.readable_file(OPENBAO_CACERT, required=False) if addr_var is OPENBAO_ADDR else None
    method = r.choice(AUTH_METHOD, AUTH_METHODS) or "token"
    mount = (r.raw(AUTH_MOUNT) or method).strip("/")
    if not re.match(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", mount):
        r.problem(AUTH_MOUNT, f"is not a valid mount path (got {mount!r})")
    role: str | None = None
    jwt_file = token_file = None
    if method in ("jwt", "kubernetes"):
        role = r.text(AUTH_ROLE, required=True)
        jwt_file = r.readable_file(AUTH_TOKEN_FILE, required=True)
    elif method == "token":
        token_file = r.readable_file(OPENBAO_TOKEN_FILE, required=True)
    return OpenBaoSettings(
        addr=addr,
        cacert=cacert,
        auth=OpenBaoAuth(
            method=method,  # type: ignore[arg-type]
            mount=mount,
            role=role,
            jwt_file=jwt_file,
            token_file=token_file,
        ),
        connect_timeout=connect_timeout,
        read_timeout=r.number(OPENBAO_READ_TIMEOUT, lo=1, hi=24 * 3600),
    )


def _marker(r: Reader) -> MarkerSettings | None:
    path = r.text(MARKER_PATH)
    version_text = r.choice(MARKER_KV_VERSION, ("1", "2")) or "2"
    if path is None:
        return None
    path = path.strip("/")
    if len(path) > MAX_MARKER_PATH:
        r.problem(MARKER_PATH, f"longer than {MAX_MARKER_PATH} characters")
    elif not _API_PATH.match(path) or any(seg in (".", "..") for seg in path.split("/")):
        r.problem(MARKER_PATH, f"must be an OpenBao API path like mount/data/name (got {path!r})")
    elif path.split("/", 1)[0] in ("sys", "auth", "identity", "cubbyhole"):
        r.problem(MARKER_PATH, f"must be a path in a KV mount, not under {path.split('/')[0]}/")
    elif version_text == "2" and "/data/" not in f"/{path}":
        r.problem(
            MARKER_PATH,
            f"a KV v2 API path has /data/ after the mount (e.g. "
            f"secret/data/openbao-backup/marker), got {path!r}; or set "
            "OBB_MARKER_KV_VERSION=1",
        )
    return MarkerSettings(path=path, kv_version=int(version_text))
