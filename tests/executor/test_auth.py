"""OpenBao authentication: jwt (own signing key), kubernetes (real local apiserver
TokenReview), token revocation, permission errors, and no secret in any output."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao
from devenv.storage import AZURITE_ACCOUNT, StorageServer
from kubernetes_asyncio import client as k8s

from tests.executor.harness import cluster_env, run_executor, storage_env, token_env

pytestmark = pytest.mark.integration

AUDIENCE = "openbao-backup"
SNAPSHOT_READ = 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }'


def accessors(bao: OpenBao) -> set[str]:
    status, body = bao.request("LIST", "auth/token/accessors")
    assert status == 200, body
    return set(json.loads(body)["data"]["keys"])


def policy(bao: OpenBao, text: str) -> str:
    name = f"obb-{uuid.uuid4().hex[:8]}"
    bao.api("PUT", f"sys/policies/acl/{name}", {"policy": text})
    return name


def jwt_mount(bao: OpenBao) -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    mount = f"jwt-{uuid.uuid4().hex[:8]}"
    bao.api("POST", f"sys/auth/{mount}", {"type": "jwt"})
    bao.api(
        "POST",
        f"auth/{mount}/config",
        {"jwt_validation_pubkeys": [pub], "bound_issuer": "https://issuer.test"},
    )
    return mount, key


def sign(key: Any, *, audience: str = AUDIENCE, subject: str = "system:serviceaccount:a:b") -> str:
    now = int(time.time())
    claims = {
        "iss": "https://issuer.test",
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    }
    token: str = pyjwt.encode(claims, key, algorithm="RS256")
    return token


def jwt_env(bao: OpenBao, mount: str, role: str, token: str, tmp: Path) -> dict[str, str]:
    path = tmp / f"sa-token-{uuid.uuid4().hex[:6]}"
    path.write_text(token)
    return {
        "OBB_OPENBAO_ADDR": bao.addr,
        "OBB_AUTH_METHOD": "jwt",
        "OBB_AUTH_MOUNT": mount,
        "OBB_AUTH_ROLE": role,
        "OBB_AUTH_TOKEN_FILE": str(path),
    }


async def test_jwt_login_backup_and_revoke(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    mount, key = jwt_mount(openbao)
    pol = policy(openbao, SNAPSHOT_READ)
    openbao.api(
        "POST",
        f"auth/{mount}/role/backup",
        {
            "role_type": "jwt",
            "bound_audiences": [AUDIENCE],
            "user_claim": "sub",
            "bound_subject": "system:serviceaccount:a:b",
            "token_policies": [pol],
            "token_ttl": "15m",
        },
    )
    token = sign(key)
    before = accessors(openbao)
    env = {
        **cluster_env(),
        **jwt_env(openbao, mount, "backup", token, tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
        "OBB_LOG_LEVEL": "debug",
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr
    assert "token revoked" in run.stderr
    assert accessors(openbao) == before, "the login token must be revoked"
    assert token not in run.stderr + run.stdout

    wrong_audience = sign(key, audience="someone-else")
    env.update(jwt_env(openbao, mount, "backup", wrong_audience, tmp_path))
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 11, run.stderr
    assert run.report.error is not None
    assert "login to auth/" in run.report.error.message
    assert wrong_audience not in run.stderr + run.stdout


async def test_policy_without_snapshot_read_is_an_auth_error(
    openbao: OpenBao, s3_server: StorageServer, s3_bucket: str, tmp_path: Path
) -> None:
    mount, key = jwt_mount(openbao)
    pol = policy(openbao, 'path "secret/*" { capabilities = ["read"] }')
    openbao.api(
        "POST",
        f"auth/{mount}/role/weak",
        {
            "role_type": "jwt",
            "bound_audiences": [AUDIENCE],
            "user_claim": "sub",
            "token_policies": [pol],
        },
    )
    before = accessors(openbao)
    env = {
        **cluster_env(),
        **jwt_env(openbao, mount, "weak", sign(key), tmp_path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 11, run.stderr
    assert run.report.error is not None
    assert "needs read on it" in run.report.error.message
    assert accessors(openbao) == before, "revoked on failure too"


async def test_kubernetes_auth_with_a_real_apiserver(
    openbao: OpenBao,
    control_plane: ControlPlane,
    kube_client: k8s.ApiClient,
    namespace: str,
    s3_server: StorageServer,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    core = k8s.CoreV1Api(kube_client)
    rbac = k8s.RbacAuthorizationV1Api(kube_client)
    sa, reviewer = "obb-backup", "openbao-reviewer"
    for name in (sa, reviewer):
        await core.create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
        )
    # OpenBao's own identity reviews presented tokens: it needs system:auth-delegator.
    binding = f"{namespace}-openbao-reviewer"
    await rbac.create_cluster_role_binding(
        k8s.V1ClusterRoleBinding(
            metadata=k8s.V1ObjectMeta(name=binding),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name="system:auth-delegator",
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=reviewer, namespace=namespace)],
        )
    )
    reviewer_token = (
        await core.create_namespaced_service_account_token(
            reviewer,
            namespace,
            k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            ),
        )
    ).status.token
    # The executor's projected token has a dedicated audience (not the apiserver's).
    request = await core.create_namespaced_service_account_token(
        sa,
        namespace,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=600)
        ),
    )
    token = request.status.token

    assert control_plane.pki is not None
    mount = f"k8s-{uuid.uuid4().hex[:8]}"
    openbao.api("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
    openbao.api(
        "POST",
        f"auth/{mount}/config",
        {
            "kubernetes_host": control_plane.server,
            "kubernetes_ca_cert": control_plane.pki.ca_cert.read_text(),
            "token_reviewer_jwt": reviewer_token,
            "disable_local_ca_jwt": True,
        },
    )
    pol = policy(openbao, SNAPSHOT_READ)
    openbao.api(
        "POST",
        f"auth/{mount}/role/backup",
        {
            "bound_service_account_names": [sa],
            "bound_service_account_namespaces": [namespace],
            "audience": AUDIENCE,
            "token_policies": [pol],
            "token_ttl": "15m",
        },
    )
    before = accessors(openbao)
    path = tmp_path / "projected-token"
    path.write_text(token)
    env = {
        **cluster_env(),
        "OBB_OPENBAO_ADDR": openbao.addr,
        "OBB_AUTH_METHOD": "kubernetes",
        "OBB_AUTH_MOUNT": mount,
        "OBB_AUTH_ROLE": "backup",
        "OBB_AUTH_TOKEN_FILE": str(path),
        **storage_env("s3", endpoint=s3_server.endpoint, bucket=s3_bucket),
    }
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 0, run.stderr
    assert accessors(openbao) == before
    assert token not in run.stderr + run.stdout
    await rbac.delete_cluster_role_binding(binding)


async def test_no_secret_in_any_output(
    openbao: OpenBao, azurite_server: StorageServer, azure_container: str, tmp_path: Path
) -> None:
    """Debug logs and a failure whose error text comes from the storage SDK."""
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    env = {
        **cluster_env(),
        **token_env(openbao.addr, openbao.root_token, tmp_path),
        **storage_env("azure", endpoint=azurite_server.endpoint, bucket=azure_container),
        "OBB_LOG_LEVEL": "debug",
    }
    del env["AZURE_STORAGE_KEY"], env["OBB_AZURE_ACCOUNT"]
    env["AZURE_STORAGE_CONNECTION_STRING"] = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={wrong_key};"
        f"BlobEndpoint={azurite_server.endpoint};"
    )
    run = await run_executor("backup", env, tmp=tmp_path)
    assert run.code == 14, run.stderr
    everything = run.stderr + run.stdout + run.raw_report
    for secret in (openbao.root_token, wrong_key, env["AZURE_STORAGE_CONNECTION_STRING"]):
        assert secret not in everything
