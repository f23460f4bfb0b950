"""Rows of the contract table: the Storage section (bucket, endpoint, parts, timeouts).

Guarantees: every module-level :class:`~executor.contract.envvar.EnvVar` here is a row of
:data:`executor.contract.TABLE`, in the order written (:mod:`executor.contract.table` collects
them); the module defines rows only and imports none from another section.
"""

from __future__ import annotations

from executor.contract.envvar import row

PROVIDER = row("Storage", "OBB_PROVIDER", "s3, gcs or azure.", required="yes")
BUCKET = row("Storage", "OBB_BUCKET", "Bucket (Azure: container). Never created.", required="yes")
ENDPOINT = row(
    "Storage",
    "OBB_ENDPOINT",
    "Custom endpoint URL (S3-compatible store, GCS emulator or private endpoint, Azure blob "
    "endpoint incl. account path for Azurite).",
)
REGION = row(
    "Storage",
    "OBB_REGION",
    "S3 region (else AWS_REGION/AWS_DEFAULT_REGION; us-east-1 with a custom endpoint).",
    providers=("s3",),
)
PATH_PREFIX = row(
    "Storage",
    "OBB_PATH_PREFIX",
    "Key prefix; keys are <prefix>/<namespace>/<cluster>/<UTC timestamp>-<8 hex>.snap.",
    default="",
)
USE_PATH_STYLE = row(
    "Storage",
    "OBB_USE_PATH_STYLE",
    "true/false: S3 path-style addressing. Default: true with OBB_ENDPOINT, else false.",
    default="auto",
    providers=("s3",),
)
STORAGE_CACERT = row(
    "Storage",
    "OBB_STORAGE_CACERT",
    "PEM CA bundle for the storage endpoint (system trust store if unset). TLS is always verified.",
)
PART_SIZE = row(
    "Storage",
    "OBB_PART_SIZE",
    "Upload part/chunk/block size, bytes or with Ki/Mi/Gi. S3: 5Mi-5Gi (max snapshot = "
    "10,000 parts); GCS: multiple of 256Ki; Azure: at most 4000Mi (50,000 blocks). Default: "
    "16Mi, and 32Mi for GCS (64 MiB of part buffers for every provider at the default "
    "concurrency).",
    default="16Mi",
    modes=("backup",),
)
CONCURRENCY = row(
    "Storage",
    "OBB_CONCURRENCY",
    "Parts/blocks in memory at once, each being filled or uploaded (1-64): memory ~ "
    "concurrency x part size. GCS resumable uploads are sequential (one chunk in flight, the "
    "next one buffered: 2 x part size).",
    default="4",
    modes=("backup",),
)
STORAGE_READ_TIMEOUT = row(
    "Storage",
    "OBB_STORAGE_READ_TIMEOUT",
    "Read timeout (seconds) of one storage request.",
    default="300",
)
STORAGE_RETRIES = row(
    "Storage",
    "OBB_STORAGE_RETRIES",
    "Retries of a failed storage request (5xx, 429, connection errors), 0-10.",
    default="3",
)
EMULATOR = row(
    "Storage",
    "OBB_EMULATOR",
    "true: OBB_ENDPOINT is a GCS emulator; requests carry NO credentials. Explicit opt-in "
    "only: an http:// GCS endpoint without it is refused.",
    default="false",
    providers=("gcs",),
)
GCS_PROJECT = row(
    "Storage",
    "OBB_GCS_PROJECT",
    "Project billed for requester-pays buckets (userProject).",
    providers=("gcs",),
)
AZURE_ACCOUNT = row(
    "Storage",
    "OBB_AZURE_ACCOUNT",
    "Storage account name; the endpoint defaults to https://<account>.blob.core.windows.net.",
    providers=("azure",),
    required="unless a connection string is given",
)
