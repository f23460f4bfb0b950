"""The Job environment contract between the controller's Job builder and the executor.

Guarantees:

* :data:`TABLE` is the single definition of every environment variable the executor reads:
  ours (prefix ``OBB_``) and the standard provider variables it honours. Each row says what
  it means, its default, and which modes and providers read it. ``docs/executor.md`` is
  rendered from this table (:mod:`executor.docs`) and a test keeps the two equal;
* :func:`load_config` turns an environment into a typed, frozen :class:`Config` or raises one
  :class:`~executor.errors.ConfigurationError` listing *every* problem found, each naming the
  variable; it never reads a variable that is not in :data:`TABLE`;
* :meth:`Config.to_env` is the inverse for our ``OBB_`` variables (the Job builder uses it);
  secrets are never in its output: they reach the pod through the standard provider
  variables (``valueFrom.secretKeyRef``) or files;
* secret values read here are registered with :mod:`executor.secrets` at once and are kept
  out of ``repr``.

The controller may import this module (it re-exports the object layout of
:mod:`executor.layout`) and :mod:`executor.report`; both import nothing from the controller and
nothing but the standard library. The drill Job's OpenBao container runs
:data:`DRILL_SERVER_SCRIPT` (defined here so the controller can take it from this module; it is
re-exported by :mod:`executor.drill`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from executor import secrets
from executor.errors import ConfigurationError
from executor.layout import (  # re-exported: the object layout is part of the contract
    MANIFEST_SUFFIX,
    SNAPSHOT_SUFFIX,
    Manifest,
    cluster_prefix,
    manifest_key,
    snapshot_key,
    snapshot_time,
)

__all__ = [
    "DRILL_SERVER_SCRIPT",
    "MANIFEST_SUFFIX",
    "SNAPSHOT_SUFFIX",
    "TABLE",
    "Config",
    "EnvVar",
    "Manifest",
    "cluster_prefix",
    "load_config",
    "manifest_key",
    "snapshot_key",
    "snapshot_time",
    "unknown_variables",
]

Mode = Literal["backup", "restore", "delete", "verify", "drill"]
Provider = Literal["s3", "gcs", "azure"]
AuthMethod = Literal["jwt", "kubernetes", "token"]

MODES: tuple[Mode, ...] = get_args(Mode)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: OBB_PART_SIZE when unset, per provider; measured with hack/bench/executor_throughput.py and
#: hack/bench/executor_variants.py (docs/executor-performance.md). Every provider gets 64 MiB
#: of part buffers at the default concurrency (4). S3 and Azure: 4 x 16 MiB; 8 x 8, 16 x 4
#: and 32 x 2 MiB were within this machine's noise on moto and Azurite (throughput bound by
#: the emulators), so the middle keeps both fewer requests than 8 MiB parts and more parallel
#: round trips than 2 x 32 MiB. Re-measured on S3 at 256 MiB (3 interleaved runs): 4 x 16
#: 82 MiB/s 1.69 CPU s, 5 x 16 (OBB_CONCURRENCY=5) 84 MiB/s 1.83 s and 16 MiB more RSS,
#: 8 x 8 93 MiB/s 1.89 s: no gain beyond the noise for more CPU, so 4 stays. GCS: 2 x 32 MiB
#: (one chunk sending, one filling), because a resumable upload sends one chunk at a time
#: and fake-gcs-server re-copies the whole object on every chunk: 16 MiB chunks ran at 45
#: MiB/s, 32 MiB at 56, 64 MiB at 84 (RSS 86 / 117 / 181 MiB); 64 MiB would cost 128 MiB of
#: buffers, twice the other providers', for an emulator's quadratic cost that GCS does not have.
DEFAULT_PART_SIZE = {"s3": 16 * MiB, "gcs": 32 * MiB, "azure": 16 * MiB}

#: Largest accepted ``OBB_DELETE_KEYS`` JSON, so a delete report always fits in 4 KiB.
MAX_DELETE_KEYS_JSON = 3000
#: Longest snapshot key accepted (the OpenBaoRestore CRD's limit; S3 and GCS allow 1024 bytes).
MAX_KEY_LENGTH = 1024


@dataclass(frozen=True)
class EnvVar:
    """One row of the contract table."""

    name: str
    meaning: str
    default: str | None = None
    modes: tuple[Mode, ...] = MODES
    providers: tuple[Provider, ...] = PROVIDERS
    required: str = "no"
    secret: bool = False
    standard: bool = False
    section: str = ""


_ALL = MODES
_BAO: tuple[Mode, ...] = ("backup", "restore")
_AUTH: tuple[Mode, ...] = ("backup", "restore", "drill")


def _v(section: str, name: str, meaning: str, **kw: object) -> EnvVar:
    return EnvVar(name=name, meaning=meaning, section=section, **kw)  # type: ignore[arg-type]


# -- the table ---------------------------------------------------------------------------------

TERMINATION_MESSAGE_PATH = _v(
    "General",
    "OBB_TERMINATION_MESSAGE_PATH",
    "File the JSON result report is written to (the container's terminationMessagePath).",
    default="/dev/termination-log",
)
LOG_LEVEL = _v("General", "OBB_LOG_LEVEL", "debug, info, warning or error.", default="info")
TIMEOUT = _v(
    "General",
    "OBB_TIMEOUT",
    "Overall deadline in seconds, 0 = none. Set it below the Job's activeDeadlineSeconds so a "
    "report is always written.",
    default="0",
)
CONNECT_TIMEOUT = _v(
    "General",
    "OBB_CONNECT_TIMEOUT",
    "TCP+TLS connect timeout (seconds), OpenBao and storage.",
    default="10",
)
CLUSTER_NAMESPACE = _v(
    "Cluster",
    "OBB_CLUSTER_NAMESPACE",
    "Namespace of the OpenBao cluster (key layout).",
    required="yes",
)
CLUSTER_NAME = _v(
    "Cluster", "OBB_CLUSTER_NAME", "Name of the OpenBao cluster (key layout).", required="yes"
)
CLUSTER_UID = _v(
    "Cluster",
    "OBB_CLUSTER_UID",
    "UID of the OpenBao cluster object (recorded in the manifest).",
    modes=("backup",),
    required="yes",
)
TRIGGER = _v(
    "Cluster",
    "OBB_TRIGGER",
    "Why this backup runs, e.g. scheduled or manual (recorded in the manifest); "
    "1-63 of [A-Za-z0-9._:-].",
    default="manual",
    modes=("backup",),
)
BACKUP_NAME = _v(
    "Cluster",
    "OBB_BACKUP_NAME",
    "Name of the backup object (recorded in the manifest).",
    modes=("backup",),
)
OPENBAO_ADDR = _v(
    "OpenBao",
    "OBB_OPENBAO_ADDR",
    "OpenBao API address, http(s)://host[:port]: best a Service selecting the active node, or "
    "any node (sys/leader then names the active one). Behind a load-balancing Service a "
    "restore may hit a standby and fail with a leader error.",
    modes=_BAO,
    required="yes",
)
OPENBAO_CACERT = _v(
    "OpenBao",
    "OBB_OPENBAO_CACERT",
    "PEM CA bundle for OpenBao's TLS certificate (system trust store if unset). TLS is always "
    "verified.",
    modes=_BAO,
)
AUTH_METHOD = _v(
    "OpenBao",
    "OBB_AUTH_METHOD",
    "jwt or kubernetes (login with the projected ServiceAccount token) or token (static "
    "token file). drill: the login to the RESTORED copy, whose auth state is the live "
    "cluster's.",
    modes=_AUTH,
    required="yes",
)
AUTH_MOUNT = _v(
    "OpenBao",
    "OBB_AUTH_MOUNT",
    "Mount path of the auth method (auth/<mount>/login); default: the method name.",
    modes=_AUTH,
)
AUTH_ROLE = _v(
    "OpenBao",
    "OBB_AUTH_ROLE",
    "Role to log in with.",
    modes=_AUTH,
    required="jwt, kubernetes",
)
AUTH_TOKEN_FILE = _v(
    "OpenBao",
    "OBB_AUTH_TOKEN_FILE",
    "Projected ServiceAccount token (dedicated audience) sent as the login jwt; read at login.",
    default="/var/run/secrets/openbao-backup/token",
    modes=_AUTH,
)
OPENBAO_TOKEN_FILE = _v(
    "OpenBao",
    "OBB_OPENBAO_TOKEN_FILE",
    "File holding a static OpenBao token (method token); never revoked by the executor.",
    modes=_AUTH,
    required="token",
)
OPENBAO_READ_TIMEOUT = _v(
    "OpenBao",
    "OBB_OPENBAO_READ_TIMEOUT",
    "Longest silence (seconds) tolerated from OpenBao: first snapshot byte, any later byte, "
    "the answer to a restore upload.",
    default="600",
    modes=_AUTH,
)
PROVIDER = _v("Storage", "OBB_PROVIDER", "s3, gcs or azure.", required="yes")
BUCKET = _v("Storage", "OBB_BUCKET", "Bucket (Azure: container). Never created.", required="yes")
ENDPOINT = _v(
    "Storage",
    "OBB_ENDPOINT",
    "Custom endpoint URL (S3-compatible store, GCS emulator or private endpoint, Azure blob "
    "endpoint incl. account path for Azurite).",
)
REGION = _v(
    "Storage",
    "OBB_REGION",
    "S3 region (else AWS_REGION/AWS_DEFAULT_REGION; us-east-1 with a custom endpoint).",
    providers=("s3",),
)
PATH_PREFIX = _v(
    "Storage",
    "OBB_PATH_PREFIX",
    "Key prefix; keys are <prefix>/<namespace>/<cluster>/<UTC timestamp>-<8 hex>.snap.",
    default="",
)
USE_PATH_STYLE = _v(
    "Storage",
    "OBB_USE_PATH_STYLE",
    "true/false: S3 path-style addressing. Default: true with OBB_ENDPOINT, else false.",
    default="auto",
    providers=("s3",),
)
STORAGE_CACERT = _v(
    "Storage",
    "OBB_STORAGE_CACERT",
    "PEM CA bundle for the storage endpoint (system trust store if unset). TLS is always verified.",
)
PART_SIZE = _v(
    "Storage",
    "OBB_PART_SIZE",
    "Upload part/chunk/block size, bytes or with Ki/Mi/Gi. S3: 5Mi-5Gi (max snapshot = "
    "10,000 parts); GCS: multiple of 256Ki; Azure: at most 4000Mi (50,000 blocks). Default: "
    "16Mi, and 32Mi for GCS (64 MiB of part buffers for every provider at the default "
    "concurrency).",
    default="16Mi",
    modes=("backup",),
)
CONCURRENCY = _v(
    "Storage",
    "OBB_CONCURRENCY",
    "Parts/blocks in memory at once, each being filled or uploaded (1-64): memory ~ "
    "concurrency x part size. GCS resumable uploads are sequential (one chunk in flight, the "
    "next one buffered: 2 x part size).",
    default="4",
    modes=("backup",),
)
STORAGE_READ_TIMEOUT = _v(
    "Storage",
    "OBB_STORAGE_READ_TIMEOUT",
    "Read timeout (seconds) of one storage request.",
    default="300",
)
STORAGE_RETRIES = _v(
    "Storage",
    "OBB_STORAGE_RETRIES",
    "Retries of a failed storage request (5xx, 429, connection errors), 0-10.",
    default="3",
)
EMULATOR = _v(
    "Storage",
    "OBB_EMULATOR",
    "true: OBB_ENDPOINT is a GCS emulator; requests carry NO credentials. Explicit opt-in "
    "only: an http:// GCS endpoint without it is refused.",
    default="false",
    providers=("gcs",),
)
GCS_PROJECT = _v(
    "Storage",
    "OBB_GCS_PROJECT",
    "Project billed for requester-pays buckets (userProject).",
    providers=("gcs",),
)
AZURE_ACCOUNT = _v(
    "Storage",
    "OBB_AZURE_ACCOUNT",
    "Storage account name; the endpoint defaults to https://<account>.blob.core.windows.net.",
    providers=("azure",),
    required="unless a connection string is given",
)
RESTORE_KEY = _v(
    "Restore",
    "OBB_RESTORE_KEY",
    "Key of the snapshot to restore (its manifest must exist).",
    modes=("restore",),
    required="yes",
)
RESTORE_FORCE = _v(
    "Restore",
    "OBB_RESTORE_FORCE",
    "true: POST sys/storage/raft/snapshot-force (snapshot of another cluster; the node must "
    "then be unsealed with that cluster's keys).",
    default="false",
    modes=("restore",),
)
RESTORE_APPLY_TIMEOUT = _v(
    "Restore",
    "OBB_RESTORE_APPLY_TIMEOUT",
    "Seconds to watch OpenBao apply an accepted restore (active again or sealed); not "
    "seeing it is logged, not a failure.",
    default="120",
    modes=("restore",),
)
VERIFY_KEY = _v(
    "Verify",
    "OBB_VERIFY_KEY",
    "Key of the snapshot to check against its manifest (read only: manifest, size, one "
    "streaming pass through the archive verifier; no OpenBao).",
    modes=("verify",),
    required="yes",
)
DELETE_KEYS = _v(
    "Delete",
    "OBB_DELETE_KEYS",
    f"JSON list of snapshot keys to delete with their manifests (at most "
    f"{MAX_DELETE_KEYS_JSON} bytes); every key must be under <prefix>/<namespace>/<cluster>/.",
    modes=("delete",),
    required="yes",
)
MARKER_PATH = _v(
    "Freshness marker",
    "OBB_MARKER_PATH",
    "Opt-in: OpenBao API path (no leading slash, e.g. secret/data/openbao-backup/marker for "
    "KV v2, or a KV v1 path) the backup writes {record: OBB_BACKUP_NAME (else the snapshot "
    "key), time, nonce} to with its token just before the snapshot; recorded in the manifest "
    "and the report, read back by a drill. The token's policy needs create and update on it.",
    modes=("backup",),
)
MARKER_KV_VERSION = _v(
    "Freshness marker",
    "OBB_MARKER_KV_VERSION",
    '1 or 2: the KV version of the marker\'s mount (2: the body is {"data": {...}} and the '
    "path must contain /data/).",
    default="2",
    modes=("backup",),
)
DRILL_KEY = _v(
    "Drill",
    "OBB_DRILL_KEY",
    "Key of the snapshot to drill: verified against its manifest, then force-restored into "
    "the scratch OpenBao beside the executor (never the live cluster).",
    modes=("drill",),
    required="yes",
)
DRILL_ADDR = _v(
    "Drill",
    "OBB_DRILL_ADDR",
    "URL of the scratch OpenBao in the same pod (DRILL_SERVER_SCRIPT), e.g. "
    "http://127.0.0.1:18200; must be a loopback address and an uninitialised server.",
    modes=("drill",),
    required="yes",
)
DRILL_DONE_FILE = _v(
    "Drill",
    "OBB_DRILL_DONE_FILE",
    "File in the volume shared with the scratch server's container, created when the "
    "executor ends (success, failure, bad configuration): the server's script then stops it.",
    modes=("drill",),
    required="yes",
)
UNSEAL_KEYS_FILE = _v(
    "Drill",
    "OBB_UNSEAL_KEYS_FILE",
    "Mounted Secret file with the LIVE cluster's Shamir unseal keys (one per line, or a JSON "
    "list, or the JSON of bao operator init; base64 or hex), enough to reach the threshold. "
    "Without it the drill stops after the restore was accepted: partial result.",
    modes=("drill",),
)
DRILL_START_TIMEOUT = _v(
    "Drill",
    "OBB_DRILL_START_TIMEOUT",
    "Seconds to wait for the scratch OpenBao at each step: to answer sys/health, to become "
    "active after init or unseal, to seal itself after the restore (auto-unseal: to unseal "
    "itself and become active again).",
    default="60",
    modes=("drill",),
)
DRILL_AUTO_UNSEAL = _v(
    "Drill",
    "OBB_DRILL_AUTO_UNSEAL",
    "true: the live cluster auto-unseals and the scratch server runs with the same seal "
    "stanza (DRILL_SEAL_CONFIG of DRILL_SERVER_SCRIPT): it is initialised with recovery "
    "keys, and after the restore it must unseal itself with that seal and become active "
    "(no OBB_UNSEAL_KEYS_FILE needed).",
    default="false",
    modes=("drill",),
)

_AWS: tuple[Provider, ...] = ("s3",)
_GCS: tuple[Provider, ...] = ("gcs",)
_AZ: tuple[Provider, ...] = ("azure",)
AWS_ACCESS_KEY_ID = _v(
    "Provider credentials (standard variables)",
    "AWS_ACCESS_KEY_ID",
    "Static S3 access key (with AWS_SECRET_ACCESS_KEY).",
    providers=_AWS,
    standard=True,
)
AWS_SECRET_ACCESS_KEY = _v(
    "Provider credentials (standard variables)",
    "AWS_SECRET_ACCESS_KEY",
    "Static S3 secret key.",
    providers=_AWS,
    standard=True,
    secret=True,
)
AWS_SESSION_TOKEN = _v(
    "Provider credentials (standard variables)",
    "AWS_SESSION_TOKEN",
    "Session token for temporary static credentials.",
    providers=_AWS,
    standard=True,
    secret=True,
)
AWS_ROLE_ARN = _v(
    "Provider credentials (standard variables)",
    "AWS_ROLE_ARN",
    "IRSA: role to assume with the web identity token (with AWS_WEB_IDENTITY_TOKEN_FILE).",
    providers=_AWS,
    standard=True,
)
AWS_WEB_IDENTITY_TOKEN_FILE = _v(
    "Provider credentials (standard variables)",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "IRSA: projected token file. Without static keys or IRSA the default botocore chain "
    "(EKS Pod Identity, instance profile) is used; no credentials at all is an error, never "
    "anonymous access.",
    providers=_AWS,
    standard=True,
)
GOOGLE_APPLICATION_CREDENTIALS = _v(
    "Provider credentials (standard variables)",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCS: service account or external_account (workload identity federation) JSON file; "
    "unset = Application Default Credentials (GKE metadata server).",
    providers=_GCS,
    standard=True,
)
AZURE_STORAGE_CONNECTION_STRING = _v(
    "Provider credentials (standard variables)",
    "AZURE_STORAGE_CONNECTION_STRING",
    "Azure connection string (first choice when set).",
    providers=_AZ,
    standard=True,
    secret=True,
)
AZURE_STORAGE_KEY = _v(
    "Provider credentials (standard variables)",
    "AZURE_STORAGE_KEY",
    "Azure storage account key (with OBB_AZURE_ACCOUNT).",
    providers=_AZ,
    standard=True,
    secret=True,
)
AZURE_CLIENT_ID = _v(
    "Provider credentials (standard variables)",
    "AZURE_CLIENT_ID",
    "Workload identity / managed identity client id (DefaultAzureCredential, used when no "
    "key or connection string is set).",
    providers=_AZ,
    standard=True,
)
AZURE_TENANT_ID = _v(
    "Provider credentials (standard variables)",
    "AZURE_TENANT_ID",
    "Workload identity tenant.",
    providers=_AZ,
    standard=True,
)
AZURE_FEDERATED_TOKEN_FILE = _v(
    "Provider credentials (standard variables)",
    "AZURE_FEDERATED_TOKEN_FILE",
    "Workload identity projected token file.",
    providers=_AZ,
    standard=True,
)

TABLE: tuple[EnvVar, ...] = tuple(v for v in list(globals().values()) if isinstance(v, EnvVar))
_BY_NAME = {v.name: v for v in TABLE}


# -- the typed configuration -------------------------------------------------------------------


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
            TIMEOUT.name: _num(self.timeout),
            CONNECT_TIMEOUT.name: _num(self.storage.connect_timeout),
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
                STORAGE_READ_TIMEOUT.name: _num(s.read_timeout),
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
                    OPENBAO_READ_TIMEOUT.name: _num(o.read_timeout),
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
            env[RESTORE_APPLY_TIMEOUT.name] = _num(self.restore.apply_timeout)
        if self.verify is not None:
            env[VERIFY_KEY.name] = self.verify.key
        if self.drill is not None:
            env[DRILL_KEY.name] = self.drill.key
            env[DRILL_DONE_FILE.name] = str(self.drill.done_file)
            env[DRILL_START_TIMEOUT.name] = _num(self.drill.start_timeout)
            env[DRILL_AUTO_UNSEAL.name] = _bool(self.drill.auto_unseal)
            if self.drill.unseal_keys_file is not None:
                env[UNSEAL_KEYS_FILE.name] = str(self.drill.unseal_keys_file)
        if self.delete is not None:
            env[DELETE_KEYS.name] = json.dumps(list(self.delete.keys), separators=(",", ":"))
        return env


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _bool(x: bool) -> str:
    return "true" if x else "false"


# -- parsing -----------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()=+-]+$")
_TRIGGER = re.compile(r"^[A-Za-z0-9._:-]{1,63}$")
_SIZE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "Ki": KiB, "KiB": KiB, "Mi": MiB, "MiB": MiB, "Gi": GiB, "GiB": GiB}


class _Reader:
    """Reads variables of :data:`TABLE` from an environment, collecting every problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, var: EnvVar) -> str | None:
        assert var.name in _BY_NAME, var.name
        value = self.environ.get(var.name)
        if value is None or value.strip() == "":
            return None
        if var.secret:
            secrets.register(value)
        return value.strip() if not var.secret else value

    def problem(self, var: EnvVar | None, text: str) -> None:
        self.problems.append(f"{var.name}: {text}" if var is not None else text)

    def text(self, var: EnvVar, *, required: bool = False) -> str | None:
        value = self.raw(var)
        if value is None and var.default is not None and var.default != "":
            value = var.default
        if value is None and required:
            self.problem(var, "is required")
        return value

    def choice(self, var: EnvVar, choices: tuple[str, ...], *, required: bool = True) -> str | None:
        value = self.text(var, required=required)
        if value is not None and value not in choices:
            self.problem(var, f"must be one of {', '.join(choices)} (got {value!r})")
            return None
        return value

    def flag(self, var: EnvVar) -> bool:
        value = self.text(var)
        if value is None:
            return False
        low = value.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        self.problem(var, f"must be true or false (got {value!r})")
        return False

    def number(self, var: EnvVar, *, lo: float, hi: float) -> float:
        value = self.text(var)
        assert var.default is not None
        try:
            number = float(value if value is not None else var.default)
        except ValueError:
            self.problem(var, f"must be a number of seconds (got {value!r})")
            return float(var.default)
        if not (lo <= number <= hi):
            self.problem(var, f"must be between {_num(lo)} and {_num(hi)} (got {value})")
        return number

    def integer(self, var: EnvVar, *, lo: int, hi: int) -> int:
        value = self.text(var)
        assert var.default is not None
        try:
            number = int(value if value is not None else var.default)
        except ValueError:
            self.problem(var, f"must be an integer (got {value!r})")
            return int(var.default)
        if not (lo <= number <= hi):
            self.problem(var, f"must be between {lo} and {hi} (got {number})")
        return number

    def size(self, var: EnvVar) -> int:
        value = self.text(var)
        assert var.default is not None
        m = _SIZE.match(value if value is not None else var.default)
        if not m:
            self.problem(var, f"must be bytes or a number with Ki/Mi/Gi (got {value!r})")
            return parse_size(var.default)
        return int(m.group(1)) * _UNITS[m.group(2)]

    def readable_file(self, var: EnvVar, *, required: bool) -> Path | None:
        value = self.text(var, required=required)
        if value is None:
            return None
        path = Path(value)
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            self.problem(var, f"cannot read {path}: {exc.strerror or exc.__class__.__name__}")
        return path

    def url(self, var: EnvVar, *, required: bool) -> str | None:
        value = self.text(var, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(var, f"must be an http(s):// URL (got {value!r})")
            return None
        if parts.query or parts.fragment or parts.username or parts.password:
            self.problem(var, "must not carry a query, fragment or user info")
            return None
        return value.rstrip("/")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``OBB_`` variables that are not in the table (typos; ignored, but worth a warning)."""
    return sorted(k for k in environ if k.startswith("OBB_") and k not in _BY_NAME)


def parse_size(text: str) -> int:
    """Bytes from ``"16Mi"``-style text (binary units only)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def normalize_prefix(text: str) -> str:
    """The path prefix without surrounding slashes; raise ``ValueError`` if unsafe."""
    stripped = text.strip().strip("/")
    if stripped == "":
        return ""
    for segment in stripped.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise ValueError(
                f"unsafe segment {segment!r}: use [A-Za-z0-9!_.*'()=+-] between single slashes"
            )
    return stripped


def load_config(*, mode: str, environ: Mapping[str, str]) -> Config:
    """Parse and validate the environment for ``mode``; raise ConfigurationError listing all
    problems."""
    r = _Reader(environ)
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

    storage = _storage(r, m, connect_timeout=connect_timeout)
    openbao = _openbao(r, connect_timeout=connect_timeout) if m in _BAO else None
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
            _check_key_shape(r, RESTORE_KEY, key)
        restore = RestoreSettings(
            key=key,
            force=r.flag(RESTORE_FORCE),
            apply_timeout=r.number(RESTORE_APPLY_TIMEOUT, lo=1, hi=3600),
        )
    elif m == "verify":
        key = r.text(VERIFY_KEY, required=True) or ""
        if key:
            _check_key_shape(r, VERIFY_KEY, key)
        verify = VerifySettings(key=key)
    elif m == "drill":
        drill = _drill(r, openbao)
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


def _check_key_shape(r: _Reader, var: EnvVar, key: str) -> bool:
    if len(key) > MAX_KEY_LENGTH:
        r.problem(var, f"key longer than {MAX_KEY_LENGTH} characters")
        return False
    if not key.endswith(".snap"):
        r.problem(var, f"{key!r} is not a snapshot key (must end with .snap)")
        return False
    try:
        normalize_prefix(key)
    except ValueError as exc:
        r.problem(var, f"{key!r}: {exc}")
        return False
    if key.startswith("/") or key.endswith("/"):
        r.problem(var, f"{key!r} must not start or end with /")
        return False
    return True


def _delete_keys(r: _Reader, prefix: str, namespace: str, name: str) -> tuple[str, ...]:
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
        if not _check_key_shape(r, DELETE_KEYS, key):
            continue
        if not key.startswith(own) or "/" in key[len(own) :]:
            r.problem(DELETE_KEYS, f"{key!r} is outside this cluster's prefix {own!r}")
            continue
        if key not in out:
            out.append(key)
    return tuple(out)


def _openbao(
    r: _Reader, *, connect_timeout: float, addr_var: EnvVar = OPENBAO_ADDR
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


def _storage(r: _Reader, mode: Mode, *, connect_timeout: float) -> StorageSettings:
    provider = r.choice(PROVIDER, PROVIDERS)
    bucket = r.text(BUCKET, required=True) or ""
    if bucket and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}$", bucket):
        r.problem(BUCKET, f"is not a valid bucket/container name (got {bucket!r})")
    endpoint = r.url(ENDPOINT, required=False)
    try:
        prefix = normalize_prefix(r.text(PATH_PREFIX) or "")
    except ValueError as exc:
        r.problem(PATH_PREFIX, str(exc))
        prefix = ""
    style = (r.text(USE_PATH_STYLE) or "auto").lower()
    if style not in ("auto", "true", "false"):
        r.problem(USE_PATH_STYLE, f"must be true, false or auto (got {style!r})")
    use_path_style = endpoint is not None if style == "auto" else style == "true"
    cacert = r.readable_file(STORAGE_CACERT, required=False)
    if mode == "backup" and r.raw(PART_SIZE) is not None:
        part_size = r.size(PART_SIZE)
    else:
        part_size = DEFAULT_PART_SIZE.get(provider or "s3", DEFAULT_PART_SIZE["s3"])
    concurrency = r.integer(CONCURRENCY, lo=1, hi=64) if mode == "backup" else 1
    emulator = r.flag(EMULATOR)
    region = r.text(REGION)
    gcs_project = r.text(GCS_PROJECT)
    azure_account = r.text(AZURE_ACCOUNT)
    credentials: Credentials = S3Credentials(kind="default-chain")

    if provider != "s3":
        for var in (REGION, USE_PATH_STYLE):
            if r.raw(var) is not None:
                r.problem(var, f"only applies to provider s3 (provider is {provider})")
    if provider != "gcs":
        if emulator:
            r.problem(EMULATOR, "only applies to provider gcs")
        if gcs_project is not None:
            r.problem(GCS_PROJECT, "only applies to provider gcs")
    if provider != "azure" and azure_account is not None:
        r.problem(AZURE_ACCOUNT, "only applies to provider azure")

    if provider == "s3":
        if not 5 * MiB <= part_size <= 5 * GiB:
            r.problem(PART_SIZE, f"S3 parts must be 5Mi..5Gi (got {part_size} bytes)")
        if (
            region is None
            and endpoint is not None
            and not (r.environ.get("AWS_REGION") or r.environ.get("AWS_DEFAULT_REGION"))
        ):
            region = "us-east-1"
        credentials = _s3_credentials(r)
    elif provider == "gcs":
        if part_size % (256 * KiB) != 0 or part_size == 0:
            r.problem(PART_SIZE, f"GCS chunks must be a multiple of 256Ki (got {part_size} bytes)")
        if emulator:
            if endpoint is None:
                r.problem(EMULATOR, "true requires OBB_ENDPOINT (the emulator's URL)")
            credentials = GcsCredentials(kind="emulator")
        else:
            if endpoint is not None and endpoint.startswith("http://"):
                r.problem(
                    ENDPOINT,
                    "http:// GCS endpoint would send OAuth tokens in clear text; use https, or "
                    "set OBB_EMULATOR=true for an emulator (no credentials are sent then)",
                )
            sa = r.readable_file(GOOGLE_APPLICATION_CREDENTIALS, required=False)
            if sa is not None:
                _check_gcs_credentials_file(r, sa)
                credentials = GcsCredentials(kind="service-account-file", file=sa)
            else:
                credentials = GcsCredentials(kind="adc")
    elif provider == "azure":
        if not 1 <= part_size <= 4000 * MiB:
            r.problem(PART_SIZE, f"Azure blocks must be at most 4000Mi (got {part_size} bytes)")
        credentials = _azure_credentials(r, azure_account, endpoint)

    return StorageSettings(
        provider=provider or "s3",  # type: ignore[arg-type]
        bucket=bucket,
        endpoint=endpoint,
        region=region,
        path_prefix=prefix,
        use_path_style=use_path_style,
        cacert=cacert,
        part_size=part_size,
        concurrency=concurrency,
        connect_timeout=connect_timeout,
        read_timeout=r.number(STORAGE_READ_TIMEOUT, lo=1, hi=24 * 3600),
        retries=r.integer(STORAGE_RETRIES, lo=0, hi=10),
        emulator=emulator,
        gcs_project=gcs_project,
        azure_account=azure_account,
        credentials=credentials,
    )


def _s3_credentials(r: _Reader) -> S3Credentials:
    key_id = r.text(AWS_ACCESS_KEY_ID)
    secret = r.raw(AWS_SECRET_ACCESS_KEY)
    session = r.raw(AWS_SESSION_TOKEN)
    role = r.text(AWS_ROLE_ARN)
    if key_id is not None or secret is not None:
        if key_id is None or secret is None:
            r.problem(
                None,
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together "
                f"(only {'AWS_ACCESS_KEY_ID' if key_id else 'AWS_SECRET_ACCESS_KEY'} is set)",
            )
        return S3Credentials(
            kind="static", access_key_id=key_id, secret_access_key=secret, session_token=session
        )
    if role is not None or r.raw(AWS_WEB_IDENTITY_TOKEN_FILE) is not None:
        if role is None:
            r.problem(AWS_ROLE_ARN, "is required with AWS_WEB_IDENTITY_TOKEN_FILE")
        token_file = r.readable_file(AWS_WEB_IDENTITY_TOKEN_FILE, required=True)
        return S3Credentials(kind="web-identity", role_arn=role, web_identity_token_file=token_file)
    return S3Credentials(kind="default-chain")


def _check_gcs_credentials_file(r: _Reader, path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        r.problem(GOOGLE_APPLICATION_CREDENTIALS, f"{path} is not a readable JSON file")
        return
    if not isinstance(data, dict) or data.get("type") not in (
        "service_account",
        "external_account",
        "authorized_user",
        "impersonated_service_account",
    ):
        r.problem(GOOGLE_APPLICATION_CREDENTIALS, f"{path} has no supported credential 'type'")
        return
    for k in ("private_key", "client_secret", "refresh_token"):
        v = data.get(k)
        if isinstance(v, str):
            secrets.register(v)


def _azure_credentials(r: _Reader, account: str | None, endpoint: str | None) -> AzureCredentials:
    conn = r.raw(AZURE_STORAGE_CONNECTION_STRING)
    key = r.raw(AZURE_STORAGE_KEY)
    if conn is not None:
        parts = dict(p.split("=", 1) for p in conn.strip().strip(";").split(";") if "=" in p)
        for k in ("AccountKey", "SharedAccessSignature"):
            if k in parts:
                secrets.register(parts[k])
        if "AccountName" not in parts and "BlobEndpoint" not in parts:
            r.problem(AZURE_STORAGE_CONNECTION_STRING, "has neither AccountName nor BlobEndpoint")
        if "AccountKey" not in parts and "SharedAccessSignature" not in parts:
            r.problem(
                AZURE_STORAGE_CONNECTION_STRING,
                "carries neither AccountKey nor SharedAccessSignature (anonymous access is "
                "refused)",
            )
        return AzureCredentials(kind="connection-string", connection_string=conn)
    if account is None and endpoint is None:
        r.problem(AZURE_ACCOUNT, "is required (or OBB_ENDPOINT, or a connection string)")
    if key is not None:
        if account is None:
            r.problem(AZURE_ACCOUNT, "is required with AZURE_STORAGE_KEY")
        return AzureCredentials(kind="account-key", account_key=key)
    if r.raw(AZURE_FEDERATED_TOKEN_FILE) is not None:
        r.readable_file(AZURE_FEDERATED_TOKEN_FILE, required=True)
    return AzureCredentials(kind="default-credential")


# -- freshness marker and drill ----------------------------------------------------------------

#: Longest accepted OBB_MARKER_PATH (keeps the report well within its 4 KiB).
MAX_MARKER_PATH = 256
_API_PATH = re.compile(r"^[A-Za-z0-9_.+=@-]+(/[A-Za-z0-9_.+=@-]+)+$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _marker(r: _Reader) -> MarkerSettings | None:
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


def _drill(r: _Reader, openbao: OpenBaoSettings | None) -> DrillSettings:
    key = r.text(DRILL_KEY, required=True) or ""
    if key:
        _check_key_shape(r, DRILL_KEY, key)
    addr = openbao.addr if openbao is not None else ""
    host = urlsplit(addr).hostname if addr else None
    if addr and host not in _LOOPBACK:
        r.problem(
            DRILL_ADDR,
            f"must be a loopback address (the scratch server in the drill's "
            f"own pod), got {addr!r}: a drill never talks to another OpenBao",
        )
    done = r.text(DRILL_DONE_FILE, required=True)
    done_file = Path(done) if done else Path()
    if done and not done_file.parent.is_dir():
        r.problem(DRILL_DONE_FILE, f"the directory {done_file.parent} does not exist")
    keys_file = r.readable_file(UNSEAL_KEYS_FILE, required=False)
    keys: tuple[str, ...] = ()
    if keys_file is not None:
        try:
            keys = parse_unseal_keys(keys_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            pass  # readable_file already listed the problem
        except ValueError as exc:
            r.problem(UNSEAL_KEYS_FILE, f"{keys_file}: {exc}")
    return DrillSettings(
        key=key,
        addr=addr,
        done_file=done_file,
        unseal_keys_file=keys_file,
        unseal_keys=keys,
        start_timeout=r.number(DRILL_START_TIMEOUT, lo=1, hi=3600),
        auto_unseal=r.flag(DRILL_AUTO_UNSEAL),
    )


def parse_unseal_keys(text: str) -> tuple[str, ...]:
    """Unseal keys from a file: one per line, a JSON list, or ``bao operator init -format=json``
    output (``unseal_keys_b64``/``unseal_keys_hex``, or the API's ``keys_base64``/``keys``).
    Each key is registered as a secret; raise ``ValueError`` (never quoting a key) if none or
    one is neither base64 nor hex."""
    import base64
    import binascii

    stripped = text.strip()
    keys: list[str]
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise ValueError("looks like JSON but does not parse") from None
        if isinstance(data, dict):
            for name in ("unseal_keys_b64", "keys_base64", "unseal_keys_hex", "keys"):
                if isinstance(data.get(name), list):
                    data = data[name]
                    break
        if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
            raise ValueError("JSON must be a list of key strings (or bao operator init output)")
        keys = [k.strip() for k in data if k.strip()]
    else:
        keys = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not keys:
        raise ValueError("holds no unseal keys")
    for k in keys:
        secrets.register(k)
    for i, k in enumerate(keys, 1):
        if re.fullmatch(r"[0-9a-fA-F]+", k) and len(k) % 2 == 0:
            continue
        try:
            base64.b64decode(k, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {i} is neither hex nor base64") from None
    return tuple(dict.fromkeys(keys))


#: The drill Job's OpenBao container runs this with ``sh -c`` (POSIX sh; busybox works), env
#: DRILL_DIR (an empty writable directory), DRILL_PORT (API port on 127.0.0.1; the cluster
#: port is DRILL_PORT+1) and DRILL_DONE_FILE (the executor's OBB_DRILL_DONE_FILE). It writes a
#: single-node Raft config, starts ``bao server`` in the background, and polls every 0.5 s
#: until the done file exists (then TERMs the server, KILLs it after 15 s, exits 0) or the
#: server died (exits with the server's status).
#:
#: Optional env DRILL_SEAL_CONFIG: a file holding the live cluster's ``seal "..." {...}``
#: stanza (HCL, mounted from the Secret or ConfigMap the user names). When it is set and
#: readable, the server gets it as a second ``-config`` (``bao server`` merges several);
#: when it is set but not readable, the script exits 1 without starting a server. The file
#: is never printed.
DRILL_SERVER_SCRIPT = r"""set -u
: "${DRILL_DIR:?DRILL_DIR is required}" "${DRILL_PORT:?DRILL_PORT is required}"
: "${DRILL_DONE_FILE:?DRILL_DONE_FILE is required}"
mkdir -p "$DRILL_DIR/raft" || exit 1
cluster_port=$((DRILL_PORT + 1))
cat > "$DRILL_DIR/drill.hcl" <<HCL || exit 1
storage "raft" {
  path = "$DRILL_DIR/raft"
  node_id = "drill"
  performance_multiplier = 1
}
listener "tcp" {
  address = "127.0.0.1:$DRILL_PORT"
  cluster_address = "127.0.0.1:$cluster_port"
  tls_disable = true
}
api_addr = "http://127.0.0.1:$DRILL_PORT"
cluster_addr = "http://127.0.0.1:$cluster_port"
disable_mlock = true
ui = false
HCL
seal_config=${DRILL_SEAL_CONFIG:-}
if [ -n "$seal_config" ]; then
  if [ ! -r "$seal_config" ] || [ ! -f "$seal_config" ]; then
    echo "drill server: DRILL_SEAL_CONFIG $seal_config is not a readable file" >&2
    exit 1
  fi
  echo "drill server: using the seal configuration in $seal_config"
  bao server -config="$DRILL_DIR/drill.hcl" -config="$seal_config" &
else
  bao server -config="$DRILL_DIR/drill.hcl" &
fi
pid=$!
stopped=0
trap 'stopped=1; kill -TERM "$pid" 2>/dev/null' TERM INT
while kill -0 "$pid" 2>/dev/null; do
  if [ -e "$DRILL_DONE_FILE" ]; then
    stopped=1
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do
      sleep 0.5
      i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    break
  fi
  sleep 0.5
done
wait "$pid"
status=$?
if [ "$stopped" = 1 ]; then
  echo "drill server: stopped after $DRILL_DONE_FILE appeared (server status $status)"
  exit 0
fi
echo "drill server: bao server exited with status $status" >&2
exit "$status"
"""
