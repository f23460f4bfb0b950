"""API server clients: configuration loading, raw JSON requests, streaming watches.

Guarantees:

* :func:`connect` loads the configuration once (a kubeconfig file, or the in-cluster service
  account, whose rotated token kubernetes_asyncio re-reads) and builds **two** ApiClients with
  separate connection pools: one for long-lived watches (every open watch holds a
  connection), one for lists, reads and writes;
* :class:`KubeApi` speaks plain JSON dicts over the generic ``ApiClient.call_api`` path, so
  one code path serves CRDs, Jobs, Pods and Leases; it never deserialises into model classes;
* every request has a timeout (``request_timeout`` total, ``connect_timeout`` to connect);
  watches take an explicit ``aiohttp.ClientTimeout`` whose ``sock_read`` is the inactivity
  watchdog;
* writes (POST/PUT/PATCH/DELETE) pass a client-side token bucket (QPS/burst) so a bug cannot
  hammer the API server; reads and watches do not;
* every failure leaves here as a :mod:`controller.errors` exception, translated once by
  :func:`controller.kube.errors.translate`;
* requests never consult the process environment for proxies or ``~/.netrc``
  (:func:`direct_session`): kubernetes-asyncio opens its session with ``trust_env=True``,
  which makes aiohttp look both up on every request, in a worker thread (26% of the
  controller's self time in the 1,000-cluster burst of issue 13). A proxy set in the
  kubeconfig (``proxy-url``) still applies: kubernetes-asyncio passes it per request.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from controller import metrics
from controller.errors import ConfigError, KubeError, OpenBaoBackupError
from controller.kube.errors import from_status, translate
from controller.settings import Settings

JSON = dict[str, Any]
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MERGE_PATCH = "application/merge-patch+json"


class TokenBucket:
    """Blocking token bucket: ``qps`` tokens per second, at most ``burst`` banked."""

    def __init__(self, *, qps: float, burst: int) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            wait = (1.0 - self._tokens) / self._qps
            await asyncio.sleep(wait)
            self._last = time.monotonic()
            self._tokens = 0.0
            return wait


def _named(exc: OpenBaoBackupError, *, method: str, path: str) -> OpenBaoBackupError:
    """Name the request on a translated error (callers classify failures by the object)."""
    if isinstance(exc, KubeError):
        exc.method, exc.path = method, path
    return exc


class KubeApi:
    """Raw JSON access to the API server through one ApiClient."""

    def __init__(
        self,
        *,
        client: ApiClient,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        throttle: TokenBucket | None = None,
    ) -> None:
        self.client = client
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._throttle = throttle

    @property
    def connect_timeout(self) -> float:
        return self._connect_timeout

    def with_throttle(self, throttle: TokenBucket | None) -> KubeApi:
        """This client (same connection pool, same class) with its own write budget: a lane
        for writes that must not wait behind bulk writes, e.g. lock renewals."""
        twin = copy.copy(self)
        twin._throttle = throttle
        return twin

    async def _send(
        self,
        *,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        if self._throttle is not None and method in _WRITE_METHODS:
            waited = await self._throttle.acquire()
            if waited:
                metrics.rest_rate_limited(method=method, seconds=waited)
        try:
            resp: aiohttp.ClientResponse = await self.client.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout or self._timeout,
            )
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            metrics.rest_request(method=method, code="<error>")
            raise _named(translate(exc), method=method, path=path) from exc
        metrics.rest_request(method=method, code=resp.status)
        if not 200 <= resp.status <= 299:
            try:
                raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError, OSError):
                raw = b""
            finally:
                resp.release()
            raise _named(
                from_status(resp.status, body=raw, headers=resp.headers), method=method, path=path
            )
        return resp

    async def request(
        self,
        *,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        """One request; the decoded JSON answer (``{}`` for an empty body)."""
        resp = await self._send(
            method=method, path=path, query=query, body=body, content_type=content_type
        )
        try:
            raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _named(translate(exc), method=method, path=path) from exc
        finally:
            resp.release()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise translate(exc) from exc
        if not isinstance(data, dict):
            raise OpenBaoBackupError("API server answered with a non-object JSON value")
        return data

    async def get(self, *, path: str) -> JSON:
        return await self.request(method="GET", path=path)

    async def create(self, *, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request(method="POST", path=path, body=dict(body))

    async def replace(self, *, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request(method="PUT", path=path, body=dict(body))

    async def merge_patch(self, *, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request(
            method="PATCH", path=path, body=dict(body), content_type=MERGE_PATCH
        )

    async def delete(self, *, path: str, propagation: str = "Background") -> JSON:
        return await self.request(
            method="DELETE",
            path=path,
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
        )

    @asynccontextmanager
    async def stream(
        self, *, path: str, query: Sequence[tuple[str, str]], timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[AsyncIterator[JSON]]:
        """A streaming GET (``watch=1``): yields an iterator of decoded JSON lines.

        Leaving the context closes the connection (it is not returned to the pool, since
        the stream may be mid-message).
        """
        resp = await self._send(method="GET", path=path, query=query, timeout=timeout)

        async def lines() -> AsyncGenerator[JSON, None]:
            try:
                while True:
                    line = await resp.content.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        continue
                    data = json.loads(line)
                    if isinstance(data, dict):
                        yield data
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                raise translate(exc) from exc

        gen = lines()
        try:
            yield gen
        finally:
            try:
                await gen.aclose()
            finally:
                resp.close()


@dataclass(frozen=True)
class KubeClients:
    """The process's two clients: ``watch`` (long-lived streams) and ``api`` (the rest)."""

    watch: KubeApi
    api: KubeApi

    async def close(self) -> None:
        await self.watch.client.close()
        await self.api.client.close()


async def load_configuration(settings: Settings) -> Configuration:
    """The client configuration from the kubeconfig, or in-cluster."""
    cfg = Configuration()
    in_cluster = settings.in_cluster or (
        settings.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    try:
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await kube_config.load_kube_config(
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=cfg,
                persist_config=False,
            )
    except (kube_config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load Kubernetes client configuration: {exc}") from exc
    return cfg


async def connect(settings: Settings, *, watch_pool_size: int = 64) -> KubeClients:
    """Build the watch and API clients from ``settings``."""
    cfg = await load_configuration(settings)
    watch_cfg = copy.copy(cfg)
    watch_cfg.connection_pool_maxsize = watch_pool_size
    api_cfg = copy.copy(cfg)
    api_cfg.connection_pool_maxsize = 32
    return clients_from_configurations(settings, watch_cfg=watch_cfg, api_cfg=api_cfg)


#: aiohttp's read buffer for the API session (kubernetes-asyncio's value: a watch event may
#: carry an object up to etcd's 1.5 MiB request limit).
_READ_BUFSIZE = 2**21


def direct_session(client: ApiClient) -> ApiClient:
    """Reopen ``client``'s aiohttp session on the same connector with ``trust_env=False``."""
    rest = client.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # the connector stays open for the new session
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=_READ_BUFSIZE
    )
    return client


def clients_from_configurations(
    settings: Settings, *, watch_cfg: Configuration, api_cfg: Configuration
) -> KubeClients:
    watch = KubeApi(
        client=direct_session(ApiClient(configuration=watch_cfg)),
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
    )
    api = KubeApi(
        client=direct_session(ApiClient(configuration=api_cfg)),
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        throttle=TokenBucket(qps=settings.client_qps, burst=settings.client_burst),
    )
    return KubeClients(watch=watch, api=api)
