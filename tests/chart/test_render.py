"""The chart renders what the README promises and refuses what cannot work (helm lint, helm
template, values.schema.json), and the generated manifests are the chart's rendering.

No servers: helm (hack/build-helm.sh) and kubectl's kustomize. The rendered controller
arguments go through the controller's own settings parser, so a flag the chart passes and the
controller does not know fails here, not in a crash-looping pod.
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest
import yaml
from devenv.chart import CHART_DIR, MANIFESTS_DIR, HelmError, install_docs, load_docs, run_helm
from devenv.controlplane import binaries_dir

from controller import settings
from tests.chart.conftest import (
    Doc,
    controller_container,
    docs,
    identity,
    of_kind,
    one,
)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = CHART_DIR / "files" / "alerts.yaml"
DASHBOARD = CHART_DIR / "files" / "grafana-dashboard.json"
IMAGE = "ghcr.io/openbao-backup/openbao-backup"
MONITORING_ON = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "prometheusRule.enabled=true",
)
SINGLE_NAMESPACE = ("watchNamespaces={team-a,team-b}",)


def parsed_args(rendered: list[Doc], namespace: str = "obb-system") -> settings.Settings:
    """The Deployment's arguments as the controller in the image parses them."""
    args = controller_container(rendered)["args"]
    assert args[0] == "controller", args  # the image runs `python -m` + args
    return settings.parse(args[1:], env={"POD_NAMESPACE": namespace})


def pod_labels(rendered: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects_pods(selector: dict[str, str], rendered: list[Doc]) -> bool:
    labels = pod_labels(rendered)
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(
    "values", [(), SINGLE_NAMESPACE, MONITORING_ON], ids=["default", "single-ns", "monitoring"]
)
def test_helm_lint_strict(values: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART_DIR)]
    for value in values:
        args += ["--set", value]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_install_is_cluster_wide_ha_and_restricted() -> None:
    rendered = docs()
    kinds = sorted(identity(d)[0] for d in rendered)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"]
        + ["ClusterRole"] * 4
        + ["PodDisruptionBudget", "Service", "NetworkPolicy", "ConfigMap"]
    )
    names = {d["metadata"]["name"] for d in of_kind(rendered, "ClusterRole")}
    assert names == {
        "openbao-backup-controller",
        "openbao-backup-trigger",
        "openbao-backup-operator",
        "openbao-backup-viewer",
    }
    for doc in rendered:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "obb-system", identity(doc)

    deployment = one(rendered, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= pod_labels(rendered).items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(rendered, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects_pods(term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], rendered)

    container = controller_container(rendered)
    assert container["image"] == f"{IMAGE}:0.1.0"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["resources"]["limits"]["memory"]

    parsed = parsed_args(rendered)
    assert parsed.in_cluster and parsed.leader_elect and parsed.all_namespaces
    assert parsed.bind_host_port == ("0.0.0.0", 8080)
    assert parsed.lease_name == "openbao-backup-controller"
    assert parsed.lease_namespace == "obb-system"
    assert parsed.executor_image == f"{IMAGE}:0.1.0"
    assert parsed.executor_image_allowlist == ()
    assert parsed.log_format == "json"

    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects_pods(pdb["spec"]["selector"]["matchLabels"], rendered)
    service = one(rendered, "Service")
    assert selects_pods(service["spec"]["selector"], rendered)
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"


def test_one_replica_has_no_pdb_and_two_need_leader_election() -> None:
    assert of_kind(docs("controller.replicas=1"), "PodDisruptionBudget") == []
    single = docs("controller.replicas=1", "controller.leaderElection.enabled=false")
    assert not parsed_args(single).leader_elect
    with pytest.raises(HelmError, match=r"replicas > 1 needs controller\.leaderElection"):
        docs("controller.leaderElection.enabled=false")


def test_network_policy_admits_only_the_scrape() -> None:
    rendered = docs()
    policy = one(rendered, "NetworkPolicy")["spec"]
    assert selects_pods(policy["podSelector"]["matchLabels"], rendered)
    assert policy["policyTypes"] == ["Ingress"]  # egress open by default (apiserver, OpenBao)
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    closed = one(docs("networkPolicy.metricsFrom=null"), "NetworkPolicy")["spec"]
    assert closed["ingress"] == []
    restricted = one(docs("networkPolicy.egress.restrict=true"), "NetworkPolicy")["spec"]
    assert restricted["policyTypes"] == ["Ingress", "Egress"]
    blocks = [peer["ipBlock"] for r in restricted["egress"] for peer in r["to"]]
    assert {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]} in blocks
    assert of_kind(docs("networkPolicy.enabled=false"), "NetworkPolicy") == []


def test_single_namespace_mode_grants_only_the_watched_namespaces() -> None:
    cluster_wide = docs()
    rendered = docs(*SINGLE_NAMESPACE)
    controller_rules = one(cluster_wide, "ClusterRole", "openbao-backup-controller")["rules"]
    assert of_kind(rendered, "ClusterRoleBinding") == []
    assert {d["metadata"]["name"] for d in of_kind(rendered, "ClusterRole")} == {
        "openbao-backup-trigger",
        "openbao-backup-operator",
        "openbao-backup-viewer",
    }
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in of_kind(rendered, "Role")
    }
    assert set(roles) == {
        ("team-a", "openbao-backup-controller"),
        ("team-b", "openbao-backup-controller"),
        ("obb-system", "openbao-backup-controller-leader-election"),
    }
    for ns in ("team-a", "team-b"):
        assert roles[(ns, "openbao-backup-controller")]["rules"] == controller_rules
    lease_rules = roles[("obb-system", "openbao-backup-controller-leader-election")]["rules"]
    assert {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in lease_rules} == {
        (("create",), ()),
        (("get", "update"), ("openbao-backup-controller",)),
    }
    bindings = {
        (d["metadata"]["namespace"], d["roleRef"]["name"]) for d in of_kind(rendered, "RoleBinding")
    }
    assert bindings == set(roles)
    for binding in of_kind(rendered, "RoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "openbao-backup-controller",
                "namespace": "obb-system",
            }
        ]
    assert parsed_args(rendered).namespaces == ("team-a", "team-b")
    # "*" means every namespace, as for the controller's --namespace.
    everywhere = docs("watchNamespaces={*}")
    assert parsed_args(everywhere).all_namespaces
    assert one(everywhere, "ClusterRoleBinding")


