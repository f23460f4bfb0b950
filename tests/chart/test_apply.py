"""The rendered chart applied to the real local kube-apiserver, and its RBAC as the apiserver
authorizes it.

* manifests/install.yaml applies as users apply it (``kubectl apply -f``), and afterwards
  ``kubectl diff -k manifests/`` finds nothing: the kustomize base is the same objects;
* the Prometheus Operator's CRDs (generated from its API types, hack/build-prometheus-crds.sh)
  are installed, so manifests/monitoring.yaml and the chart's PodMonitor are validated by the
  apiserver against the Operator's schema, and the stored PrometheusRule holds every alert;
* in each mode the controller's ServiceAccount may do what the controller does
  (``CONTROLLER_NEEDS``) where it should, and nothing of it where it should not, and never
  read Secrets (SubjectAccessReview: the apiserver's own authorizer); the user roles grant
  what the README says.

No pods run here (the fast lane has no scheduler or Deployment controller); the real-node
lane installs the chart and runs it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from devenv.chart import CHART_DIR, INSTALL_MANIFEST, MANIFESTS_DIR, load_docs, render
from devenv.controlplane import ControlPlane
from devenv.procs import cached_build
from kubernetes_asyncio import client as k8s

from tests.chart.conftest import CONTROLLER_NEEDS, CONTROLLER_NEVER, identity

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


def kubectl(cp: ControlPlane, *args: str, stdin: str | None = None) -> str:
    proc = cp.run_kubectl(*args, stdin=stdin)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


@pytest.fixture(scope="module")
def operator_crds(control_plane: ControlPlane) -> list[str]:
    """The Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs, Established."""
    crd_dir = cached_build(ROOT / "hack" / "build-prometheus-crds.sh", timeout=1800)
    files = [crd_dir / f"monitoring.coreos.com_{plural}.yaml" for plural in OPERATOR_CRDS]
    args = [a for f in files for a in ("-f", str(f))]
    kubectl(control_plane, "apply", "--server-side", "--force-conflicts", *args)
    names = [f"{plural}.monitoring.coreos.com" for plural in OPERATOR_CRDS]
    kubectl(control_plane, "wait", "--for=condition=Established", "--timeout=60s", "crd", *names)
    return names


@pytest.fixture
def scratch_release(control_plane: ControlPlane) -> Iterator[list[str]]:
    """Rendered streams a test applies; deleted (with their namespaces) afterwards."""
    applied: list[str] = []
    yield applied
    for stream in reversed(applied):
        control_plane.run_kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=stream
        )


@pytest.fixture
def authz(kube_client: k8s.ApiClient) -> k8s.AuthorizationV1Api:
    return k8s.AuthorizationV1Api(kube_client)


async def allowed(
    authz: k8s.AuthorizationV1Api,
    *,
    user: str,
    namespace: str,
    group: str,
    resource: str,
    verb: str,
    name: str | None = None,
) -> bool:
    """The apiserver's answer to: may ``user`` do ``verb`` on ``resource`` in ``namespace``?"""
    plural, _, sub = resource.partition("/")
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = await authz.create_subject_access_review(
        k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=user,
                groups=groups,
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace=namespace,
                    group=group,
                    resource=plural,
                    subresource=sub or None,
                    verb=verb,
                    name=name,
                ),
            )
        )
    )
    return bool(review.status.allowed)


async def grants(
    authz: k8s.AuthorizationV1Api,
    user: str,
    namespace: str,
    table: tuple[tuple[str, str, tuple[str, ...]], ...],
) -> dict[str, bool]:
    """``{"verb group/resource": allowed}`` for every entry of ``table``."""
    out: dict[str, bool] = {}
    for group, resource, verbs in table:
        for verb in verbs:
            key = f"{verb} {group or 'core'}/{resource}"
            out[key] = await allowed(
                authz, user=user, namespace=namespace, group=group, resource=resource, verb=verb
            )
    return out


def create_namespaces(cp: ControlPlane, *names: str) -> str:
    stream = "\n---\n".join(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})
        for n in names
    )
    kubectl(cp, "apply", "-f", "-", stdin=stream)
    return stream


