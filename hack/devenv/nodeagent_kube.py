"""Minimal Kubernetes API access for the local node agent (dev/test infrastructure).

Plain JSON over aiohttp (async, for the agent) and urllib (sync, for ``NodeAgentProcess``
readiness probes), authenticated from a kubeconfig file: client certificate, bearer token or
token file; CA from a file or inline data. Objects are handled as the API's own JSON dicts so
the agent reads pod specs with their real field names.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

Obj = dict[str, Any]


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime: exactly six fractional digits and a zone (the apiserver insists)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class KubeAuth:
    server: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    token: str | None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


_inline_dir: Path | None = None


def _inline_file(data_b64: str, name: str) -> str:
    """Write kubeconfig ``*-data`` content to a private file (removed at exit)."""
    global _inline_dir
    if _inline_dir is None:
        _inline_dir = Path(tempfile.mkdtemp(prefix="nodeagent-kubeconfig-"))
        atexit.register(shutil.rmtree, _inline_dir, True)
    path = _inline_dir / name
    path.write_bytes(base64.b64decode(data_b64))
    path.chmod(0o600)
    return str(path)


def load_kubeconfig(path: Path, context: str | None = None) -> KubeAuth:
    cfg: Obj = yaml.safe_load(path.read_text())
    ctx_name = context or cfg.get("current-context")

    def named(section: str, name: str | None) -> Obj:
        for item in cfg.get(section) or []:
            if item.get("name") == name:
                inner: Obj = item.get(section[:-1]) or {}
                return inner
        raise ValueError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster"))
    user = named("users", ctx.get("user"))

    def file_of(entry: Obj, key: str) -> str | None:
        if entry.get(f"{key}-data"):
            return _inline_file(entry[f"{key}-data"], key)
        value = entry.get(key)
        if not value:
            return None
        return str((path.parent / value).resolve())

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (path.parent / user["tokenFile"]).read_text().strip()
    return KubeAuth(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=file_of(cluster, "certificate-authority"),
        cert_file=file_of(user, "client-certificate"),
        key_file=file_of(user, "client-key"),
        token=token,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def sync_get(auth: KubeAuth, api_path: str, timeout: float = 5.0) -> Obj | None:
    """GET as JSON; ``None`` on 404 (used by readiness probes outside any event loop)."""
    assert auth.server.startswith("https://"), auth.server
    req = urllib.request.Request(f"{auth.server}{api_path}", headers=auth.headers())
    ctx = auth.ssl_context()
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            data: Obj = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _status_message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]


class KubeClient:
    """A tiny async JSON client: ``request`` for CRUD, ``watch`` for watch streams."""

    def __init__(self, auth: KubeAuth) -> None:
        self.auth = auth
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=auth.ssl_context(), limit=64),
            headers=auth.headers(),
            trust_env=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Obj:
        data = None if body is None else json.dumps(body)
        async with self._session.request(
            method,
            f"{self.auth.server}{path}",
            data=data,
            params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, _status_message(text))
            out: Obj = json.loads(text) if text else {}
            return out

    async def get_or_none(self, path: str) -> Obj | None:
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(
        self, path: str, params: Mapping[str, str], *, server_timeout: int
    ) -> AsyncIterator[Obj]:
        """Yield watch events until the server ends the stream. An ERROR event is raised as
        ``ApiError`` (410 means: relist); a silent connection trips the read timeout."""
        query = {**params, "watch": "1", "timeoutSeconds": str(server_timeout)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=server_timeout + 30)
        async with self._session.get(
            f"{self.auth.server}{path}", params=query, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, _status_message(await resp.text()))
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event: Obj = json.loads(line)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                    yield event
