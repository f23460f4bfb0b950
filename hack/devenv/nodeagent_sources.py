"""Values a pod takes from the API: Secret and ConfigMap data, downward API fields (part of
``devenv.nodeagent``).

Guarantees:

* A missing Secret, ConfigMap or key raises a retryable ``ConfigError`` (the runner shows the
  containers waiting with CreateContainerConfigError and tries again) unless the reference is
  ``optional``, which yields nothing instead; unsupported features raise a permanent
  ``ConfigError`` that fails the pod at once.
* Secret data is base64-decoded; ConfigMap ``data`` and ``binaryData`` are merged.
* Each object is read at most once per pod attempt (``reset`` starts a new attempt), so all
  volumes and env variables of one attempt see the same version of it.
* fieldRef / downward API values: the fields listed under Environment in
  ``devenv.nodeagent_spec``, plus metadata.labels / metadata.annotations as a whole (sorted
  ``k="v"`` lines); any other fieldPath fails the pod. resourceFieldRef is not supported.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from devenv.nodeagent_kube import KubeClient, Obj

_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class ConfigError(Exception):
    """The pod cannot start (yet). ``permanent`` errors fail the pod; others are retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class PodSources:
    """Reads the Secrets, ConfigMaps and fields one pod refers to; one instance per pod."""

    kube: KubeClient
    pod: Obj
    node_name: str
    _objects: dict[tuple[str, str], Obj | None] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def service_account(self) -> str:
        return str(self.pod["spec"].get("serviceAccountName") or "default")

    def reset(self) -> None:
        """Forget what was read: the next attempt reads every object again."""
        self._objects.clear()

    async def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """The decoded data of ``kind`` (``secrets`` or ``configmaps``) ``name``."""
        key = (kind, name)
        if key not in self._objects:
            self._objects[key] = await self.kube.get_or_none(
                f"/api/v1/namespaces/{self.ns}/{kind}/{name}"
            )
        obj = self._objects[key]
        if obj is None:
            if optional:
                return None
            raise ConfigError(f"{kind[:-1]} {self.ns}/{name} not found")
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    async def key(self, kind: str, ref: Obj) -> str | None:
        """One key of a secretKeyRef / configMapKeyRef, as text."""
        optional = bool(ref.get("optional"))
        data = await self.data(kind, str(ref.get("name")), optional)
        key = str(ref["key"])
        if data is None or key not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in {kind[:-1]} {self.ns}/{ref.get('name')}")
        return data[key].decode(errors="replace")

    def field_value(self, path: str) -> str:
        meta = self.pod["metadata"]
        match = _LABEL_REF.fullmatch(path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = sorted((meta.get(path.split(".")[1]) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
        values = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": self.service_account,
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path not in values:
            raise ConfigError(f"fieldRef {path!r} is not supported", permanent=True)
        return str(values[path] or "")
