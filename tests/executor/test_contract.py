"""The Job environment contract: parsing, precise errors, the inverse, and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor import contract, docs, secrets
from executor.contract import load_config
from executor.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    token = tmp_path / "token"
    token.write_text("s.static-token-value\n")
    jwt = tmp_path / "jwt"
    jwt.write_text("eyJhbGciOi.projected.token")
    gcp = tmp_path / "sa.json"
    gcp.write_text(
        json.dumps(
            {"type": "service_account", "private_key": "PRIVATE-KEY-PEM", "client_email": "x@y"}
        )
    )
    return {"token": token, "jwt": jwt, "gcp": gcp}


def base(files: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {
        "OBB_CLUSTER_NAMESPACE": "team-a",
        "OBB_CLUSTER_NAME": "bao",
        "OBB_CLUSTER_UID": "0b5e-uid",
        "OBB_OPENBAO_ADDR": "https://bao.team-a.svc:8200",
        "OBB_AUTH_METHOD": "token",
        "OBB_OPENBAO_TOKEN_FILE": str(files["token"]),
        "OBB_PROVIDER": "s3",
        "OBB_BUCKET": "backups",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "very-secret-access-key",
    }
    env.update(extra)
    return env


def problems(mode: str, env: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_config(mode=mode, environ=env)
    return info.value.message


def test_minimal_backup(files: dict[str, Path]) -> None:
    cfg = load_config(mode="backup", environ=base(files))
    assert cfg.mode == "backup"
    assert cfg.openbao is not None
    assert cfg.openbao.auth.method == "token"
    assert cfg.openbao.auth.mount == "token"
    assert cfg.storage.part_size == 16 << 20
    assert cfg.storage.concurrency == 4
    assert cfg.storage.use_path_style is False
    assert cfg.storage.credentials.kind == "static"
    assert cfg.backup is not None
    assert cfg.backup.trigger == "manual"
    assert cfg.termination_message_path == Path("/dev/termination-log")


def test_secrets_are_not_in_repr_and_are_registered(files: dict[str, Path]) -> None:
    cfg = load_config(mode="backup", environ=base(files))
    assert "very-secret-access-key" not in repr(cfg)
    assert "very-secret-access-key" not in secrets.scrub("key=very-secret-access-key")


@pytest.mark.parametrize(
    ("provider", "extra", "part_size"),
    [
        ("s3", {}, 16 << 20),
        ("gcs", {"OBB_ENDPOINT": "http://127.0.0.1:4443", "OBB_EMULATOR": "true"}, 32 << 20),
        ("azure", {"OBB_AZURE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k=="}, 16 << 20),
    ],
)
def test_default_part_size_per_provider(
    files: dict[str, Path], provider: str, extra: dict[str, str], part_size: int
) -> None:
    env = base(files, OBB_PROVIDER=provider, **extra)
    env.pop("OBB_PART_SIZE", None)
    cfg = load_config(mode="backup", environ=env)
    assert cfg.storage.part_size == part_size
    assert cfg.storage.concurrency == 4


@pytest.mark.parametrize(
    ("provider", "extra"),
    [
        (
            "s3",
            {
                "OBB_ENDPOINT": "http://minio:9000",
                "OBB_REGION": "eu-west-3",
                "OBB_USE_PATH_STYLE": "true",
                "OBB_PART_SIZE": "64Mi",
                "OBB_CONCURRENCY": "8",
                "OBB_PATH_PREFIX": "/clusters/prod/",
            },
        ),
        (
            "gcs",
            {
                "OBB_ENDPOINT": "http://127.0.0.1:4443",
                "OBB_EMULATOR": "true",
                "OBB_PART_SIZE": "8Mi",
            },
        ),
        (
            "azure",
            {
                "OBB_AZURE_ACCOUNT": "acct",
                "AZURE_STORAGE_KEY": "azure-key-value==",
                "OBB_PART_SIZE": "100MiB",
            },
        ),
    ],
)
@pytest.mark.parametrize("mode", ["backup", "restore", "delete"])
def test_to_env_is_the_inverse(
    files: dict[str, Path], provider: str, extra: dict[str, str], mode: str
) -> None:
    env = base(files, OBB_PROVIDER=provider, **extra)
    if provider != "s3":
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    if mode == "restore":
        env["OBB_RESTORE_KEY"] = "old/ns/c/20250101T000000Z-deadbeef.snap"
        env["OBB_RESTORE_FORCE"] = "true"
    if mode == "delete":
        prefix = env.get("OBB_PATH_PREFIX", "").strip("/")
        own = "/".join(p for p in (prefix, "team-a", "bao") if p)
        env["OBB_DELETE_KEYS"] = json.dumps([f"{own}/20250101T000000Z-deadbeef.snap"])
    cfg = load_config(mode=mode, environ=env)
    ours = cfg.to_env()
    assert all(k.startswith("OBB_") for k in ours)
    assert not any("secret" in v or "azure-key" in v for v in ours.values())
    standard = {k: v for k, v in env.items() if not k.startswith("OBB_")}
    assert load_config(mode=mode, environ={**ours, **standard}) == cfg


def test_every_problem_is_listed_with_its_variable() -> None:
    message = problems("backup", {"OBB_PROVIDER": "ftp", "OBB_PART_SIZE": "lots"})
    for name in (
        "OBB_CLUSTER_NAMESPACE",
        "OBB_CLUSTER_NAME",
        "OBB_CLUSTER_UID",
        "OBB_BUCKET",
        "OBB_OPENBAO_ADDR",
        "OBB_AUTH_METHOD",
        "OBB_PROVIDER",
        "OBB_PART_SIZE",
    ):
        assert name in message
    assert "must be one of s3, gcs, azure (got 'ftp')" in message


def test_unknown_mode() -> None:
    with pytest.raises(ConfigurationError, match="unknown mode"):
        load_config(mode="snapshot", environ={})


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"OBB_OPENBAO_ADDR": "bao:8200"}, "OBB_OPENBAO_ADDR: must be an http(s):// URL"),
        ({"OBB_OPENBAO_ADDR": "https://u:p@bao"}, "user info"),
        ({"OBB_OPENBAO_TOKEN_FILE": "/nonexistent/token"}, "OBB_OPENBAO_TOKEN_FILE: cannot read"),
        ({"OBB_AUTH_METHOD": "jwt"}, "OBB_AUTH_ROLE: is required"),
        (
            {
                "OBB_AUTH_METHOD": "kubernetes",
                "OBB_AUTH_ROLE": "r",
                "OBB_AUTH_TOKEN_FILE": "/nonexistent/jwt",
            },
            "OBB_AUTH_TOKEN_FILE: cannot read",
        ),
        ({"OBB_AUTH_METHOD": "approle"}, "OBB_AUTH_METHOD: must be one of"),
        ({"OBB_PART_SIZE": "1Mi"}, "S3 parts must be 5Mi..5Gi"),
        ({"OBB_CONCURRENCY": "0"}, "OBB_CONCURRENCY: must be between 1 and 64"),
        ({"OBB_PATH_PREFIX": "a/../b"}, "OBB_PATH_PREFIX: unsafe segment"),
        ({"OBB_PATH_PREFIX": "a//b"}, "OBB_PATH_PREFIX: unsafe segment"),
        ({"OBB_CLUSTER_NAMESPACE": "Team_A"}, "must be a DNS label"),
        ({"OBB_USE_PATH_STYLE": "maybe"}, "OBB_USE_PATH_STYLE"),
        ({"OBB_EMULATOR": "true"}, "OBB_EMULATOR: only applies to provider gcs"),
        ({"OBB_TRIGGER": "a b"}, "OBB_TRIGGER"),
        ({"OBB_TIMEOUT": "-1"}, "OBB_TIMEOUT"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "must be set together"),
        ({"OBB_STORAGE_CACERT": "/nonexistent/ca.pem"}, "OBB_STORAGE_CACERT: cannot read"),
    ],
)
def test_precise_errors(files: dict[str, Path], extra: dict[str, str], fragment: str) -> None:
    assert fragment in problems("backup", base(files, **extra))


def test_gcs_http_endpoint_needs_explicit_emulator(files: dict[str, Path]) -> None:
    env = base(files, OBB_PROVIDER="gcs", OBB_ENDPOINT="http://127.0.0.1:4443")
    assert "clear text" in problems("backup", env)
    ok = load_config(mode="backup", environ={**env, "OBB_EMULATOR": "true"})
    assert ok.storage.credentials.kind == "emulator"
    assert "requires OBB_ENDPOINT" in problems(
        "backup", base(files, OBB_PROVIDER="gcs", OBB_EMULATOR="true")
    )


def test_gcs_credentials_file(files: dict[str, Path], tmp_path: Path) -> None:
    env = base(files, OBB_PROVIDER="gcs", GOOGLE_APPLICATION_CREDENTIALS=str(files["gcp"]))
    cfg = load_config(mode="backup", environ=env)
    assert cfg.storage.credentials.kind == "service-account-file"
    assert "PRIVATE-KEY-PEM" not in secrets.scrub("PRIVATE-KEY-PEM")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(bad)
    assert "no supported credential 'type'" in problems("backup", env)
    adc = base(files, OBB_PROVIDER="gcs")
    assert load_config(mode="backup", environ=adc).storage.credentials.kind == "adc"


def test_gcs_chunk_must_be_256k_multiple(files: dict[str, Path]) -> None:
    env = base(files, OBB_PROVIDER="gcs", OBB_PART_SIZE="1000000")
    assert "multiple of 256Ki" in problems("backup", env)


def test_azure_credentials(files: dict[str, Path]) -> None:
    env = base(files, OBB_PROVIDER="azure")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    assert "OBB_AZURE_ACCOUNT: is required" in problems("backup", env)
    anon = {**env, "AZURE_STORAGE_CONNECTION_STRING": "BlobEndpoint=https://x/;"}
    assert "anonymous access is refused" in problems("backup", anon)
    conn = {
        **env,
        "AZURE_STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5;"
        ),
    }
    cfg = load_config(mode="backup", environ=conn)
    assert cfg.storage.credentials.kind == "connection-string"
    assert "c2VjcmV0a2V5" not in secrets.scrub("AccountKey is c2VjcmV0a2V5")
    wid = {**env, "OBB_AZURE_ACCOUNT": "acct", "AZURE_CLIENT_ID": "id"}
    assert load_config(mode="backup", environ=wid).storage.credentials.kind == (
        "default-credential"
    )


def test_s3_web_identity(files: dict[str, Path]) -> None:
    env = base(files)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    irsa = {
        **env,
        "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(files["jwt"]),
    }
    cfg = load_config(mode="backup", environ=irsa)
    assert cfg.storage.credentials.kind == "web-identity"
    assert "AWS_ROLE_ARN: is required" in problems(
        "backup", {**env, "AWS_WEB_IDENTITY_TOKEN_FILE": str(files["jwt"])}
    )
    assert load_config(mode="backup", environ=env).storage.credentials.kind == ("default-chain")


def test_delete_keys_must_stay_in_the_cluster_prefix(files: dict[str, Path]) -> None:
    env = base(files, OBB_PATH_PREFIX="p")
    good = "p/team-a/bao/20250101T000000Z-deadbeef.snap"
    cfg = load_config(mode="delete", environ={**env, "OBB_DELETE_KEYS": json.dumps([good, good])})
    assert cfg.delete is not None
    assert cfg.delete.keys == (good,)
    for bad in (
        "p/team-a/other/20250101T000000Z-deadbeef.snap",
        "p/team-a/bao/sub/20250101T000000Z-deadbeef.snap",
        "p/team-a/bao/../x/y.snap",
        "p/team-a/bao/20250101T000000Z-deadbeef.snap.manifest.json",
        "team-a/bao/20250101T000000Z-deadbeef.snap",
    ):
        message = problems("delete", {**env, "OBB_DELETE_KEYS": json.dumps([good, bad])})
        assert "OBB_DELETE_KEYS" in message
    assert "not valid JSON" in problems("delete", {**env, "OBB_DELETE_KEYS": "[a"})
    assert "non-empty JSON list" in problems("delete", {**env, "OBB_DELETE_KEYS": "[]"})
    many = json.dumps([good] * 100)
    assert "delete in batches" in problems("delete", {**env, "OBB_DELETE_KEYS": many})


def test_delete_needs_no_openbao(files: dict[str, Path]) -> None:
    env = base(files, OBB_DELETE_KEYS=json.dumps(["team-a/bao/20250101T000000Z-deadbeef.snap"]))
    for k in ("OBB_OPENBAO_ADDR", "OBB_AUTH_METHOD", "OBB_OPENBAO_TOKEN_FILE", "OBB_CLUSTER_UID"):
        del env[k]
    cfg = load_config(mode="delete", environ=env)
    assert cfg.openbao is None


def test_restore_key_shape(files: dict[str, Path]) -> None:
    assert "not a snapshot key" in problems("restore", base(files, OBB_RESTORE_KEY="a/b/c.tar.gz"))
    assert "OBB_RESTORE_KEY: is required" in problems("restore", base(files))


def test_table_is_consistent() -> None:
    names = [v.name for v in contract.TABLE]
    assert len(names) == len(set(names))
    for var in contract.TABLE:
        assert var.name.startswith("OBB_") != var.standard, var.name
        assert set(var.modes) <= set(contract.MODES)
        assert set(var.providers) <= set(contract.PROVIDERS)


def test_docs_are_generated_from_the_table() -> None:
    committed = (ROOT / "docs" / "executor.md").read_text()
    assert committed == docs.render(), (
        "docs/executor.md is stale: run `python -m executor.docs > docs/executor.md`"
    )
    for var in contract.TABLE:
        assert f"`{var.name}`" in committed
