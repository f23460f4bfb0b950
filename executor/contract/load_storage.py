"""Loading the storage settings and the provider credentials from an environment.

Guarantees:

* :func:`load_storage` reports every problem through the
  :class:`~executor.contract.reader.Reader` and always returns settings; an ``OBB_`` variable
  that applies to another provider is a problem, never silently ignored; the part size is
  checked against the provider's limits;
* anonymous access is never configured implicitly: S3 static keys must come in pairs, a GCS
  ``http://`` endpoint is refused unless ``OBB_EMULATOR=true`` (the only mode without
  credentials, and explicit), an Azure connection string must carry a key or a SAS;
* the secrets inside a GCS credentials file or an Azure connection string are registered with
  :mod:`executor.secrets` as soon as they are read, and are never quoted in a problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from executor import secrets
from executor.contract.config import (
    AzureCredentials,
    Credentials,
    GcsCredentials,
    S3Credentials,
    StorageSettings,
)
from executor.contract.envvar import DEFAULT_PART_SIZE, PROVIDERS, GiB, KiB, MiB, Mode
from executor.contract.reader import Reader, normalize_prefix
from executor.contract.vars_providers import (
    AWS_ACCESS_KEY_ID,
    AWS_ROLE_ARN,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_WEB_IDENTITY_TOKEN_FILE,
    AZURE_FEDERATED_TOKEN_FILE,
    AZURE_STORAGE_CONNECTION_STRING,
    AZURE_STORAGE_KEY,
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


def load_storage(r: Reader, mode: Mode, *, connect_timeout: float) -> StorageSettings:
    """The storage section for ``mode``, with the provider's credentials."""
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


def _s3_credentials(r: Reader) -> S3Credentials:
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


def _check_gcs_credentials_file(r: Reader, path: Path) -> None:
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


def _azure_credentials(r: Reader, account: str | None, endpoint: str | None) -> AzureCredentials:
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
