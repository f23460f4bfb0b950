"""Start and stop one container as a local process (part of ``devenv.nodeagent``).

Guarantees:

* A container runs as a subprocess in its own session: its ``argv`` resolved on the pod's PATH
  (an executable that cannot be found is an ``OSError``: the runner reports StartError),
  stdin from /dev/null, stdout+stderr appended to ``<pod dir>/<container>.log``.
* Each process gets a parent-death signal (SIGKILL), so even a SIGKILLed agent leaves no
  strays.
* It is stopped by PID: SIGTERM to its process group, SIGKILL to the group after the grace
  the runner passes (min(pod grace, ``--max-grace``)).
* Killed by signal N means exit code 128+N.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys

from devenv.nodeagent_spec import ContainerPlan

# Runs in the child before the container's program: ask the kernel to SIGKILL the process when
# the agent dies (even by SIGKILL), then exec the program (same PID). Isolated mode (-I -S) so the
# pod's PYTHON* variables don't affect it; they reach the exec'd program unchanged.
_LAUNCHER = """
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
try:
    os.execv(sys.argv[2], sys.argv[3:])
except OSError as exc:
    print(f"devenv node agent: exec {sys.argv[2]}: {exc}", file=sys.stderr)
    os._exit(128)
"""


def launcher_argv(plan: ContainerPlan) -> list[str]:
    """The command line that runs ``plan.argv`` (resolved on the pod's PATH) via the launcher;
    an executable that cannot be found is an OSError (container StartError)."""
    program = plan.argv[0]
    if "/" in program:
        exe = str(plan.cwd / program) if not os.path.isabs(program) else program
        if not os.access(exe, os.X_OK):
            raise FileNotFoundError(f"exec: {program!r}: no such executable")
    else:
        found = shutil.which(program, path=plan.env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(f"exec: {program!r}: executable file not found in $PATH")
        exe = found
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), exe, *plan.argv]


async def start_process(plan: ContainerPlan) -> asyncio.subprocess.Process:
    """Start the container's process via the launcher; ``OSError`` if it cannot start."""
    argv = launcher_argv(plan)
    with plan.log_path.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=plan.env,
            cwd=plan.cwd,
            start_new_session=True,
        )


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (nothing if it is gone already)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if the process outlives ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        kill_group(proc.pid)


def exit_code(returncode: int) -> int:
    """The container's exit code: a process killed by signal N exits 128+N."""
    return 128 - returncode if returncode < 0 else returncode
