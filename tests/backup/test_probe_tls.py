"""The preflight probe builds its TLS context once per CA bundle, not per launch (issue 13:
``ssl.create_default_context`` was half the controller's CPU under a burst)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from controller.backup.act import probe


async def test_tls_contexts_are_built_once_per_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    probe._ssl_context.cache_clear()
    # port 9 (discard) is closed on loopback: each probe fails fast, after the TLS setup
    for _ in range(10):
        got = await probe.probe_openbao(address="https://127.0.0.1:9", ca_pem=None)
        assert not got.reachable
    for _ in range(10):
        await probe.probe_openbao(address="http://127.0.0.1:9", ca_pem=None)
    assert len(built) == 1
    bad = await probe.probe_openbao(address="https://127.0.0.1:9", ca_pem="not a PEM bundle")
    assert len(built) == 2
    assert not bad.reachable and bad.error == probe.BAD_CA
