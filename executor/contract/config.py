"""The typed, frozen configuration :func:`~executor.contract.load_config` returns, and its
inverse for the Job builder.

Guarantees:

* every settings class is a frozen dataclass; secret fields (S3 secret key and session token,
  Azure connection string and account key, drill unseal keys) are kept out of ``repr``;
* :meth:`Config.to_env` is the inverse of :func:`~executor.contract.load_config` for our
  ``OBB_`` variables (the Job builder uses it); secrets are never in its output: they reach
  the pod through the standard provider variables (``valueFrom.secretKeyRef``) or files;
* :func:`env_number` writes a number the way the parsers read it back (``10``, ``0.5``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from executor.contract.envvar import AuthMethod, Mode, Provider
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
    DRILL_AUTO_UNSEAL,
    DRILL_DONE_FILE,
    DRILL_KEY,
    DRILL_START_TIMEOUT,
    MARKER_KV_VERSION,
    MARKER_PATH,
    RESTORE_APPLY_TIMEOUT,
    RESTORE_FORCE,
    RESTORE_KEY,
    UNSEAL_KEYS_FILE,
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
from executor.contract.vars_storage import (
    AZURE_ACCOUNT,
    BUCKET,
    CONCURRENCY,
    EMULATOR,
    ENDPOINT,
    GCS_PROJECT,
    PART_SIZE,
    PATH_PREFIX,
    PROVIDER,
    REGION,
    STORAGE_CACERT,
    STORAGE_READ_TIMEOUT,
    STORAGE_RETRIES,
    USE_PATH_STYLE,
)


@dataclass(frozen=True)
class OpenBaoAuth:
    method: AuthMethod
    mount: str
    role: str | None
    jwt_file: Path | None
    token_file: Path | None


@dataclass(frozen=True)
class OpenBaoSettings:
    addr: str
    cacert: Path | None
    auth: OpenBaoAuth
    connect_timeout: float
    read_timeout: float


@dataclass(frozen=True)
class S3Credentials:
    kind: Literal["static", "web-identity", "default-chain"]
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    web_identity_token_file: Path | None = None


@dataclass(frozen=True)
class GcsCredentials:
    kind: Literal["service-account-file", "adc", "emulator"]
    file: Path | None = None


@dataclass(frozen=True)
class AzureCredentials:
    kind: Literal["connection-string", "account-key", "default-credential"]
    connection_string: str | None = field(default=None, repr=False)
    account_key: str | None = field(default=None, repr=False)


Credentials = S3Credentials | GcsCredentials | AzureCredentials


@dataclass(frozen=True)
class StorageSettings:
    provider: Provider
    bucket: str
    endpoint: str | None
    region: str | None
    path_prefix: str
    use_path_style: bool
    cacert: Path | None
    part_size: int
    concurrency: int
    connect_timeout: float
    read_timeout: float
    retries: int
    emulator: bool
    gcs_project: str | None
    azure_account: str | None
    credentials: Credentials


@dataclass(frozen=True)
class ClusterRef:
    namespace: str
    name: str
    uid: str | None


@dataclass(frozen=True)
class MarkerSettings:
    path: str
    kv_version: int


@dataclass(frozen=True)
class BackupSettings:
    trigger: str
    backup_name: str | None
    marker: MarkerSettings | None = None


@dataclass(frozen=True)
class RestoreSettings:
    key: str
    force: bool
    apply_timeout: float


@dataclass(frozen=True)
class VerifySettings:
    key: str


@dataclass(frozen=True)
class DrillSettings:
    key: str
    addr: str
    done_file: Path
    unseal_keys_file: Path | None
    unseal_keys: tuple[str, ...] = field(default=(), repr=False)
    start_timeout: float = 60.0
    auto_unseal: bool = False


@dataclass(frozen=True)
class DeleteSettings:
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    mode: Mode
    cluster: ClusterRef
    storage: StorageSettings
    openbao: OpenBaoSettings | None
    backup: BackupSettings | None
    restore: RestoreSettings | None
    delete: DeleteSettings | None
    termination_message_path: Path
    log_level: str
    timeout: float
    verify: VerifySettings | None = None
    drill: DrillSettings | None = None

    def to_env(self) -> dict[str, str]:
        """Our ``OBB_`` variables for this configuration (no secrets, no provider variables)."""
        env: dict[str, str] = {
            TERMINATION_MESSAGE_PATH.name: str(self.termination_message_path),
            LOG_LEVEL.name: self.log_level,
            TIMEOUT.name: env_number(self.timeout),
            CONNECT_TIMEOUT.name: env_number(self.storage.connect_timeout),
            CLUSTER_NAMESPACE.name: self.cluster.namespace,
            CLUSTER_NAME.name: self.cluster.name,
        }
        if self.cluster.uid is not None:
            env[CLUSTER_UID.name] = self.cluster.uid
        s = self.storage
        env.update(
            {
                PROVIDER.name: s.provider,
                BUCKET.name: s.bucket,
                PATH_PREFIX.name: s.path_prefix,
                STORAGE_READ_TIMEOUT.name: env_number(s.read_timeout),
                STORAGE_RETRIES.name: str(s.retries),
            }
        )
        if self.mode == "backup":
            env[PART_SIZE.name] = str(s.part_size)
            env[CONCURRENCY.name] = str(s.concurrency)
        optional = {
            ENDPOINT.name: s.endpoint,
            STORAGE_CACERT.name: s.cacert,
            GCS_PROJECT.name: s.gcs_project,
            AZURE_ACCOUNT.name: s.azure_account,
        }
        env.update({k: str(v) for k, v in optional.items() if v is not None})
        if s.provider == "s3":
            env[USE_PATH_STYLE.name] = _bool(s.use_path_style)
            if s.region is not None:
                env[REGION.name] = s.region
        if s.provider == "gcs":
            env[EMULATOR.name] = _bool(s.emulator)
        if self.openbao is not None:
            o = self.openbao
            env.update(
                {
                    (DRILL_ADDR if self.mode == "drill" else OPENBAO_ADDR).name: o.addr,
                    AUTH_METHOD.name: o.auth.method,
                    AUTH_MOUNT.name: o.auth.mount,
                    OPENBAO_READ_TIMEOUT.name: env_number(o.read_timeout),
                }
            )
            if o.cacert is not None:
                env[OPENBAO_CACERT.name] = str(o.cacert)
            if o.auth.role is not None:
                env[AUTH_ROLE.name] = o.auth.role
            if o.auth.jwt_file is not None:
                env[AUTH_TOKEN_FILE.name] = str(o.auth.jwt_file)
            if o.auth.token_file is not None:
                env[OPENBAO_TOKEN_FILE.name] = str(o.auth.token_file)
        if self.backup is not None:
            env[TRIGGER.name] = self.backup.trigger
            if self.backup.backup_name is not None:
                env[BACKUP_NAME.name] = self.backup.backup_name
            if self.backup.marker is not None:
                env[MARKER_PATH.name] = self.backup.marker.path
                env[MARKER_KV_VERSION.name] = str(self.backup.marker.kv_version)
        if self.restore is not None:
            env[RESTORE_KEY.name] = self.restore.key
            env[RESTORE_FORCE.name] = _bool(self.restore.force)
            env[RESTORE_APPLY_TIMEOUT.name] = env_number(self.restore.apply_timeout)
        if self.verify is not None:
            env[VERIFY_KEY.name] = self.verify.key
        if self.drill is not None:
            env[DRILL_KEY.name] = self.drill.key
            env[DRILL_DONE_FILE.name] = str(self.drill.done_file)
            env[DRILL_START_TIMEOUT.name] = env_number(self.drill.start_timeout)
            env[DRILL_AUTO_UNSEAL.name] = _bool(self.drill.auto_unseal)
            if self.drill.unseal_keys_file is not None:
                env[UNSEAL_KEYS_FILE.name] = str(self.drill.unseal_keys_file)
        if self.delete is not None:
            env[DELETE_KEYS.name] = json.dumps(list(self.delete.keys), separators=(",", ":"))
        return env


def env_number(x: float) -> str:
    """A number as an environment value: ``30`` for 30.0, ``2.5`` otherwise."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _bool(x: bool) -> str:
    return "true" if x else "false"
