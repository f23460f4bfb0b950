"""Authenticating to OpenBao: which token the executor sends, and revoking it afterwards.

Guarantees:

* authentication is one of: login with the projected ServiceAccount token to a ``jwt`` or
  ``kubernetes`` auth mount (``POST auth/<mount>/login {role, jwt}``), whose token is revoked
  (``auth/token/revoke-self``) by :meth:`TokenAuth.close`; or a static token file, checked with
  ``lookup-self`` and never revoked. Tokens and the JWT are registered with
  :mod:`executor.secrets` as soon as they are read;
* a token given with :meth:`TokenAuth.use_token` (a scratch server's root token) is registered
  as a secret too and never revoked; :meth:`TokenAuth.forget_token` drops the revocation
  (after a restore replaced the token store);
* revocation is best effort: a failure is logged, never raised;
* connection/TLS/timeouts while logging in -> :class:`~executor.errors.LeaderError`, refused
  credentials -> :class:`~executor.errors.AuthError`; an unreadable or empty token/JWT file
  -> :class:`~executor.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from executor import secrets
from executor.errors import AuthError, ConfigurationError, ExecutorError
from executor.log import get_logger
from executor.openbao.transport import Transport, errors_text

log = get_logger("executor.openbao")


class TokenAuth(Transport):
    """Login, static token, revocation (see module)."""

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
                    f"{errors_text(payload)}"
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
                f"{errors_text(payload)}"
            )
        client_token = data.get("auth", {}).get("client_token") if isinstance(data, dict) else None
        if not isinstance(client_token, str) or not client_token:
            raise AuthError(f"login to auth/{auth.mount} returned no client_token")
        secrets.register(client_token)
        self._token = client_token
        self._revocable = True
        log.info("logged in", method=auth.method, mount=auth.mount, role=auth.role)

    def use_token(self, token: str) -> None:
        """Send ``token`` from now on (e.g. a scratch server's root token); never revoked."""
        secrets.register(token)
        self._token = token
        self._revocable = False

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
                "could not revoke our OpenBao token", status=status, error=errors_text(payload)
            )
        else:
            log.info("token revoked")


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
