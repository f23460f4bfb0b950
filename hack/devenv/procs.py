"""Subprocess plumbing shared by every local server the dev/test environment runs.

Guarantees:

* every server listens on 127.0.0.1 only, on a port picked by binding 127.0.0.1:0;
* every server runs in its own session (``start_new_session=True``) with its output in a
  log file, and is stopped by its PID: SIGTERM, a bounded wait, then SIGKILL of the group;
* readiness is polled with a deadline, and a server that dies while we wait fails at once
  with the tail of its log instead of a time-out.

This is test infrastructure, not product code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServerError(RuntimeError):
    """A local server failed to start or died."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    """A started subprocess with its log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ServerError(f"{self.name}: executable not found: {self.argv[0]}") from exc
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is None:
            raise ServerError(f"{self.name}: not started")
        code = self.proc.poll()
        if code is not None:
            raise ServerError(
                f"{self.name} exited with code {code}; log tail ({self.log_path}):\n"
                + log_tail(self.log_path)
            )

    def wait_until(self, probe: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``probe`` every 50 ms until it is true; fail fast if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(Exception):
                if probe():
                    return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name}: not ready ({what}) after {timeout:.0f}s; log tail:\n"
                    + log_tail(self.log_path)
                )
            time.sleep(0.05)

    def stop(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Stop the process (and its session) by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)


def http_ok(
    url: str, *, timeout: float = 1.0, expect: Sequence[int] = (200,), cafile: Path | None = None
) -> bool:
    """True if a GET of ``url`` answers with one of ``expect`` (loopback only); an https URL
    is verified against ``cafile`` when given (the system's CAs otherwise)."""
    assert url.startswith(("http://127.0.0.1", "https://127.0.0.1")), url
    ctx = None if cafile is None else ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return int(resp.status) in expect
    except urllib.error.HTTPError as exc:
        return exc.code in expect


def cached_build(script: Path, *, timeout: float = 3600.0) -> Path:
    """Run one of hack/'s cached build scripts (a no-op when warm) and return the path it
    prints last; a failed build raises with the script's stderr."""
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=False, timeout=timeout
    )
    if proc.returncode != 0:
        raise ServerError(f"{script.name} failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])
