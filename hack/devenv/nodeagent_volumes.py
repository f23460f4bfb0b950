"""A pod's volumes as local directories (part of ``devenv.nodeagent``).

Guarantees:

* Volumes live under ``<workdir>/pods/<ns>_<name>_<uid>/volumes/<volume>/``: emptyDir, secret,
  configMap (items, modes, optional), downwardAPI, projected (secret, configMap,
  downwardAPI, serviceAccountToken via TokenRequest for the pod's service account, bound to
  the pod, with its audience and expirationSeconds, refreshed at 80% of its lifetime).
  hostPath maps to the host path itself; persistentVolumeClaim to ``<workdir>/pvcs/<ns>/<claim>``
  (shared by pods). Missing secrets/configmaps/keys are retried (container waiting
  CreateContainerConfigError); unsupported features fail the pod at once (both as
  ``ConfigError``, see ``devenv.nodeagent_sources``).
* Every attempt starts clean: ``materialise`` removes the volumes directory and reads the
  objects again.
* Each file is written to a temporary name, given its mode, then renamed into place, so a
  reader never sees a partial file; a projected path that is absolute or contains ``..`` is
  refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devenv.nodeagent_kube import ApiError, Obj
from devenv.nodeagent_sources import ConfigError, PodSources


@dataclass
class TokenFile:
    base: Path
    rel: str
    service_account: str
    audience: str
    expiration: int
    mode: int


def _write_file(base: Path, rel: str, data: bytes, mode: int) -> Path:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ConfigError(f"invalid projected path {rel!r}", permanent=True)
    dest = base.joinpath(*parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, dest)
    return dest


@dataclass
class PodVolumes:
    """Materialises one pod's volumes; ``volumes`` maps each volume name to its directory."""

    sources: PodSources
    pod_dir: Path
    shared_dir: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)

    async def materialise(self) -> None:
        root = self.pod_dir / "volumes"
        shutil.rmtree(root, ignore_errors=True)  # a retried attempt starts clean
        self.tokens.clear()
        self.sources.reset()
        for vol in self.sources.pod["spec"].get("volumes") or []:
            name = str(vol["name"])
            dest = root / name
            dest.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = dest
            if "emptyDir" in vol:
                continue
            if "hostPath" in vol:
                self.volumes[name] = Path(vol["hostPath"]["path"])
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                self.volumes[name] = self.shared_dir / "pvcs" / self.sources.ns / claim
                self.volumes[name].mkdir(parents=True, exist_ok=True)
            elif "secret" in vol:
                src = vol["secret"]
                await self._project(dest, "secrets", src["secretName"], src, src.get("defaultMode"))
            elif "configMap" in vol:
                src = vol["configMap"]
                await self._project(dest, "configmaps", src["name"], src, src.get("defaultMode"))
            elif "downwardAPI" in vol:
                src = vol["downwardAPI"]
                self._downward(dest, src.get("items") or [], src.get("defaultMode") or 0o644)
            elif "projected" in vol:
                await self._projected(dest, vol["projected"])
            else:
                kinds = sorted(set(vol) - {"name"})
                raise ConfigError(f"volume {name}: {kinds} not supported", permanent=True)

    async def _project(self, dest: Path, kind: str, name: str, src: Obj, mode: int | None) -> None:
        default_mode = 0o644 if mode is None else int(mode)
        optional = bool(src.get("optional"))
        data = await self.sources.data(kind, name, optional)
        if data is None:
            return
        items = src.get("items")
        if not items:
            for key, value in data.items():
                _write_file(dest, key, value, default_mode)
            return
        for item in items:
            key = str(item["key"])
            if key not in data:
                if optional:
                    continue
                raise ConfigError(
                    f"couldn't find key {key} in {kind[:-1]} {self.sources.ns}/{name}"
                )
            _write_file(dest, str(item["path"]), data[key], int(item.get("mode", default_mode)))

    def _downward(self, dest: Path, items: list[Obj], default_mode: int) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise ConfigError("downwardAPI resourceFieldRef is not supported", permanent=True)
            value = self.sources.field_value(str(item["fieldRef"]["fieldPath"]))
            mode = int(item.get("mode", default_mode))
            _write_file(dest, str(item["path"]), value.encode(), mode)

    async def _projected(self, dest: Path, proj: Obj) -> None:
        mode = int(proj.get("defaultMode") or 0o644)
        for source in proj.get("sources") or []:
            if "secret" in source:
                src = source["secret"]
                await self._project(dest, "secrets", src["name"], src, mode)
            elif "configMap" in source:
                src = source["configMap"]
                await self._project(dest, "configmaps", src["name"], src, mode)
            elif "downwardAPI" in source:
                self._downward(dest, source["downwardAPI"].get("items") or [], mode)
            elif "serviceAccountToken" in source:
                src = source["serviceAccountToken"]
                tok = TokenFile(
                    dest,
                    str(src["path"]),
                    self.sources.service_account,
                    str(src.get("audience") or ""),
                    int(src.get("expirationSeconds") or 3600),
                    mode,
                )
                await self.write_token(tok)
                self.tokens.append(tok)
            else:
                kinds = sorted(source)
                raise ConfigError(f"projected source {kinds} not supported", permanent=True)

    async def write_token(self, tok: TokenFile) -> None:
        meta = self.sources.pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [tok.audience] if tok.audience else [],
                "expirationSeconds": tok.expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        path = f"/api/v1/namespaces/{self.sources.ns}/serviceaccounts/{tok.service_account}/token"
        try:
            resp = await self.sources.kube.request("POST", path, body)
        except ApiError as exc:
            raise ConfigError(f"token for serviceaccount {tok.service_account}: {exc}") from exc
        _write_file(tok.base, tok.rel, str(resp["status"]["token"]).encode(), tok.mode)

    def token_refresh_after(self) -> float | None:
        """Seconds until the first token reaches 80% of its lifetime (as the kubelet)."""
        return min((0.8 * t.expiration for t in self.tokens), default=None)
