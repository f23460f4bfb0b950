"""Turn a pod spec into local files and process plans (part of ``devenv.nodeagent``).

Materialises volumes under ``<pod dir>/volumes/<volume>/`` and resolves each container's
environment, command and path mapping. See ``devenv.nodeagent`` for the contract.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devenv.nodeagent_kube import ApiError, KubeClient, Obj

# Host variables passed to every container process; everything else comes from the pod spec.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class ConfigError(Exception):
    """The pod cannot start (yet). ``permanent`` errors fail the pod; others are retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    termination_path: Path
    termination_policy: str


@dataclass
class TokenFile:
    base: Path
    rel: str
    service_account: str
    audience: str
    expiration: int
    mode: int


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay as written, ``$$`` is ``$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i):
            end = value.find(")", i + 2)
            if end != -1:
                name = value[i + 2 : end]
                out.append(env.get(name, value[i : end + 1]))
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _norm_mount(path: str) -> str:
    return path.rstrip("/") or "/"


def map_path(value: str, mounts: list[tuple[str, Path]]) -> str:
    """Rewrite ``value`` if it equals a mount path or starts with ``mount path + "/"``."""
    for mount, local in mounts:
        if value == mount:
            return str(local)
        if value.startswith(mount + "/"):
            return str(local) + value[len(mount) :]
    return value


