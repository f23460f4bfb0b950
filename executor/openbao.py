"""Talking to OpenBao: TLS, login, the active node, the snapshot stream and the restore upload.

Guarantees:

* TLS is always verified (system trust store, or ``OBB_OPENBAO_CACERT``); there is no switch
  to turn verification off. Plain ``http://`` is used only when the configured address says so;
* authentication is one of: login with the projected ServiceAccount token to a ``jwt`` or
  ``kubernetes`` auth mount (``POST auth/<mount>/login {role, jwt}``), whose token is revoked
  (``auth/token/revoke-self``) by :meth:`OpenBao.close`; or a static token file, checked with
  ``lookup-self`` and never revoked. Tokens and the JWT are registered with
  :mod:`executor.secrets` as soon as they are read;
* the snapshot is taken from and restored to the ACTIVE node: :meth:`OpenBao.find_leader` asks
  ``sys/leader`` first (a standby answers snapshot paths with 307 and a restore body cannot be
  replayed) and records the active node's ``active_time`` from that node itself; a 307 on the
  snapshot GET is followed once (after recording the target's ``active_time``), a 307 on the
  restore POST is a :class:`~executor.errors.LeaderError`;
* a snapshot counts only if the node that served it was the active node for the whole
  stream: :meth:`OpenBao.confirm_source` asks that node's ``sys/leader`` after the last byte
  and raises :class:`~executor.errors.LeaderError` unless it is still the active node
  (``is_self``), with the SAME ``active_time`` and advertised address as before the request
  (a node that lost leadership mid-stream can still answer 200 with a complete archive);
  a failing ``sys/leader`` at that point is a LeaderError too (not confirmed = not taken);
* the snapshot body is streamed as received (no decompression, no buffering): ``sock_read``
  bounds the silence between bytes, not the total time (``OBB_OPENBAO_READ_TIMEOUT``, first
  byte included); the restore body is streamed from an async iterable with a Content-Length;
* aiohttp errors are translated here, once: connection/TLS/timeouts while locating or logging
  in -> LeaderError, refused credentials -> AuthError, any failure of the snapshot stream or a
  refused restore -> SnapshotError, 403 on a snapshot path -> AuthError.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from executor import secrets
from executor.contract import OpenBaoSettings
from executor.errors import (
    AuthError,
    ConfigurationError,
    ExecutorError,
    LeaderError,
    SnapshotError,
)
from executor.log import get_logger

log = get_logger("executor.openbao")

SNAPSHOT_PATH = "sys/storage/raft/snapshot"
FORCE_PATH = "sys/storage/raft/snapshot-force"
_API_READ_TIMEOUT = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Leader:
    """The active node: the API base URL we reach it at, the OpenBao version it runs, and
    what it said of itself in ``sys/leader`` (``active_time``: when it last became active;
    ``advertised``: its ``leader_address``, i.e. its api_addr, which may differ from
    ``address`` behind a proxy or Service). ``ha_enabled=False``: no leadership to lose."""

    address: str
    version: str | None
    active_time: str | None = None
    advertised: str | None = None
    ha_enabled: bool = True


@dataclass
class SnapshotStream:
    """The snapshot body, and the node that is serving it (after a redirect: the target)."""

    chunks: AsyncIterator[bytes]
    source: Leader


def ssl_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying client context (system store, or only ``cafile`` when given)."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA bundle {cafile}: {exc}") from None


def _errors_text(payload: bytes) -> str:
    """OpenBao's ``{"errors": [...]}`` as one short line."""
    import json

    try:
        data = json.loads(payload)
        errs = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errs, list) and errs:
            return "; ".join(str(e) for e in errs)[:500]
    except ValueError:
        pass
    return payload[:300].decode("utf-8", "replace").strip() or "(empty body)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the response body broke off: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return f"{exc.__class__.__name__}: {exc}"