async def test_install_manifest_applies_and_kustomize_base_matches(
    control_plane: ControlPlane, authz: k8s.AuthorizationV1Api
) -> None:
    kubectl(control_plane, "apply", "-f", str(INSTALL_MANIFEST))
    stored = kubectl(control_plane, "get", "-f", str(INSTALL_MANIFEST), "-o", "json")
    items = json.loads(stored)["items"]
    shipped = [identity(d) for d in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if d]
    assert sorted(identity(d) for d in items) == sorted(shipped)
    # The kustomize base is the same objects: the server has nothing to change.
    proc = control_plane.run_kubectl("diff", "-k", str(MANIFESTS_DIR))
    assert proc.returncode == 0, (
        f"kubectl diff -k manifests/ (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
    # Cluster-wide mode: the controller may do its work in any namespace, never read Secrets.
    sa = "system:serviceaccount:openbao-backup-system:openbao-backup-controller"
    anywhere = f"t-{uuid.uuid4().hex[:8]}"
    needs = await grants(authz, sa, anywhere, CONTROLLER_NEEDS)
    assert all(needs.values()), [k for k, v in needs.items() if not v]
    never = await grants(authz, sa, anywhere, CONTROLLER_NEVER)
    assert not any(never.values()), [k for k, v in never.items() if v]


async def test_monitoring_objects_validated_by_the_operator_crds(
    control_plane: ControlPlane, operator_crds: list[str], scratch_release: list[str]
) -> None:
    kubectl(control_plane, "apply", "-f", str(INSTALL_MANIFEST))  # its namespace
    kubectl(control_plane, "apply", "-f", str(MANIFESTS_DIR / "monitoring.yaml"))
    rule = json.loads(
        kubectl(
            control_plane,
            "-n",
            "openbao-backup-system",
            "get",
            "prometheusrule",
            "openbao-backup",
            "-o",
            "json",
        )
    )
    alerts = yaml.safe_load((CHART_DIR / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts  # nothing pruned: every field is in the Operator's schema
    kubectl(
        control_plane,
        "-n",
        "openbao-backup-system",
        "get",
        "servicemonitor",
        "openbao-backup-controller",
    )
    # The PodMonitor, and a release of everything in another namespace, with custom labels.
    ns = f"obb-mon-{uuid.uuid4().hex[:8]}"
    stream = render(
        release="mon",
        namespace=ns,
        set_values=[
            "namespace.create=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
            "metrics.serviceMonitor.relabelings[0].action=labeldrop",
            "metrics.serviceMonitor.relabelings[0].regex=pod",
            "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.interval=15s",
            "prometheusRule.enabled=true",
        ],
    )
    scratch_release.append(stream)
    kubectl(control_plane, "apply", "-f", "-", stdin=stream)
    pm = json.loads(
        kubectl(
            control_plane,
            "-n",
            ns,
            "get",
            "podmonitor",
            "mon-openbao-backup-controller",
            "-o",
            "json",
        )
    )
    assert pm["spec"]["podMetricsEndpoints"][0] == {
        "port": "http-metrics",
        "path": "/metrics",
        "interval": "15s",
    }
    sm = json.loads(
        kubectl(
            control_plane,
            "-n",
            ns,
            "get",
            "servicemonitor",
            "mon-openbao-backup-controller",
            "-o",
            "json",
        )
    )
    assert sm["spec"]["endpoints"][0]["relabelings"] == [{"action": "labeldrop", "regex": "pod"}]
    # The apiserver holds the objects to the Operator's schema: an interval it refuses (which
    # the chart's own schema would stop first) is refused naming the field.
    podmonitor = next(d for d in load_docs(stream) if d["kind"] == "PodMonitor")
    podmonitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15parsecs"
    proc = control_plane.run_kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(podmonitor)
    )
    assert proc.returncode != 0
    assert "spec.podMetricsEndpoints[0].interval" in proc.stderr, proc.stderr


async def test_single_namespace_release_grants_only_the_watched_namespaces(
    control_plane: ControlPlane, authz: k8s.AuthorizationV1Api, scratch_release: list[str]
) -> None:
    uid = uuid.uuid4().hex[:8]
    system, team_a, team_b, other = (f"{p}-{uid}" for p in ("sys", "team-a", "team-b", "other"))
    scratch_release.append(create_namespaces(control_plane, team_a, team_b, other))
    release = f"r{uid}"
    stream = render(
        release=release,
        namespace=system,
        set_values=["namespace.create=true", f"watchNamespaces={{{team_a},{team_b}}}"],
    )
    scratch_release.append(stream)
    kubectl(control_plane, "apply", "-f", "-", stdin=stream)
    sa = f"system:serviceaccount:{system}:{release}-openbao-backup-controller"
    for ns in (team_a, team_b):
        needs = await grants(authz, sa, ns, CONTROLLER_NEEDS)
        assert all(needs.values()), (ns, [k for k, v in needs.items() if not v])
    for ns in (other, system, team_a):
        never = await grants(authz, sa, ns, CONTROLLER_NEVER)
        assert not any(never.values()), (ns, [k for k, v in never.items() if v])
    unwatched = await grants(authz, sa, other, CONTROLLER_NEEDS)
    assert not any(unwatched.values()), [k for k, v in unwatched.items() if v]
    # Leader election: its own Lease in the release namespace, and no other Lease there.
    lease = f"{release}-lease"
    stream_with_lease = render(
        release=release,
        namespace=system,
        set_values=[
            "namespace.create=true",
            f"watchNamespaces={{{team_a},{team_b}}}",
            f"controller.leaderElection.leaseName={lease}",
        ],
    )
    kubectl(control_plane, "apply", "-f", "-", stdin=stream_with_lease)
    coord = "coordination.k8s.io"
    for verb in ("get", "update"):
        assert await allowed(
            authz, user=sa, namespace=system, group=coord, resource="leases", verb=verb, name=lease
        )
        assert not await allowed(
            authz,
            user=sa,
            namespace=system,
            group=coord,
            resource="leases",
            verb=verb,
            name="someone-elses",
        )
    assert await allowed(
        authz, user=sa, namespace=system, group=coord, resource="leases", verb="create"
    )
    # Nothing cluster-wide: listing clusters across namespaces is refused.
    assert not await allowed(
        authz,
        user=sa,
        namespace="",
        group="backup.openbao.org",
        resource="openbaoclusters",
        verb="list",
    )


async def test_user_roles_grant_what_the_readme_says(
    control_plane: ControlPlane, authz: k8s.AuthorizationV1Api, scratch_release: list[str]
) -> None:
    kubectl(control_plane, "apply", "-f", str(INSTALL_MANIFEST))
    ns = f"roles-{uuid.uuid4().hex[:8]}"
    scratch_release.append(create_namespaces(control_plane, ns))
    for role in ("trigger", "operator", "viewer"):
        kubectl(
            control_plane, "-n", ns, "create", "rolebinding", role,
            f"--clusterrole=openbao-backup-{role}", f"--user={role}-user",
        )  # fmt: skip
    group = "backup.openbao.org"
    table = {  # (user, resource, verb): allowed
        ("trigger", "openbaobackups", "create"): True,
        ("trigger", "openbaoclusters", "get"): True,
        ("trigger", "pods/log", "get"): True,
        ("trigger", "openbaoclusters", "patch"): False,
        ("trigger", "openbaobackups", "delete"): False,
        ("trigger", "openbaorestores", "create"): False,
        ("trigger", "secrets", "get"): False,
        ("operator", "openbaoclusters", "patch"): True,
        ("operator", "openbaorestores", "create"): True,
        ("operator", "openbaobackups", "delete"): True,
        ("viewer", "openbaobackups", "list"): True,
        ("viewer", "openbaoclusters/status", "get"): True,
        ("viewer", "openbaobackups", "create"): False,
        ("viewer", "pods/log", "get"): False,
        ("viewer", "secrets", "get"): False,
    }
    got = {}
    for (user, resource, verb), _ in table.items():
        api_group = group if resource.startswith("openbao") else ""
        got[(user, resource, verb)] = await allowed(
            authz, user=f"{user}-user", namespace=ns, group=api_group, resource=resource, verb=verb
        )
    assert got == table
