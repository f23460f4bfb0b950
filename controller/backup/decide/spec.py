"""OpenBaoCluster and OpenBaoBackup objects as typed, frozen values.

Guarantees:

* :func:`parse_cluster` is pure and total: it returns a :class:`ClusterSpec` or raises
  :class:`SpecError` listing every problem found (each naming the field), never a KeyError;
* the CRD schema (charts/openbao-backup/crds) already refuses most bad input at admission;
  this parser re-checks what the controller relies on (the shapes of labels, selectors,
  tolerations and
  resource quantities through :mod:`.validation`, which mirrors the CRD's rules), so an
  object written before a schema change (or with validation bypassed) becomes a clear
  condition instead of a crash;
* ``spec.address`` and ``spec.backup.target.endpoint`` are never link-local or cloud-metadata
  addresses unless ``spec.allowLinkLocalAddresses`` is true (:mod:`.addresses`, the same rule
  as the CRD's admission), so such a cluster is never probed nor backed up;
* defaults that the CRD cannot express live here, in one place: the OpenBao address
  ``https://<name>.<namespace>.svc:8200``, retention ``maxAge`` parsing, the executor's
  deadline (:data:`DEFAULT_ACTIVE_DEADLINE`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.backup.decide import validation
from controller.backup.decide.addresses import ALLOW_FIELD, address_problems
from controller.backup.decide.drill import Marker, Verify, parse_marker, parse_verify

Provider = Literal["s3", "gcs", "azure"]
AuthMethod = Literal["jwt", "kubernetes", "token"]
DEFAULT_ACTIVE_DEADLINE = 3600
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class SpecError(ValueError):
    """The object cannot be acted on; ``problems`` names each field and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class KeyRef:
    """A key of a Secret or ConfigMap in the cluster's own namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class Target:
    provider: Provider
    bucket: str  # Azure: the container
    endpoint: str | None = None
    region: str | None = None
    path_prefix: str = ""
    use_path_style: bool | None = None
    credentials_secret: str | None = None
    role_arn: str | None = None
    gcs_project: str | None = None
    gcs_emulator: bool = False
    azure_account: str | None = None
    part_size: str | None = None
    concurrency: int | None = None
    ca_secret: KeyRef | None = None


@dataclass(frozen=True)
class Auth:
    method: AuthMethod
    mount: str = ""
    role: str | None = None
    audience: str = "openbao"
    token_secret: KeyRef | None = None


@dataclass(frozen=True)
class Retention:
    max_count: int | None = None
    max_age_seconds: int | None = None


@dataclass(frozen=True)
class ExecutorPod:
    image: str | None = None
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    resources: Mapping[str, Any] = field(default_factory=dict)
    active_deadline_seconds: int = DEFAULT_ACTIVE_DEADLINE
    service_account_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    priority_class_name: str | None = None
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupSpec:
    schedule: str | None
    time_zone: str
    suspend: bool
    starting_deadline_seconds: int | None
    target: Target
    auth: Auth
    retention: Retention
    executor: ExecutorPod
    marker: Marker | None = None
    verify: Verify | None = None


@dataclass(frozen=True)
class ClusterSpec:
    namespace: str
    name: str
    uid: str
    generation: int
    address: str
    ca_configmap: KeyRef | None
    ca_secret: KeyRef | None
    backup: BackupSpec | None
    allow_link_local: bool = False  # spec.allowLinkLocalAddresses (addresses.ALLOW_FIELD)


def parse_duration(text: str) -> int:
    """``30d``, ``720h``, ``1d12h``, ``90m``, ``45s`` -> seconds (> 0)."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    total = ((d * 24 + h) * 60 + mi) * 60 + s
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


def _ref(raw: Any, default_key: str) -> KeyRef | None:
    if not isinstance(raw, Mapping) or not raw.get("name"):
        return None
    return KeyRef(name=str(raw["name"]), key=str(raw.get("key") or default_key))


def _target(raw: Mapping[str, Any], problems: list[str]) -> Target | None:
    provider = raw.get("provider")
    if provider not in ("s3", "gcs", "azure"):
        problems.append(f"spec.backup.target.provider: unknown provider {provider!r}")
        return None
    azure = raw.get("azure") or {}
    gcs = raw.get("gcs") or {}
    bucket = (
        str(azure.get("container") or "") if provider == "azure" else str(raw.get("bucket") or "")
    )
    if not bucket:
        problems.append(
            "spec.backup.target.azure.container: required"
            if provider == "azure"
            else "spec.backup.target.bucket: required"
        )
    if provider == "azure" and not azure.get("storageAccount"):
        problems.append("spec.backup.target.azure.storageAccount: required")
    part = raw.get("partSize")
    concurrency = raw.get("concurrency")
    cred = raw.get("credentialsSecretRef") or {}
    return Target(
        provider=provider,
        bucket=bucket,
        endpoint=raw.get("endpoint"),
        region=raw.get("region"),
        path_prefix=str(raw.get("pathPrefix") or "").strip("/"),
        use_path_style=raw.get("usePathStyle"),
        credentials_secret=str(cred["name"]) if cred.get("name") else None,
        role_arn=raw.get("roleArn"),
        gcs_project=gcs.get("project"),
        gcs_emulator=bool(gcs.get("emulator", False)),
        azure_account=azure.get("storageAccount"),
        part_size=None if part is None else str(part),
        concurrency=int(concurrency) if concurrency is not None else None,
        ca_secret=_ref(raw.get("caSecretRef"), "ca.crt"),
    )


