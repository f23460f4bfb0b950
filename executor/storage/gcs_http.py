"""The GCS JSON API on aiohttp: one request with retries, errors translated once.

Guarantees:

* :meth:`GcsClient.request` retries 408/429/5xx answers and connection errors
  (``OBB_STORAGE_RETRIES`` times, exponential backoff) and returns any other answer whole
  (status, headers, body); every request carries a current access token unless ``auth=False``
  (a resumable session URI is its own credential) or the client has no token (emulator);
* a token is registered with :mod:`executor.secrets` before it is sent, so it never appears
  in a log line, event or report;
* :meth:`GcsClient.fail` turns an unexpected answer into ``ObjectNotFound`` (404) or
  ``StorageError`` (access denied, anything else) naming what was being done;
* aiohttp and gcloud-aio-auth errors are translated here (:func:`describe`), once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from executor import secrets
from executor.contract import StorageSettings
from executor.errors import ExecutorError, ObjectNotFound, StorageError
from executor.log import get_logger
from executor.storage.base import sleep_backoff

log = get_logger("executor.storage.gcs")

DEFAULT_ROOT = "https://storage.googleapis.com"
RETRYABLE = {408, 429, 500, 502, 503, 504}
FOREIGN = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{exc.__class__.__name__}: {exc}"


def error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        msg = data.get("error", {}).get("message") if isinstance(data, dict) else None
        if isinstance(msg, str) and msg:
            return msg[:300]
    except (ValueError, AttributeError):
        pass
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


class Answer:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            raise StorageError(f"GCS answered HTTP {self.status} with a non-JSON body") from None
        if not isinstance(data, dict):
            raise StorageError("GCS answered JSON that is not an object")
        return data


class GcsClient:
    """Requests to one bucket's JSON API (see module)."""

    def __init__(
        self, *, session: aiohttp.ClientSession, token: Any | None, settings: StorageSettings
    ) -> None:
        self.session = session
        self._token = token
        self._settings = settings
        self._root = (settings.endpoint or DEFAULT_ROOT).rstrip("/")
        self._bucket = settings.bucket
        self.retries = settings.retries

    # -- plumbing -----------------------------------------------------------------------------

    async def auth_headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            value = await self._token.get()
        except ExecutorError:
            raise
        except Exception as exc:  # gcloud-aio-auth raises anything from aiohttp to ValueError
            raise StorageError(
                f"cannot obtain a GCS access token: {exc.__class__.__name__}: {exc}"
            ) from None
        if not value:
            raise StorageError("cannot obtain a GCS access token (empty token)")
        secrets.register(value)
        return {"Authorization": f"Bearer {value}"}

    def params(self, **params: str) -> dict[str, str]:
        if self._settings.gcs_project:
            params["userProject"] = self._settings.gcs_project
        return params

    def object_url(self, key: str) -> str:
        return f"{self._root}/storage/v1/b/{quote(self._bucket, safe='')}/o/{quote(key, safe='')}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        doing: str,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        retry: bool = True,
    ) -> Answer:
        """One request with retries of 408/429/5xx and connection errors."""
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            if auth:
                hdrs.update(await self.auth_headers())
            try:
                async with self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json_body,
                    headers=hdrs,
                    allow_redirects=False,
                ) as resp:
                    answer = Answer(resp.status, resp.headers, await resp.read())
                if answer.status not in RETRYABLE:
                    return answer
                problem = f"HTTP {answer.status}: {error_text(answer.body)}"
            except FOREIGN as exc:
                problem = describe(exc)
            attempt += 1
            if not retry or attempt > self.retries:
                raise StorageError(f"{doing}: {problem}")
            log.warning(
                "GCS request failed, retrying", doing=doing, problem=problem, attempt=attempt
            )
            await sleep_backoff(attempt)

    def fail(self, doing: str, answer: Answer) -> StorageError:
        text = error_text(answer.body)
        if answer.status == 404:
            return ObjectNotFound(f"{doing}: not found ({text})")
        if answer.status in (401, 403):
            return StorageError(f"{doing}: access denied by GCS (HTTP {answer.status}: {text})")
        return StorageError(f"{doing}: GCS answered HTTP {answer.status}: {text}")

    # -- object calls the upload needs too --------------------------------------------------

    async def delete(self, *, key: str) -> bool:
        doing = f"deleting {key}"
        answer = await self.request(
            "DELETE", self.object_url(key), params=self.params(), doing=doing
        )
        if answer.status in (200, 204):
            return True
        if answer.status == 404:
            return False
        raise self.fail(doing, answer)

    async def set_metadata(self, *, key: str, generation: str, metadata: Mapping[str, str]) -> None:
        doing = f"recording the metadata of {key}"
        answer = await self.request(
            "PATCH",
            self.object_url(key),
            params=self.params(ifGenerationMatch=generation),
            json_body={"metadata": dict(metadata)},
            doing=doing,
        )
        if answer.status != 200:
            raise self.fail(doing, answer)
