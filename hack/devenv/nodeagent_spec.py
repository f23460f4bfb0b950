"""Turn a pod spec into local files and process plans (part of ``devenv.nodeagent``).

Guarantees:

* Each container is ``command + args`` (``$(VAR)`` expanded; there is no image, so a container
  without ``command`` fails the pod). A leading ``python`` / ``python3`` (any directory)
  becomes this agent's ``sys.executable`` (the venv).
* Environment: only PATH (the venv's bin dir prepended), HOME, LANG, LC_ALL, PYTHONPATH and
  VIRTUAL_ENV come from the host; HOSTNAME=pod name, TMPDIR=``<pod dir>/tmp``,
  KUBERNETES_SERVICE_HOST/PORT (+ _PORT_HTTPS, KUBERNETES_PORT) point at the apiserver;
  then envFrom (secretRef/configMapRef, prefix, optional), then env (value, secretKeyRef,
  configMapKeyRef with ``optional``, fieldRef: metadata.name/namespace/uid, labels['k'],
  annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP(s)/hostIP(s) =
  127.0.0.1). ``DEVENV_POD_ROOT`` = the pod dir. resourceFieldRef is not supported.
* PATH MAPPING CONTRACT (the product's executor relies on it): every env value and every
  command/arg that equals a container volumeMount's mountPath or starts with ``mountPath + "/"``
  is rewritten to the materialised location (``subPath``/``subPathExpr`` respected; the longest
  mountPath wins); an arg ``--flag=VALUE`` is rewritten the same way in its VALUE. An env value
  or arg equal to the container's terminationMessagePath (default ``/dev/termination-log``) is
  rewritten to ``<pod dir>/<container>.termination-log``. Paths hard-coded inside programs and
  workingDir outside a mount are NOT mapped (the cwd is then the pod dir).
* The termination message is the termination-message file (max 4096 bytes), or with
  FallbackToLogsOnError, an empty file and a failure, the log tail (80 lines / 2048 bytes).

Volumes are materialised by ``devenv.nodeagent_volumes`` under ``<pod dir>/volumes/<volume>/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devenv.nodeagent_kube import KubeClient, Obj
from devenv.nodeagent_sources import ConfigError, PodSources
from devenv.nodeagent_volumes import PodVolumes, TokenFile

__all__ = [
    "DEFAULT_TERMINATION_PATH",
    "INHERITED_ENV",
    "ConfigError",
    "ContainerPlan",
    "PodSetup",
    "TokenFile",
    "expand",
    "map_arg",
    "map_path",
    "read_termination_message",
    "service_env",
]

# Host variables passed to every container process; everything else comes from the pod spec.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_PYTHON = re.compile(r"python(3(\.\d+)?)?")


def service_env(server: str) -> dict[str, str]:
    """The KUBERNETES_SERVICE_* variables that point a pod at the apiserver ``server``."""
    url = urllib.parse.urlsplit(server)
    host, port = url.hostname or "127.0.0.1", str(url.port or 443)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }


@dataclass
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    termination_path: Path
    termination_policy: str


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


@dataclass
class PodSetup:
    """Everything the runner needs from the spec; one instance per pod attempt."""

    kube: KubeClient
    pod: Obj
    node_name: str
    pod_dir: Path
    shared_dir: Path
    service_env: dict[str, str]
    sources: PodSources = field(init=False)
    storage: PodVolumes = field(init=False)

    def __post_init__(self) -> None:
        self.sources = PodSources(self.kube, self.pod, self.node_name)
        self.storage = PodVolumes(self.sources, self.pod_dir, self.shared_dir)

    @property
    def volumes(self) -> dict[str, Path]:
        return self.storage.volumes

    @property
    def tokens(self) -> list[TokenFile]:
        return self.storage.tokens

    # -- volumes --------------------------------------------------------------------------

    async def materialise(self) -> None:
        await self.storage.materialise()

    async def write_token(self, tok: TokenFile) -> None:
        await self.storage.write_token(tok)

    def token_refresh_after(self) -> float | None:
        """Seconds until the first token reaches 80% of its lifetime (as the kubelet)."""
        return self.storage.token_refresh_after()

    # -- containers -----------------------------------------------------------------------

    async def _environment(self, container: Obj) -> dict[str, str]:
        env: dict[str, str] = dict(self.service_env)
        for src in container.get("envFrom") or []:
            prefix = str(src.get("prefix") or "")
            ref = src.get("secretRef") or src.get("configMapRef") or {}
            kind = "secrets" if "secretRef" in src else "configmaps"
            data = await self.sources.data(kind, str(ref.get("name")), bool(ref.get("optional")))
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
                resolved = await self.sources.key("secrets", value_from["secretKeyRef"])
            elif "configMapKeyRef" in value_from:
                resolved = await self.sources.key("configmaps", value_from["configMapKeyRef"])
            elif "fieldRef" in value_from:
                resolved = self.sources.field_value(str(value_from["fieldRef"]["fieldPath"]))
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
