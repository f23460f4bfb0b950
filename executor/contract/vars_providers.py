"""Rows of the contract table: the standard provider credential variables (AWS, Google, Azure
SDKs) the executor honours.

Guarantees: every module-level :class:`~executor.contract.envvar.EnvVar` here is a row of
:data:`executor.contract.TABLE`, in the order written (:mod:`executor.contract.table` collects
them), all with ``standard=True``; the module defines rows only and imports none from another
section.
"""

from __future__ import annotations

from executor.contract.envvar import Provider, row

_AWS: tuple[Provider, ...] = ("s3",)
_GCS: tuple[Provider, ...] = ("gcs",)
_AZ: tuple[Provider, ...] = ("azure",)
AWS_ACCESS_KEY_ID = row(
    "Provider credentials (standard variables)",
    "AWS_ACCESS_KEY_ID",
    "Static S3 access key (with AWS_SECRET_ACCESS_KEY).",
    providers=_AWS,
    standard=True,
)
AWS_SECRET_ACCESS_KEY = row(
    "Provider credentials (standard variables)",
    "AWS_SECRET_ACCESS_KEY",
    "Static S3 secret key.",
    providers=_AWS,
    standard=True,
    secret=True,
)
AWS_SESSION_TOKEN = row(
    "Provider credentials (standard variables)",
    "AWS_SESSION_TOKEN",
    "Session token for temporary static credentials.",
    providers=_AWS,
    standard=True,
    secret=True,
)
AWS_ROLE_ARN = row(
    "Provider credentials (standard variables)",
    "AWS_ROLE_ARN",
    "IRSA: role to assume with the web identity token (with AWS_WEB_IDENTITY_TOKEN_FILE).",
    providers=_AWS,
    standard=True,
)
AWS_WEB_IDENTITY_TOKEN_FILE = row(
    "Provider credentials (standard variables)",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "IRSA: projected token file. Without static keys or IRSA the default botocore chain "
    "(EKS Pod Identity, instance profile) is used; no credentials at all is an error, never "
    "anonymous access.",
    providers=_AWS,
    standard=True,
)
GOOGLE_APPLICATION_CREDENTIALS = row(
    "Provider credentials (standard variables)",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCS: service account or external_account (workload identity federation) JSON file; "
    "unset = Application Default Credentials (GKE metadata server).",
    providers=_GCS,
    standard=True,
)
AZURE_STORAGE_CONNECTION_STRING = row(
    "Provider credentials (standard variables)",
    "AZURE_STORAGE_CONNECTION_STRING",
    "Azure connection string (first choice when set).",
    providers=_AZ,
    standard=True,
    secret=True,
)
AZURE_STORAGE_KEY = row(
    "Provider credentials (standard variables)",
    "AZURE_STORAGE_KEY",
    "Azure storage account key (with OBB_AZURE_ACCOUNT).",
    providers=_AZ,
    standard=True,
    secret=True,
)
AZURE_CLIENT_ID = row(
    "Provider credentials (standard variables)",
    "AZURE_CLIENT_ID",
    "Workload identity / managed identity client id (DefaultAzureCredential, used when no "
    "key or connection string is set).",
    providers=_AZ,
    standard=True,
)
AZURE_TENANT_ID = row(
    "Provider credentials (standard variables)",
    "AZURE_TENANT_ID",
    "Workload identity tenant.",
    providers=_AZ,
    standard=True,
)
AZURE_FEDERATED_TOKEN_FILE = row(
    "Provider credentials (standard variables)",
    "AZURE_FEDERATED_TOKEN_FILE",
    "Workload identity projected token file.",
    providers=_AZ,
    standard=True,
)