_FOREIGN = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class OpenBao:
    """A connection to one OpenBao cluster for one executor run."""

    def __init__(self, *, settings: OpenBaoSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._session = session
        self._token: str | None = None
        self._revocable = False

    @classmethod
    @asynccontextmanager
    async def open(cls, *, settings: OpenBaoSettings) -> AsyncIterator[OpenBao]:
        """A client whose token (if obtained by login) is revoked on exit."""
        ctx = ssl_context(str(settings.cacert) if settings.cacert else None)
        connector = aiohttp.TCPConnector(ssl=ctx, limit=8)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=_API_READ_TIMEOUT,
        )
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        ) as session:
            client = cls(settings=settings, session=session)
            try:
                yield client
            finally:
                await client.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"X-Vault-Token": self._token} if self._token else {}

    async def _json(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        doing: str,
        transport_error: type[ExecutorError] = LeaderError,
        token: bool = True,
    ) -> tuple[int, Any, bytes]:
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                headers=self._headers() if token else {},
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                data: Any = None
                if payload:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                return resp.status, data, payload
        except _FOREIGN as exc:
            raise transport_error(f"{doing}: {_describe(exc)} ({url})") from None

    def _url(self, base: str, path: str) -> str:
        return f"{base.rstrip('/')}/v1/{path.lstrip('/')}"

    # -- the active node ----------------------------------------------------------------------

    async def find_leader(self) -> Leader:
        """The active node's address and version; LeaderError if there is none usable."""
        addr = self.settings.addr
        status, data, payload = await self._json(
            "GET",
            self._url(addr, "sys/leader"),
            doing="asking OpenBao for its leader",
            token=False,
        )
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"sys/leader at {addr} answered HTTP {status}: {_errors_text(payload)}"
                + (" (sealed?)" if status == 503 else "")
            )
        ha_enabled = data.get("ha_enabled", True) is not False
        if data.get("is_self") or not ha_enabled:
            leader = addr
            state: dict[str, Any] = data
        else:
            found = data.get("leader_address")
            if not isinstance(found, str) or not found:
                raise LeaderError(f"OpenBao at {addr} knows no active node (no leader elected)")
            leader = found.rstrip("/")
            # active_time is only meaningful from the active node itself: ask it.
            state = await self._self_state(
                leader, doing=f"asking {leader} (named active by {addr}) for its own leader state"
            )
        active_time = state.get("active_time")
        advertised = state.get("leader_address")
        health = await self._health(leader)
        if health.get("sealed"):
            raise LeaderError(f"the active node {leader} is sealed")
        if health.get("standby"):
            raise LeaderError(f"{leader} is a standby now: leadership is changing, retry")
        version = health.get("version")
        result = Leader(
            address=leader,
            version=version if isinstance(version, str) else None,
            active_time=active_time if isinstance(active_time, str) else None,
            advertised=advertised.rstrip("/")
            if isinstance(advertised, str) and advertised
            else None,
            ha_enabled=ha_enabled,
        )
        log.info(
            "active node found",
            leader=result.address,
            advertised=result.advertised,
            active_time=result.active_time,
            version=result.version,
        )
        return result

    async def _self_state(self, base: str, *, doing: str) -> dict[str, Any]:
        """``sys/leader`` of ``base``, which must say it is the active node itself."""
        status, data, payload = await self._json(
            "GET",
            self._url(base, "sys/leader"),
            doing=doing,
            token=False,
        )
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"sys/leader at {base} answered HTTP {status}: {_errors_text(payload)}"
                + (" (sealed?)" if status == 503 else "")
            )
        if data.get("ha_enabled", True) is not False and not data.get("is_self"):
            raise LeaderError(
                f"{base} is not the active node (it names "
                f"{data.get('leader_address') or 'no leader'}): leadership is "
                "changing, retry"
            )
        return data

    async def confirm_source(self, source: Leader) -> None:
        """Raise LeaderError unless ``source`` is STILL the active node it was when the
        snapshot was requested: ``is_self``, same ``active_time``, same advertised address.

        Called after the last byte and before anything is committed: a node that lost
        leadership while streaming can answer 200 with a complete archive of its own state.
        """
        if not source.ha_enabled:
            return
        was = source.advertised or source.address
        since = source.active_time or "unknown"
        prefix = (
            f"cannot confirm that {was} (active since {since}) was still the active node "
            "when the snapshot ended, so the snapshot is not used"
        )
        try:
            status, data, payload = await self._json(
                "GET",
                self._url(source.address, "sys/leader"),
                doing="asking the node that served the snapshot for its leader state",
                token=False,
            )
        except LeaderError as exc:
            raise LeaderError(f"{prefix}: {exc.message}") from None
        if status != 200 or not isinstance(data, dict):
            raise LeaderError(
                f"{prefix}: sys/leader at {source.address} answered HTTP {status}: "
                f"{_errors_text(payload)}" + (" (sealed?)" if status == 503 else "")
            )
        now_addr = data.get("leader_address")
        now_addr = now_addr.rstrip("/") if isinstance(now_addr, str) and now_addr else None
        now_time = data.get("active_time") if data.get("is_self") else None
        moved = (
            not data.get("is_self")
            or source.active_time is None
            or now_time != source.active_time
            or (source.advertised is not None and now_addr != source.advertised)
        )
        if not moved:
            log.info("snapshot source confirmed active", node=was, active_time=since)
            return
        if not data.get("is_self") and now_addr is None:
            now_addr = await self._next_leader(source.address)
        if data.get("is_self"):
            now = f"{now_addr or source.address} (active since {now_time or 'unknown'})"
        else:
            now = now_addr or "not known yet (election in progress)"
        raise LeaderError(
            f"leadership moved during the snapshot: the snapshot came from {was} "
            f"(active since {since} when it was requested), and the active node is now "
            f"{now}; the snapshot is not used"
        )

    async def _next_leader(self, base: str, *, wait: float = 3.0) -> str | None:
        """The leader ``base`` names within ``wait`` seconds (for the error message only)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            await asyncio.sleep(0.2)
            try:
                status, data, _ = await self._json(
                    "GET",
                    self._url(base, "sys/leader"),
                    doing="asking who leads now",
                    token=False,
                )
            except LeaderError:
                return None
            found = data.get("leader_address") if isinstance(data, dict) else None
            if status == 200 and isinstance(found, str) and found:
                return found.rstrip("/")
        return None

    async def _health(self, base: str) -> dict[str, Any]:
        status, data, payload = await self._json(
            "GET",
            self._url(
                base, "sys/health?standbyok=true&perfstandbyok=true&sealedcode=299&uninitcode=298"
            ),
            doing=f"checking the health of {base}",
            token=False,
        )
        if not isinstance(data, dict):
            raise LeaderError(
                f"sys/health at {base} answered HTTP {status}: {_errors_text(payload)}"
            )
        return data

    # -- authentication -----------------------------------------------------------------------

    async def login(self) -> None:
        """Obtain a token (see module doc); AuthError if refused."""
        auth = self.settings.auth
        if auth.method == "token":
            assert auth.token_file is not None
            token = _read_secret_file(auth.token_file, what="OpenBao token file")
            self._token = token
            status, _, payload = await self._json(
                "GET",
                self._url(self.settings.addr, "auth/token/lookup-self"),
                doing="checking the OpenBao token",
            )
            if status != 200:
                raise AuthError(
                    f"OpenBao refused the token from {auth.token_file}: HTTP {status}: "
                    f"{_errors_text(payload)}"
                )
            log.info("using static token", token_file=str(auth.token_file))
            return
        assert auth.jwt_file is not None
        assert auth.role is not None
        jwt = _read_secret_file(auth.jwt_file, what="projected ServiceAccount token")
        status, data, payload = await self._json(
            "POST",
            self._url(self.settings.addr, f"auth/{auth.mount}/login"),
            body={"role": auth.role, "jwt": jwt},
            doing=f"logging in to auth/{auth.mount}",
            token=False,
        )
        if status != 200:
            raise AuthError(
                f"login to auth/{auth.mount} with role {auth.role!r} refused: HTTP {status}: "
                f"{_errors_text(payload)}"
            )
        client_token = data.get("auth", {}).get("client_token") if isinstance(data, dict) else None
        if not isinstance(client_token, str) or not client_token:
            raise AuthError(f"login to auth/{auth.mount} returned no client_token")
        secrets.register(client_token)
        self._token = client_token
        self._revocable = True
        log.info("logged in", method=auth.method, mount=auth.mount, role=auth.role)

    def forget_token(self) -> None:
        """Drop the token without revoking it (after a restore replaced the token store)."""
        self._revocable = False

    async def close(self) -> None:
        """Revoke a login token (best effort: a failure is logged, never raised)."""
        if not (self._revocable and self._token):
            return
        self._revocable = False
        try:
            status, _, payload = await asyncio.wait_for(
                self._json(
                    "POST",
                    self._url(self.settings.addr, "auth/token/revoke-self"),
                    doing="revoking our token",
                ),
                timeout=10,
            )
        except (ExecutorError, TimeoutError) as exc:
            log.warning("could not revoke our OpenBao token", error=str(exc))
            return
        if status not in (200, 204):
            log.warning(
                "could not revoke our OpenBao token", status=status, error=_errors_text(payload)
            )
        else:
            log.info("token revoked")

    # -- snapshot and restore -----------------------------------------------------------------

    @asynccontextmanager
    async def snapshot(self, *, leader: Leader) -> AsyncIterator[SnapshotStream]:
        """The snapshot body as an async iterator of chunks, exactly as OpenBao sends it,
        with the node serving it (pass it to :meth:`confirm_source` after the last byte)."""
        url = self._url(leader.address, SNAPSHOT_PATH)
        source = leader
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        for _hop in range(2):
            try:
                resp = await self._session.get(
                    url, headers=self._headers(), allow_redirects=False, timeout=timeout
                )
            except _FOREIGN as exc:
                raise SnapshotError(f"requesting the snapshot: {_describe(exc)} ({url})") from None
            if resp.status == 307 and resp.headers.get("Location") and _hop == 0:
                target = urljoin(url, resp.headers["Location"])
                resp.release()
                log.warning("snapshot request redirected: leadership moved", to=target)
                base = target.split("/v1/", 1)[0]
                state = await self._self_state(
                    base,
                    doing=f"asking {base} (the snapshot redirect target) for its own leader state",
                )
                found = state.get("leader_address")
                at = state.get("active_time")
                source = Leader(
                    address=base,
                    version=leader.version,
                    active_time=at if isinstance(at, str) else None,
                    advertised=found.rstrip("/") if isinstance(found, str) and found else None,
                    ha_enabled=state.get("ha_enabled", True) is not False,
                )
                url = target
                continue
            break
        try:
            if resp.status != 200:
                payload = await _read_small(resp)
                if resp.status == 403:
                    raise AuthError(
                        f"permission denied reading {SNAPSHOT_PATH}: the token's policy needs "
                        f"read on it ({_errors_text(payload)})"
                    )
                if resp.status == 307:
                    raise LeaderError("snapshot request redirected twice: no stable leader")
                raise SnapshotError(
                    f"snapshot request answered HTTP {resp.status}: {_errors_text(payload)}"
                )
            log.info(
                "snapshot stream started", url=url, content_type=resp.headers.get("Content-Type")
            )
            yield SnapshotStream(chunks=_stream_body(resp), source=source)
        finally:
            resp.close()

    async def restore(
        self,
        *,
        leader: Leader,
        body: Callable[[], AsyncIterable[bytes]],
        size: int,
        force: bool,
        body_error: Callable[[], BaseException | None],
    ) -> None:
        """POST the snapshot to the active node; raise if OpenBao did not accept it.

        ``body_error`` returns the exception that stopped ``body`` early, if any: it is
        re-raised in preference to the connection error it caused.
        """
        path = FORCE_PATH if force else SNAPSHOT_PATH
        url = self._url(leader.address, path)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        headers = {
            **self._headers(),
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }
        try:
            async with self._session.post(
                url, data=body(), headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                payload = await _read_small(resp)
                status = resp.status
        except _FOREIGN as exc:
            cause = body_error()
            if cause is not None:
                raise cause from None
            raise SnapshotError(f"uploading the snapshot to {path}: {_describe(exc)}") from None
        cause = body_error()
        if cause is not None:
            raise cause
        if status in (200, 204):
            return
        if status == 307:
            raise LeaderError(f"{leader.address} is no longer the active node (307 on {path})")
        if status == 403:
            raise AuthError(
                f"permission denied on {path}: the token's policy needs update on it "
                f"({_errors_text(payload)})"
            )
        raise SnapshotError(f"OpenBao refused the restore: HTTP {status}: {_errors_text(payload)}")

    async def wait_applied(self, *, leader: Leader, timeout: float) -> str | None:
        """Wait until the node shows the restore took effect; the state, or None on timeout.

        OpenBao applies a restore after answering 204: a node restored from its own cluster's
        snapshot becomes active again (``active_time`` in sys/leader changes), one restored
        from another cluster's snapshot (``snapshot-force``) seals itself. Returns ``"active"``
        or ``"sealed"``; never raises for a node that is busy or restarting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                status, data, _ = await self._json(
                    "GET",
                    self._url(leader.address, "sys/leader"),
                    doing="watching OpenBao apply the restore",
                    token=False,
                )
            except LeaderError:
                status, data = 0, None
            if status == 503:
                return "sealed"
            if (
                status == 200
                and isinstance(data, dict)
                and data.get("is_self")
                and data.get("active_time") != leader.active_time
            ):
                return "active"
            await asyncio.sleep(0.25)
        return None

    # -- plain API calls (freshness marker, restore drill) ------------------------------------

    def use_token(self, token: str) -> None:
        """Send ``token`` from now on (e.g. a scratch server's root token); never revoked."""
        secrets.register(token)
        self._token = token
        self._revocable = False

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        base: str | None = None,
        doing: str,
        transport_error: type[ExecutorError] = LeaderError,
        token: bool = True,
    ) -> tuple[int, Any, str]:
        """One JSON API call to ``base`` (default: the configured address): the status, the
        parsed body (None if not JSON) and OpenBao's error text (for messages); a transport
        failure raises ``transport_error``."""
        status, data, payload = await self._json(
            method,
            self._url(base or self.settings.addr, path),
            body=body,
            doing=doing,
            transport_error=transport_error,
            token=token,
        )
        return status, data, _errors_text(payload) if payload else "(empty body)"


async def _read_small(resp: aiohttp.ClientResponse, limit: int = 64 << 10) -> bytes:
    try:
        return await resp.content.read(limit)
    except _FOREIGN:
        return b""


async def _stream_body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            received += len(chunk)
            yield chunk
    except _FOREIGN as exc:
        raise SnapshotError(
            f"the snapshot stream broke after {received} bytes: {_describe(exc)}"
        ) from None


def _read_secret_file(path: Any, *, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc}") from None
    if not value:
        raise ConfigurationError(f"the {what} {path} is empty")
    secrets.register(value)
    return value
