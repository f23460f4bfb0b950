"""The controller (``python -m controller``) as a local subprocess, for tests and the demo.

Runs against the local control plane with a kubeconfig, serves /metrics, /healthz and
/readyz on 127.0.0.1, and is stopped by PID (SIGTERM: it drains and releases its lease;
``kill()`` sends SIGKILL, as a crash would).
"""

from __future__ import annotations

import signal
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devenv.procs import Server, free_port, http_ok


@dataclass
class ControllerProcess:
    kubeconfig: Path
    workdir: Path
    identity: str = "controller-0"
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> ControllerProcess:
        argv = [
            sys.executable,
            "-m",
            "controller",
            "--kubeconfig",
            str(self.kubeconfig),
            "--bind-address",
            f"127.0.0.1:{self.port}",
            "--lease-namespace",
            "default",
            "--identity",
            self.identity,
            "--log-format",
            "json",
            "--executor-image",
            "local/openbao-backup-executor:dev",
            *self.extra_args,
        ]
        self.server = Server(
            f"controller-{self.identity}", argv, self.workdir / f"controller-{self.identity}.log"
        ).start()
        if wait_ready:
            self.server.wait_until(
                lambda: http_ok(f"{self.url}/readyz"), timeout=timeout, what="/readyz"
            )
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def check_alive(self) -> None:
        assert self.server is not None
        self.server.check_alive()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=40)

    def kill(self) -> None:
        if self.server is not None:
            self.server.stop(sig=signal.SIGKILL)
