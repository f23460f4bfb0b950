"""The Job environment contract between the controller's Job builder and the executor.

Guarantees:

* :data:`TABLE` is the single definition of every environment variable the executor reads:
  ours (prefix ``OBB_``) and the standard provider variables it honours. Each row says what
  it means, its default, and which modes and providers read it. ``docs/executor.md`` is
  rendered from this table (:mod:`executor.docs`) and a test keeps the two equal;
* :func:`load_config` turns an environment into a typed, frozen :class:`Config` or raises one
  :class:`~executor.errors.ConfigurationError` listing *every* problem found, each naming the
  variable; it never reads a variable that is not in :data:`TABLE` (except ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION``, only to know whether S3 needs a default region);
* :meth:`Config.to_env` is the inverse for our ``OBB_`` variables (the Job builder uses it);
  secrets are never in its output: they reach the pod through the standard provider
  variables (``valueFrom.secretKeyRef``) or files;
* secret values read here are registered with :mod:`executor.secrets` at once and are kept
  out of ``repr``.

The controller may import this package (it re-exports the object layout of
:mod:`executor.layout`) and :mod:`executor.report`; both import nothing from the controller and
nothing but the standard library and :mod:`executor.layout`, :mod:`executor.secrets` and
:mod:`executor.errors`. The drill Job's OpenBao container runs :data:`DRILL_SERVER_SCRIPT`
(defined here so the controller can take it from this package; it is re-exported by
:mod:`executor.drill`). Everything public is importable from ``executor.contract``; the
modules:

* :mod:`~executor.contract.envvar`: the row type, the modes/providers/auth methods, the limits;
* :mod:`~executor.contract.vars_general`, :mod:`~executor.contract.vars_openbao`,
  :mod:`~executor.contract.vars_storage`, :mod:`~executor.contract.vars_modes`,
  :mod:`~executor.contract.vars_providers`: the rows, by section;
* :mod:`~executor.contract.table`: :data:`TABLE`, in section order;
* :mod:`~executor.contract.config`: the typed configuration and :meth:`Config.to_env`;
* :mod:`~executor.contract.reader`: reading and checking single variables;
* :mod:`~executor.contract.load`, :mod:`~executor.contract.load_storage`,
  :mod:`~executor.contract.load_drill`: :func:`load_config` and its sections;
* :mod:`~executor.contract.drill_script`: :data:`DRILL_SERVER_SCRIPT`.
"""

from __future__ import annotations

from executor.contract.config import (
    AzureCredentials,
    BackupSettings,
    ClusterRef,
    Config,
    Credentials,
    DeleteSettings,
    DrillSettings,
    GcsCredentials,
    MarkerSettings,
    OpenBaoAuth,
    OpenBaoSettings,
    RestoreSettings,
    S3Credentials,
    StorageSettings,
    VerifySettings,
    env_number,
)
from executor.contract.drill_script import (
    DRILL_SERVER_SCRIPT,
)
from executor.contract.envvar import (
    AUTH_METHODS,
    DEFAULT_PART_SIZE,
    MAX_DELETE_KEYS_JSON,
    MAX_KEY_LENGTH,
    MODES,
    PROVIDERS,
    AuthMethod,
    EnvVar,
    GiB,
    KiB,
    MiB,
    Mode,
    Provider,
)
from executor.contract.load import (
    MAX_MARKER_PATH,
    load_config,
)
from executor.contract.load_drill import (
    parse_unseal_keys,
)
from executor.contract.reader import (
    normalize_prefix,
    parse_size,
)
from executor.contract.table import (
    TABLE,
    unknown_variables,
)
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
from executor.contract.vars_providers import (
    AWS_ACCESS_KEY_ID,
    AWS_ROLE_ARN,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_WEB_IDENTITY_TOKEN_FILE,
    AZURE_CLIENT_ID,
    AZURE_FEDERATED_TOKEN_FILE,
    AZURE_STORAGE_CONNECTION_STRING,
    AZURE_STORAGE_KEY,
    AZURE_TENANT_ID,
    GOOGLE_APPLICATION_CREDENTIALS,
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
from executor.layout import (
    MANIFEST_SUFFIX,
    SNAPSHOT_SUFFIX,
    Manifest,
    cluster_prefix,
    manifest_key,
    snapshot_key,
    snapshot_time,
)

__all__ = [
    "AUTH_METHOD",
    "AUTH_METHODS",
    "AUTH_MOUNT",
    "AUTH_ROLE",
    "AUTH_TOKEN_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_ROLE_ARN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_ACCOUNT",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_TENANT_ID",
    "BACKUP_NAME",
    "BUCKET",
    "CLUSTER_NAME",
    "CLUSTER_NAMESPACE",
    "CLUSTER_UID",
    "CONCURRENCY",
    "CONNECT_TIMEOUT",
    "DEFAULT_PART_SIZE",
    "DELETE_KEYS",
    "DRILL_ADDR",
    "DRILL_AUTO_UNSEAL",
    "DRILL_DONE_FILE",
    "DRILL_KEY",
    "DRILL_SERVER_SCRIPT",
    "DRILL_START_TIMEOUT",
    "EMULATOR",
    "ENDPOINT",
    "GCS_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "LOG_LEVEL",
    "MANIFEST_SUFFIX",
    "MARKER_KV_VERSION",
    "MARKER_PATH",
    "MAX_DELETE_KEYS_JSON",
    "MAX_KEY_LENGTH",
    "MAX_MARKER_PATH",
    "MODES",
    "OPENBAO_ADDR",
    "OPENBAO_CACERT",
    "OPENBAO_READ_TIMEOUT",
    "OPENBAO_TOKEN_FILE",
    "PART_SIZE",
    "PATH_PREFIX",
    "PROVIDER",
    "PROVIDERS",
    "REGION",
    "RESTORE_APPLY_TIMEOUT",
    "RESTORE_FORCE",
    "RESTORE_KEY",
    "SNAPSHOT_SUFFIX",
    "STORAGE_CACERT",
    "STORAGE_READ_TIMEOUT",
    "STORAGE_RETRIES",
    "TABLE",
    "TERMINATION_MESSAGE_PATH",
    "TIMEOUT",
    "TRIGGER",
    "UNSEAL_KEYS_FILE",
    "USE_PATH_STYLE",
    "VERIFY_KEY",
    "AuthMethod",
    "AzureCredentials",
    "BackupSettings",
    "ClusterRef",
    "Config",
    "Credentials",
    "DeleteSettings",
    "DrillSettings",
    "EnvVar",
    "GcsCredentials",
    "GiB",
    "KiB",
    "Manifest",
    "MarkerSettings",
    "MiB",
    "Mode",
    "OpenBaoAuth",
    "OpenBaoSettings",
    "Provider",
    "RestoreSettings",
    "S3Credentials",
    "StorageSettings",
    "VerifySettings",
    "cluster_prefix",
    "env_number",
    "load_config",
    "manifest_key",
    "normalize_prefix",
    "parse_size",
    "parse_unseal_keys",
    "snapshot_key",
    "snapshot_time",
    "unknown_variables",
]
