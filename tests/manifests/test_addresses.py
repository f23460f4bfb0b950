"""Admission refuses link-local and cloud-metadata addresses (issue 11: the preflight as a
network probe), on the real API server, with the same verdict as the controller's parser.

``spec.address`` (probed by the controller) and ``spec.backup.target.endpoint`` (where the
executor sends storage credentials) of an OpenBaoCluster are refused with a message naming the
field unless the cluster sets ``spec.allowLinkLocalAddresses: true``. One table
(tests/backup/test_addresses.py) runs through the API server here and through
:func:`controller.backup.decide.addresses.refused` there, and the CRD rules are checked to use
the parser's patterns character for character. The same holds for an OpenBaoRestore's
``spec.target.endpoint`` (its own ``spec.allowLinkLocalAddresses`` opts out)."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import pytest
from devenv.crds import load_crds
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from controller.backup.decide.addresses import (
    ALLOW_FIELD,
    CANONICAL_IPV4_PATTERN,
    FORBIDDEN_ADDRESS_PATTERN,
    NUMERIC_HOST_PATTERN,
    refused,
)
from tests.backup.test_addresses import ADMITTED, REFUSED

GROUP = "backup.openbao.org"
VERSION = "v1alpha1"
CRDS = {doc["spec"]["names"]["kind"]: doc for doc in load_crds()}
GUARDED = ["spec.address", "spec.backup.target.endpoint"]


def spec_schema() -> dict[str, Any]:
    root = CRDS["OpenBaoCluster"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = root["properties"]["spec"]
    return spec


def test_the_crd_rules_use_the_parsers_patterns() -> None:
    spec = spec_schema()
    rules = [r for r in spec.get("x-kubernetes-validations", []) if ALLOW_FIELD in r["rule"]]
    assert ["spec" + r["fieldPath"] for r in rules] == GUARDED
    for rule in rules:
        field = "self" + rule["fieldPath"]
        patterns = re.findall(r"\.matches\(r'([^']*)'\)", rule["rule"])
        assert patterns == [FORBIDDEN_ADDRESS_PATTERN, NUMERIC_HOST_PATTERN, CANONICAL_IPV4_PATTERN]
        assert rule["rule"].count(f"{field}.matches(") == 3
        assert rule["rule"].startswith(f"(has(self.{ALLOW_FIELD}) && self.{ALLOW_FIELD}) ||")
        assert f"spec.{ALLOW_FIELD}: true" in " ".join(rule["message"].split())
    assert spec["properties"][ALLOW_FIELD]["type"] == "boolean"
    assert spec["properties"][ALLOW_FIELD]["default"] is False


def test_the_restore_crd_rule_uses_the_parsers_patterns() -> None:
    root = CRDS["OpenBaoRestore"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = root["properties"]["spec"]
    rules = [r for r in spec.get("x-kubernetes-validations", []) if ALLOW_FIELD in r["rule"]]
    assert [r["fieldPath"] for r in rules] == [".target.endpoint"]
    (rule,) = rules
    patterns = re.findall(r"\.matches\(r'([^']*)'\)", rule["rule"])
    assert patterns == [FORBIDDEN_ADDRESS_PATTERN, NUMERIC_HOST_PATTERN, CANONICAL_IPV4_PATTERN]
    assert rule["rule"].count("self.target.endpoint.matches(") == 3
    assert rule["rule"].startswith(f"(has(self.{ALLOW_FIELD}) && self.{ALLOW_FIELD}) ||")
    assert f"spec.{ALLOW_FIELD}: true" in " ".join(rule["message"].split())
    assert spec["properties"][ALLOW_FIELD]["type"] == "boolean"
    assert "default" not in spec["properties"][ALLOW_FIELD]  # unset: off, objects unchanged


def test_the_table_is_what_the_parser_says() -> None:
    assert all(refused(u) for u in REFUSED)
    assert not any(refused(u) for u in ADMITTED)


# -- on the real API server --------------------------------------------------------------------


def cluster(address: str | None = None, endpoint: str | None = None, **spec: Any) -> Any:
    target: dict[str, Any] = {"provider": "s3", "bucket": "backups"}
    if endpoint is not None:
        target["endpoint"] = endpoint
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoCluster",
        "metadata": {"name": f"c-{uuid.uuid4().hex[:8]}"},
        "spec": {"backup": {"target": target, "auth": {"jwt": {"role": "backup"}}}, **spec},
    }
    if address is not None:
        body["spec"]["address"] = address
    return body


@pytest.fixture
def api(kube_client: k8s.ApiClient, crds: list[str]) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_client)


def restore(endpoint: str, **spec: Any) -> Any:
    key = "inprocess/ns/vault/20261130T120000Z-0123abcd.snap"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": f"r-{uuid.uuid4().hex[:8]}"},
        "spec": {
            "cluster": "vault",
            "key": key,
            "target": {"provider": "s3", "bucket": "backups", "endpoint": endpoint},
            **spec,
        },
    }


async def verdict(
    api: k8s.CustomObjectsApi, namespace: str, body: Any, plural: str = "openbaoclusters"
) -> str:
    """``""`` when the API server admits ``body``, else the message of its 422."""
    refusal: ApiException | None = None
    try:
        await api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            copy.deepcopy(body),
            field_validation="Strict",
        )
    except ApiException as exc:
        refusal = exc
    if refusal is None:
        return ""
    assert refusal.status == 422, refusal.body
    message: str = json.loads(refusal.body or b"{}")["message"]
    return message


@pytest.mark.integration
async def test_admission_refuses_what_the_parser_refuses(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    disagreements: list[str] = []
    for url in REFUSED + ADMITTED:
        want = refused(url)
        for field, body in (
            ("spec.address", cluster(address=url)),
            ("spec.backup.target.endpoint", cluster(endpoint=url)),
        ):
            message = await verdict(api, namespace, body)
            if not want and message:
                disagreements.append(f"{field}={url!r} refused by the API server: {message}")
            if want and not (
                f"{field}: Invalid value" in message
                and "link-local or cloud-metadata address" in message
            ):
                disagreements.append(f"{field}={url!r} not refused as link-local: {message!r}")
    assert disagreements == []


@pytest.mark.integration
async def test_the_opt_out_admits_them(api: k8s.CustomObjectsApi, namespace: str) -> None:
    for url in REFUSED:
        body = cluster(address=url, endpoint=url, allowLinkLocalAddresses=True)
        message = await verdict(api, namespace, body)
        # the other URL rules (isURL, no '@', ...) still apply; only ours is lifted
        assert "link-local" not in message, (url, message)
    plain = cluster(address="https://vault.team-a.svc:8200")
    assert await verdict(api, namespace, plain) == ""
    created = await api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "openbaoclusters", plain["metadata"]["name"]
    )
    assert created["spec"][ALLOW_FIELD] is False  # defaulted: off unless set


@pytest.mark.integration
async def test_turning_the_opt_out_off_again_is_refused(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    """An admitted link-local cluster cannot drop the opt-out while keeping the address."""
    body = cluster(address="http://169.254.20.10:8200", allowLinkLocalAddresses=True)
    assert await verdict(api, namespace, body) == ""
    name = body["metadata"]["name"]
    patch: Any = api.patch_namespaced_custom_object  # the stubs lack _content_type
    with pytest.raises(ApiException) as caught:
        await patch(
            GROUP,
            VERSION,
            namespace,
            "openbaoclusters",
            name,
            {"spec": {ALLOW_FIELD: False}},
            _content_type="application/merge-patch+json",
        )
    assert caught.value.status == 422
    assert "spec.address" in json.loads(caught.value.body or b"{}")["message"]


@pytest.mark.integration
async def test_restore_admission_refuses_what_the_parser_refuses(
    api: k8s.CustomObjectsApi, namespace: str
) -> None:
    """An OpenBaoRestore's target.endpoint, where the executor sends storage credentials."""
    disagreements: list[str] = []
    for url in REFUSED + ADMITTED:
        message = await verdict(api, namespace, restore(url), "openbaorestores")
        if not refused(url) and message:
            disagreements.append(f"{url!r} refused by the API server: {message}")
        if refused(url) and not (
            "spec.target.endpoint: Invalid value" in message
            and "link-local or cloud-metadata address" in message
        ):
            disagreements.append(f"{url!r} not refused as link-local: {message!r}")
        opted = restore(url, allowLinkLocalAddresses=True)
        message = await verdict(api, namespace, opted, "openbaorestores")
        assert "link-local" not in message, (url, message)
    assert disagreements == []
