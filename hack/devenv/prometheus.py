"""A real Prometheus server (Debian's ``/usr/bin/prometheus``) scraping local targets.

Guarantees:

* :func:`start_prometheus` runs the server on 127.0.0.1 on a free port, with its own TSDB
  under ``workdir``, a generated configuration (one scrape job over the given ``host:port``
  targets, scrape and rule-evaluation interval ``interval``) and the given rule files; it
  returns once ``/-/ready`` answers, and the server is stopped by PID (``stop()``);
* a missing binary is an error naming the package that ships it, never a skip; a
  configuration or rule file Prometheus refuses fails the start with its log tail;
* :meth:`PrometheusServer.api` returns the ``data`` of an HTTP API answer and raises
  :class:`PrometheusError` (with Prometheus's ``errorType`` and ``error``) for anything but
  ``status: success``, so a query that does not parse or evaluate is never mistaken for
  "no data".

The binary comes from the Debian package ``prometheus`` (the same package as promtool,
installed by ``hack/install-deps.sh``); ``PROMETHEUS_BIN`` overrides the path.

Test infrastructure, not product code.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devenv.procs import Server, ServerError, free_port, http_ok

JOB = "openbao-backup-controller"
"""The scrape job's name (the shipped alerts do not depend on it)."""


class PrometheusError(RuntimeError):
    """The HTTP API answered with an error (bad query, evaluation error...)."""


def prometheus_binary() -> Path:
    override = os.environ.get("PROMETHEUS_BIN")
    if override:
        path = Path(override)
    else:
        found = shutil.which("prometheus") or "/usr/bin/prometheus"
        path = Path(found)
    if not path.exists():
        raise ServerError(
            f"prometheus not found at {path}: run hack/install-deps.sh (Debian package "
            "prometheus, which also ships promtool), or set PROMETHEUS_BIN"
        )
    return path


@dataclass
class PrometheusServer:
    server: Server
    url: str
    workdir: Path

    def stop(self) -> None:
        self.server.stop(timeout=20)

    def check_alive(self) -> None:
        self.server.check_alive()

    def api(self, path: str, params: Mapping[str, str | Sequence[str]] | None = None) -> Any:
        """``GET /api/v1/<path>``; the answer's ``data``, or :class:`PrometheusError`."""
        query = urllib.parse.urlencode(params or {}, doseq=True)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry the error as JSON
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"GET {url}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PrometheusError(
                f"GET {url}: {body.get('errorType', '?')}: {body.get('error', body)}"
            )
        return body["data"]

    def query(self, expr: str, *, at: float | None = None) -> dict[str, Any]:
        """An instant query: ``{"resultType": ..., "result": [...]}``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data: dict[str, Any] = self.api("query", params)
        return data

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> dict[str, Any]:
        """A range query: ``{"resultType": "matrix", "result": [...]}``."""
        data: dict[str, Any] = self.api(
            "query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"},
        )
        return data

    def label_values(self, label: str, *, match: str) -> list[str]:
        """What Grafana's ``label_values(<match>, <label>)`` offers."""
        values: list[str] = self.api(f"label/{label}/values", {"match[]": [match]})
        return values

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending or firing)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def targets_up(self) -> bool:
        """True once every scrape target has been scraped successfully."""
        active = self.api("targets", {"state": "active"})["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)


def start_prometheus(
    workdir: Path,
    *,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    timeout: float = 60.0,
) -> PrometheusServer:
    """Prometheus scraping ``targets`` (``host:port``, ``/metrics``) every ``interval``."""
    binary = prometheus_binary()
    for target in targets:
        assert target.startswith("127.0.0.1:"), target
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    srv = Server(
        "prometheus",
        [
            str(binary),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=info",
        ],
        workdir / "prometheus.log",
    ).start()
    try:
        srv.wait_until(lambda: http_ok(f"{url}/-/ready"), timeout=timeout, what="GET /-/ready")
    except BaseException:
        srv.stop()
        raise
    return PrometheusServer(srv, url, workdir)