def parse_target(raw: Mapping[str, Any]) -> Target:
    """A target (``spec.backup.target`` shape, e.g. as copied onto a record); ValueError if bad."""
    problems: list[str] = []
    target = _target(raw, problems)
    if target is None or problems:
        raise ValueError("; ".join(problems) or "invalid target")
    return target


def parse_auth(
    raw: Mapping[str, Any], problems: list[str], *, path: str = "spec.backup.auth"
) -> Auth | None:
    """An ``auth`` block (``spec.backup.auth`` shape); problems are appended, naming ``path``."""
    chosen = [k for k in ("jwt", "kubernetes", "tokenSecretRef") if raw.get(k)]
    if len(chosen) != 1:
        problems.append(f"{path}: set exactly one of jwt, kubernetes or tokenSecretRef")
        return None
    if chosen[0] == "tokenSecretRef":
        return Auth(method="token", token_secret=_ref(raw["tokenSecretRef"], "token"))
    method: AuthMethod = "jwt" if chosen[0] == "jwt" else "kubernetes"
    sub = raw[chosen[0]]
    if not sub.get("role"):
        problems.append(f"{path}.{chosen[0]}.role: required")
    return Auth(
        method=method,
        mount=str(sub.get("mount") or method),
        role=sub.get("role"),
        audience=str(sub.get("audience") or "openbao"),
    )


def _retention(raw: Mapping[str, Any], problems: list[str]) -> Retention:
    max_count = raw.get("maxCount")
    if max_count is not None and (not isinstance(max_count, int) or max_count < 1):
        problems.append("spec.backup.retention.maxCount: must be at least 1")
        max_count = None
    max_age = None
    if raw.get("maxAge"):
        try:
            max_age = parse_duration(str(raw["maxAge"]))
        except ValueError as exc:
            problems.append(f"spec.backup.retention.maxAge: {exc}")
    return Retention(max_count=max_count, max_age_seconds=max_age)


def _executor(raw: Mapping[str, Any], problems: list[str]) -> ExecutorPod:
    base = "spec.backup.executor"
    problems.extend(
        [
            *validation.label_map_problems(
                path=f"{base}.podLabels", labels=raw.get("podLabels") or {}
            ),
            *validation.label_map_problems(
                path=f"{base}.nodeSelector", labels=raw.get("nodeSelector") or {}
            ),
            *validation.annotation_map_problems(
                path=f"{base}.podAnnotations", annotations=raw.get("podAnnotations") or {}
            ),
            *validation.toleration_problems(
                path=f"{base}.tolerations", tolerations=raw.get("tolerations") or []
            ),
            *validation.resources_problems(
                path=f"{base}.resources", resources=raw.get("resources") or {}
            ),
        ]
    )
    return ExecutorPod(
        image=raw.get("image"),
        image_pull_policy=raw.get("imagePullPolicy"),
        image_pull_secrets=tuple(str(s["name"]) for s in raw.get("imagePullSecrets") or ()),
        resources=raw.get("resources") or {},
        active_deadline_seconds=int(raw.get("activeDeadlineSeconds") or DEFAULT_ACTIVE_DEADLINE),
        service_account_name=raw.get("serviceAccountName"),
        node_selector=raw.get("nodeSelector") or {},
        tolerations=tuple(raw.get("tolerations") or ()),
        priority_class_name=raw.get("priorityClassName"),
        pod_labels=raw.get("podLabels") or {},
        pod_annotations=raw.get("podAnnotations") or {},
    )


def parse_cluster(obj: Mapping[str, Any]) -> ClusterSpec:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    problems: list[str] = []
    tls = spec.get("tls") or {}
    backup: BackupSpec | None = None
    raw_backup = spec.get("backup")
    allow = spec.get(ALLOW_FIELD) is True
    problems += address_problems(path="spec.address", address=spec.get("address"), allow=allow)
    if isinstance(raw_backup, Mapping):
        problems += address_problems(
            path="spec.backup.target.endpoint",
            address=(raw_backup.get("target") or {}).get("endpoint"),
            allow=allow,
        )
        target = (
            _target(raw_backup.get("target") or {}, problems) if raw_backup.get("target") else None
        )
        if target is None and not raw_backup.get("target"):
            problems.append("spec.backup.target: required")
        auth = parse_auth(raw_backup.get("auth") or {}, problems)
        retention = _retention(raw_backup.get("retention") or {}, problems)
        deadline = raw_backup.get("startingDeadlineSeconds")
        executor = _executor(raw_backup.get("executor") or {}, problems)
        marker = parse_marker(raw_backup.get("marker"), problems)
        verify = parse_verify(raw_backup.get("verify"), problems)
        if target is not None and auth is not None:
            backup = BackupSpec(
                schedule=raw_backup.get("schedule") or None,
                time_zone=str(raw_backup.get("timeZone") or "UTC"),
                suspend=bool(raw_backup.get("suspend", False)),
                starting_deadline_seconds=int(deadline) if deadline is not None else None,
                target=target,
                auth=auth,
                retention=retention,
                executor=executor,
                marker=marker,
                verify=verify,
            )
    if problems:
        raise SpecError(problems)
    return ClusterSpec(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        address=str(spec.get("address") or f"https://{name}.{namespace}.svc:8200"),
        ca_configmap=_ref(tls.get("caConfigMapRef"), "ca.crt"),
        ca_secret=_ref(tls.get("caSecretRef"), "ca.crt"),
        backup=backup,
        allow_link_local=allow,
    )
