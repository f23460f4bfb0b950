"""The local control plane is a real, secured Kubernetes API: RBAC on, TokenRequest working,
the controller manager's controllers running."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request

import pytest
from devenv.controlplane import ControlPlane
from kubernetes_asyncio import client as k8s

pytestmark = pytest.mark.integration


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload))
    return claims


async def test_version_and_readyz(control_plane: ControlPlane) -> None:
    version = control_plane.get("/version")
    assert version["major"] == "1"
    assert str(version["gitVersion"]).startswith("v1.36.")
    control_plane.check_alive()


async def test_token_request_and_rbac(
    control_plane: ControlPlane, kube_client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_client)
    await core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="probe"))
    )
    tr = await core.create_namespaced_service_account_token(
        "probe",
        namespace,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=["openbao"], expiration_seconds=600)
        ),
    )
    token = tr.status.token
    claims = _jwt_claims(token)
    assert claims["aud"] == ["openbao"]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:probe"

    # RBAC is on: an authenticated service account without bindings is forbidden.
    assert control_plane.pki is not None
    ctx = ssl.create_default_context(cafile=str(control_plane.pki.ca_cert))
    api_token = await core.create_namespaced_service_account_token(
        "probe", namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec())
    )
    req = urllib.request.Request(
        f"{control_plane.server}/api/v1/namespaces/{namespace}/secrets",
        headers={"Authorization": f"Bearer {api_token.status.token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5, context=ctx)
    assert err.value.code == 403


async def test_controller_manager_publishes_root_ca(
    kube_client: k8s.ApiClient, namespace: str
) -> None:
    """The namespace's kube-root-ca.crt (needed by projected token volumes) appears."""
    import asyncio
    import time

    core = k8s.CoreV1Api(kube_client)
    deadline = time.monotonic() + 30
    while True:
        try:
            cm = await core.read_namespaced_config_map("kube-root-ca.crt", namespace)
            assert "BEGIN CERTIFICATE" in cm.data["ca.crt"]
            break
        except k8s.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)