def test_monitoring_objects_when_enabled() -> None:
    rendered = docs(*MONITORING_ON, "metrics.serviceMonitor.labels.release=prom")
    service = one(rendered, "Service")
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["obb-system"]}
    podmonitor = one(rendered, "PodMonitor")
    assert selects_pods(podmonitor["spec"]["selector"]["matchLabels"], rendered)
    rule = one(rendered, "PrometheusRule")
    # files/alerts.yaml verbatim: untemplated, so Prometheus gets its own {{ $labels.x }}.
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    summaries = [r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any("{{ $labels.namespace }}" in s for s in summaries)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert of_kind(docs(), kind) == [], f"{kind} is opt-in (needs the Operator's CRDs)"


def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    cm = one(docs(), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"openbao-backup.json": DASHBOARD.read_text().strip()}
    moved = one(
        docs("grafanaDashboard.label=dashboards", "grafanaDashboard.namespace=grafana"), "ConfigMap"
    )
    assert moved["metadata"]["labels"]["dashboards"] == "1"
    assert moved["metadata"]["namespace"] == "grafana"


def test_executor_image_and_allowlist() -> None:
    digest = "sha256:" + "ab" * 32
    pinned = docs(f"image.digest={digest}")
    assert controller_container(pinned)["image"] == f"{IMAGE}:0.1.0@{digest}"
    assert parsed_args(pinned).executor_image == f"{IMAGE}:0.1.0@{digest}"
    own = docs(
        "executorImage=registry.acme.internal/obb:1",
        "executorImageAllowlist={ghcr.io/acme/openbao-backup@sha256:*,registry.acme.internal/obb/*}",
        "controller.extraArgs={--workers=4}",
        "controller.logFormat=console",
    )
    parsed = parsed_args(own)
    assert parsed.executor_image == "registry.acme.internal/obb:1"
    assert parsed.executor_image_allowlist == (
        "ghcr.io/acme/openbao-backup@sha256:*",
        "registry.acme.internal/obb/*",
    )
    assert parsed.workers == 4 and parsed.log_format == "console"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("controller.replcas=3", "at '/controller': additional properties 'replcas' not allowed"),
        ("controller.replicas=two", "at '/controller/replicas': got string, want integer"),
        ("executorImageAllowlist={ghcr.io/acme*}", "at '/executorImageAllowlist/0'"),
        ("controller.logFormat=text", "at '/controller/logFormat': value must be one of"),
        ("image.digest=latest", "at '/image/digest'"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        ("networkPolicy.egress.restrict=maybe", "at '/networkPolicy/egress/restrict'"),
        ("controller.extraArgs={workers}", "at '/controller/extraArgs/0'"),
    ],
)
def test_schema_refuses_bad_values_naming_them(value: str, message: str) -> None:
    with pytest.raises(HelmError) as refused:
        docs(value)
    assert message in str(refused.value), str(refused.value)


def test_generated_manifests_are_the_charts_rendering(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "render-manifests.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stale = []
    for fresh in sorted(tmp_path.glob("*.yaml")):
        committed = MANIFESTS_DIR / fresh.name
        old = committed.read_text() if committed.exists() else ""
        if old != fresh.read_text():
            diff = difflib.unified_diff(
                old.splitlines(),
                fresh.read_text().splitlines(),
                f"manifests/{fresh.name} (committed)",
                f"manifests/{fresh.name} (from the chart)",
                lineterm="",
            )
            stale.append("\n".join(list(diff)[:80]))
    assert not stale, (
        "manifests/ is out of date with charts/openbao-backup: run `bash hack/render-manifests.sh`"
        " and commit the result\n" + "\n\n".join(stale)
    )
    assert {p.name for p in tmp_path.glob("*.yaml")} == {"install.yaml", "monitoring.yaml"}


def test_install_manifest_has_crds_namespace_and_the_default_install() -> None:
    installed = install_docs()
    kinds = [d["kind"] for d in installed]
    assert kinds[:4] == ["CustomResourceDefinition"] * 3 + ["Namespace"]
    crds = {d["metadata"]["name"] for d in installed if d["kind"] == "CustomResourceDefinition"}
    assert crds == {
        f"{p}.backup.openbao.org" for p in ("openbaoclusters", "openbaobackups", "openbaorestores")
    }
    namespace = one(installed, "Namespace")
    assert namespace["metadata"]["name"] == "openbao-backup-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    rest = [
        identity(d) for d in installed if d["kind"] not in ("CustomResourceDefinition", "Namespace")
    ]
    default = docs(namespace="openbao-backup-system")
    assert sorted(rest) == sorted(identity(d) for d in default)


def test_kustomize_base_is_the_install_manifest() -> None:
    proc = subprocess.run(
        [str(binaries_dir() / "kubectl"), "kustomize", str(MANIFESTS_DIR)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    built = {identity(d): d for d in load_docs(proc.stdout)}
    shipped = {identity(d): d for d in install_docs()}
    assert set(built) == set(shipped)
    for key, doc in shipped.items():
        assert built[key] == doc, f"kustomize changed {key}"