def map_arg(value: str, mounts: list[tuple[str, Path]]) -> str:
    """``map_path``, plus the ``--flag=PATH`` form of command-line arguments."""
    mapped = map_path(value, mounts)
    if mapped == value and value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        mapped_rest = map_path(rest, mounts)
        if mapped_rest != rest:
            return f"{flag}={mapped_rest}"
    return mapped


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
class PodSetup:
    """Everything the runner needs from the spec; one instance per pod attempt."""

    kube: KubeClient
    pod: Obj
    node_name: str
    pod_dir: Path
    shared_dir: Path
    service_env: dict[str, str]
    volumes: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)
    _objects: dict[tuple[str, str], Obj | None] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def service_account(self) -> str:
        return str(self.pod["spec"].get("serviceAccountName") or "default")

    # -- API objects ----------------------------------------------------------------------

    async def _source(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
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

    async def _key(self, kind: str, ref: Obj) -> str | None:
        optional = bool(ref.get("optional"))
        data = await self._source(kind, str(ref.get("name")), optional)
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

    # -- volumes --------------------------------------------------------------------------

    async def materialise(self) -> None:
        root = self.pod_dir / "volumes"
        shutil.rmtree(root, ignore_errors=True)  # a retried attempt starts clean
        self.tokens.clear()
        self._objects.clear()
        for vol in self.pod["spec"].get("volumes") or []:
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
                self.volumes[name] = self.shared_dir / "pvcs" / self.ns / claim
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
        data = await self._source(kind, name, optional)
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
                raise ConfigError(f"couldn't find key {key} in {kind[:-1]} {self.ns}/{name}")
            _write_file(dest, str(item["path"]), data[key], int(item.get("mode", default_mode)))

    def _downward(self, dest: Path, items: list[Obj], default_mode: int) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise ConfigError("downwardAPI resourceFieldRef is not supported", permanent=True)
            value = self.field_value(str(item["fieldRef"]["fieldPath"]))
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
                    self.service_account,
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
        meta = self.pod["metadata"]
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
        path = f"/api/v1/namespaces/{self.ns}/serviceaccounts/{tok.service_account}/token"
        try:
            resp = await self.kube.request("POST", path, body)
        except ApiError as exc:
            raise ConfigError(f"token for serviceaccount {tok.service_account}: {exc}") from exc
        _write_file(tok.base, tok.rel, str(resp["status"]["token"]).encode(), tok.mode)

    def token_refresh_after(self) -> float | None:
        """Seconds until the first token reaches 80% of its lifetime (as the kubelet)."""
        return min((0.8 * t.expiration for t in self.tokens), default=None)

    # -- containers -----------------------------------------------------------------------

    async def _environment(self, container: Obj) -> dict[str, str]:
        env: dict[str, str] = dict(self.service_env)
        for src in container.get("envFrom") or []:
            prefix = str(src.get("prefix") or "")
            ref = src.get("secretRef") or src.get("configMapRef") or {}
            kind = "secrets" if "secretRef" in src else "configmaps"
            data = await self._source(kind, str(ref.get("name")), bool(ref.get("optional")))
            for key, value in (data or {}).items():
                env[prefix + key] = value.decode(errors="replace")
        for var in container.get("env") or []:
            name = str(var["name"])
            value_from = var.get("valueFrom")
            if value_from is None:
                env[name] = expand(str(var.get("value") or ""), env)
                continue
            resolved: str | None
            if "secretKeyRef" in value_from:
                resolved = await self._key("secrets", value_from["secretKeyRef"])
            elif "configMapKeyRef" in value_from:
                resolved = await self._key("configmaps", value_from["configMapKeyRef"])
            elif "fieldRef" in value_from:
                resolved = self.field_value(str(value_from["fieldRef"]["fieldPath"]))
            else:
                kinds = sorted(value_from)
                raise ConfigError(f"env {name}: {kinds} not supported", permanent=True)
            if resolved is not None:
                env[name] = resolved
        return env

    def _mounts(self, container: Obj, env: Mapping[str, str]) -> list[tuple[str, Path]]:
        mounts: list[tuple[str, Path]] = []
        for vm in container.get("volumeMounts") or []:
            mount = _norm_mount(str(vm["mountPath"]))
            if mount == "/":
                raise ConfigError("a volume mounted at / cannot be mapped", permanent=True)
            local = self.volumes.get(str(vm["name"]))
            if local is None:
                raise ConfigError(f"volumeMount of unknown volume {vm['name']}", permanent=True)
            sub = str(vm.get("subPath") or "")
            if vm.get("subPathExpr"):
                sub = expand(str(vm["subPathExpr"]), env)
            if sub:
                if Path(sub).is_absolute() or ".." in Path(sub).parts:
                    raise ConfigError(f"invalid subPath {sub!r}", permanent=True)
                local = local / sub
                if not local.exists():
                    local.mkdir(parents=True)
            mounts.append((mount, local))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        return mounts

    async def plan(self, container: Obj) -> ContainerPlan:
        name = str(container["name"])
        command = [str(c) for c in (container.get("command") or [])]
        args = [str(a) for a in (container.get("args") or [])]
        if not command:
            raise ConfigError(
                f"container {name} has no command (image entrypoints cannot run locally)",
                permanent=True,
            )
        pod_env = await self._environment(container)
        mounts = self._mounts(container, pod_env)
        term_path = self.pod_dir / f"{name}.termination-log"
        term_path.write_bytes(b"")
        term_mount = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
        mounts.insert(0, (term_mount, term_path))  # exact-match only: it is a file
        argv = [map_arg(expand(a, pod_env), mounts) for a in command + args]
        if _PYTHON.fullmatch(os.path.basename(argv[0])):
            argv[0] = sys.executable
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        venv_bin = os.path.dirname(sys.executable)
        env["PATH"] = os.pathsep.join(p for p in (venv_bin, env.get("PATH", os.defpath)) if p)
        env["HOSTNAME"] = str(self.pod["metadata"]["name"])
        env["TMPDIR"] = str(self.pod_dir / "tmp")
        env.update({k: map_path(v, mounts) for k, v in pod_env.items()})
        env["DEVENV_POD_ROOT"] = str(self.pod_dir)
        return ContainerPlan(
            name=name,
            argv=argv,
            env=env,
            cwd=_working_dir(container, mounts, self.pod_dir),
            log_path=self.pod_dir / f"{name}.log",
            termination_path=term_path,
            termination_policy=str(container.get("terminationMessagePolicy") or "File"),
        )


def _working_dir(container: Obj, mounts: list[tuple[str, Path]], default: Path) -> Path:
    if container.get("workingDir"):
        mapped = Path(map_path(str(container["workingDir"]), mounts))
        with contextlib.suppress(OSError):
            if mapped.is_absolute() and mapped.is_dir():
                return mapped
    return default


def read_termination_message(plan: ContainerPlan, exit_code: int) -> str:
    """The kubelet's rule: the file (max 4096 bytes); with FallbackToLogsOnError and an empty
    file on failure, the last 80 lines / 2048 bytes of the log."""
    try:
        with plan.termination_path.open("rb") as fh:
            data = fh.read(4096)
    except OSError:
        data = b""
    if not data and exit_code != 0 and plan.termination_policy == "FallbackToLogsOnError":
        try:
            lines = plan.log_path.read_bytes().splitlines(keepends=True)[-80:]
        except OSError:
            lines = []
        data = b"".join(lines)[-2048:]
    return data.decode(errors="replace")
