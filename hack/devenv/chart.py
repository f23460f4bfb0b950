"""The Helm chart (charts/openbao-backup), the one source of every installed object, as the dev
tools and tests use it.

Guarantees:

* :func:`helm_binary` is the helm that ``hack/build-helm.sh`` built from its Go module (a cold
  build on first use); a failed build raises :class:`~devenv.procs.ServerError` with the
  script's output, never a skip. ``OPENBAO_BACKUP_HELM`` overrides the path;
* :func:`run_helm` runs helm with its config, cache and data homes under a private directory
  (nothing read from or written to the user's helm setup) and returns the finished process;
  :func:`render` raises :class:`HelmError` carrying helm's message when helm refuses;
* :func:`install_docs` reads the generated ``manifests/install.yaml`` (rendered from the chart
  by ``hack/render-manifests.sh``, kept in sync by tests/chart); :func:`rbac_docs` are its
  namespace, ServiceAccount and RBAC documents: the controller's role exactly as shipped, for
  lanes that run the controller outside a pod under that role.

Dev/test infrastructure, not product code.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devenv.procs import cached_build

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "openbao-backup"
MANIFESTS_DIR = ROOT / "manifests"
INSTALL_MANIFEST = MANIFESTS_DIR / "install.yaml"
RELEASE = "openbao-backup"
SYSTEM_NAMESPACE = "openbao-backup-system"
CONTROLLER = "openbao-backup-controller"
"""The controller's Deployment, ServiceAccount, ClusterRole and leader Lease for RELEASE."""
RBAC_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)
_HOMES = Path(tempfile.gettempdir()) / f"obb-helm-{os.getuid()}"


class HelmError(RuntimeError):
    """helm refused (lint error, schema violation, failed install...); the message is helm's."""


def helm_binary() -> Path:
    override = os.environ.get("OPENBAO_BACKUP_HELM")
    if override:
        return Path(override)
    return cached_build(ROOT / "hack" / "build-helm.sh")


def run_helm(
    *args: str, kubeconfig: Path | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` (with ``--kubeconfig`` when given); the caller reads the exit."""
    env = dict(os.environ)
    for name in ("CONFIG", "CACHE", "DATA"):
        env[f"HELM_{name}_HOME"] = str(_HOMES / name.lower())
    cmd = [str(helm_binary()), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout
    )


def render(
    *,
    set_values: Sequence[str] = (),
    namespace: str = SYSTEM_NAMESPACE,
    release: str = RELEASE,
    extra: Sequence[str] = (),
) -> str:
    """``helm template`` of the chart: each ``set_values`` entry is one ``--set``."""
    args = ["template", release, str(CHART_DIR), "--namespace", namespace, *extra]
    for value in set_values:
        args += ["--set", value]
    proc = run_helm(*args)
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a manifest stream."""
    return [d for d in yaml.safe_load_all(text) if d]


def install_docs() -> list[dict[str, Any]]:
    """Every object of the generated manifests/install.yaml."""
    return load_docs(INSTALL_MANIFEST.read_text())


def rbac_docs() -> list[dict[str, Any]]:
    """The namespace, the controller's ServiceAccount and every role and binding, as shipped."""
    return [d for d in install_docs() if d["kind"] in RBAC_KINDS]


def rbac_manifest() -> str:
    """:func:`rbac_docs` as one YAML stream, for ``kubectl apply -f -``."""
    return yaml.safe_dump_all(rbac_docs(), sort_keys=False)
