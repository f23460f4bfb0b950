"""Run one bound pod as local processes and report it like a kubelet (part of
``devenv.nodeagent``; see there for the guarantees)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj, now_rfc3339
from devenv.nodeagent_spec import ConfigError, ContainerPlan, PodSetup, read_termination_message

log = logging.getLogger("nodeagent")
SMP = "application/strategic-merge-patch+json"
TERMINAL = ("Succeeded", "Failed")
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
UNKNOWN = {
    "exitCode": 137,
    "reason": "ContainerStatusUnknown",
    "message": "The container could not be located when the pod was terminated",
}


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


@dataclass(frozen=True)
class AgentContext:
    kube: KubeClient
    node_name: str
    workdir: Path
    max_grace: float
    service_env: dict[str, str]


def pod_key(pod: Obj) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class PodRunner:
    """Owns one pod from binding to its terminal status (and its final deletion)."""

    def __init__(self, ctx: AgentContext, pod: Obj) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod_dir = ctx.workdir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._states: dict[str, Obj] = {}  # container name -> containerStatus
        self._conds: dict[str, tuple[str, str, str]] = {}  # type -> (status, reason, time)
        self._phase = "Pending"
        self._reason: str | None = None
        self._message: str | None = None
        self._start_time = now_rfc3339()
        self._prepared = self._initialized = self._failed_setup = False
        self._push_lock = asyncio.Lock()
        self._last_waiting: str | None = None

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"

    def _spec_list(self, field: str) -> list[Obj]:
        items: list[Obj] = self.pod["spec"].get(field) or []
        return items

    # -- control from the agent -------------------------------------------------------------

    def observe(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.request_stop("Deleted")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            log.info("pod %s: stopping (%s)", self.key, reason)
            self.stop_reason = reason
            self._stop.set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return max(0.0, min(float(grace), self.ctx.max_grace))

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("pod %s: starting (uid %s)", self.key, self.uid)
        self.pod_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.pod_dir / "tmp").mkdir(exist_ok=True)
        helpers: list[asyncio.Task[None]] = []
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            helpers.append(asyncio.create_task(self._deadline(float(deadline))))
        try:
            setup = PodSetup(
                self.ctx.kube,
                self.pod,
                self.ctx.node_name,
                self.pod_dir,
                self.ctx.workdir,
                self.ctx.service_env,
            )
            plans = await self._prepare(setup)
            if plans is not None:
                helpers.append(asyncio.create_task(self._refresh_tokens(setup)))
                await self._run_containers(plans)
        except asyncio.CancelledError:
            self._kill_all()
            raise
        except Exception as exc:
            log.exception("pod %s: agent error", self.key)
            self._failed_setup = True
            self._message = f"node agent error: {type(exc).__name__}: {exc}"[:1000]
        finally:
            self._kill_all()
            for task in helpers:
                task.cancel()
        await self._finish()

    async def _deadline(self, seconds: float) -> None:
        """spec.activeDeadlineSeconds counts from the pod's startTime (as the kubelet)."""
        await asyncio.sleep(max(0.0, seconds))
        self.request_stop("DeadlineExceeded")

    async def _refresh_tokens(self, setup: PodSetup) -> None:
        while (after := setup.token_refresh_after()) is not None:
            await asyncio.sleep(after)
            for tok in setup.tokens:
                try:
                    await setup.write_token(tok)
                except (ConfigError, ApiError, aiohttp.ClientError, OSError) as exc:
                    log.warning("pod %s: token refresh failed: %s", self.key, exc)

    async def _prepare(self, setup: PodSetup) -> dict[str, ContainerPlan] | None:
        delay = 0.2
        while True:
            try:
                await setup.materialise()
                plans = {}
                for c in self._spec_list("initContainers") + self._spec_list("containers"):
                    plans[c["name"]] = await setup.plan(c)
                self._prepared = True
                return plans
            except ConfigError as exc:
                if exc.permanent:
                    log.warning("pod %s: cannot run: %s", self.key, exc)
                    self._failed_setup = True
                    self._message = str(exc)
                    return None
                await self._waiting("CreateContainerConfigError", str(exc))
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                await self._waiting("ContainerCreating", f"preparing the pod: {exc}")
            if await self._stopped_within(delay):
                return None
            delay = min(delay * 2, 2.0)

    async def _waiting(self, reason: str, message: str) -> None:
        if message != self._last_waiting:
            log.info("pod %s: waiting: %s", self.key, message)
            self._last_waiting = message
            for c in self._spec_list("initContainers") + self._spec_list("containers"):
                self._states[c["name"]] = {"waiting": {"reason": reason, "message": message}}
            await self._push()

    async def _run_containers(self, plans: dict[str, ContainerPlan]) -> None:
        for c in self._spec_list("initContainers"):
            code = await self._run_container(plans[c["name"]], init=True)
            if code != 0:
                return
        self._initialized = True
        mains = [plans[c["name"]] for c in self._spec_list("containers")]
        await asyncio.gather(*(self._run_container(p, init=False) for p in mains))

    async def _run_container(self, plan: ContainerPlan, *, init: bool) -> int | None:
        if self._stop.is_set():
            return None
        started = now_rfc3339()
        try:
            argv = launcher_argv(plan)
            with plan.log_path.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=plan.env,
                    cwd=plan.cwd,
                    start_new_session=True,
                )
        except OSError as exc:
            self._terminated(plan.name, 128, "StartError", str(exc), started, None)
            await self._push()
            return 128
        (self.pod_dir / f"{plan.name}.pid").write_text(f"{proc.pid}\n")
        self._procs[plan.name] = proc
        log.info("pod %s: container %s running (pid %d)", self.key, plan.name, proc.pid)
        self._states[plan.name] = {
            "running": {"startedAt": started},
            "containerID": f"devenv://{proc.pid}",
        }
        if not init:
            self._phase = "Running"
        await self._push()
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not waiter.done():
            await self._terminate(proc)
        await waiter
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the container's leftovers die with it
        self._procs.pop(plan.name, None)
        code = _exit_code(proc.returncode if proc.returncode is not None else -9)
        reason = "Completed" if code == 0 else "Error"
        if code != 0 and self.stop_reason == "DeadlineExceeded":
            reason = "DeadlineExceeded"
        message = read_termination_message(plan, code)
        self._terminated(plan.name, code, reason, message, started, proc.pid)
        log.info("pod %s: container %s exited %d (%s)", self.key, plan.name, code, reason)
        if init or self._procs:
            await self._push()
        return code

    def _terminated(
        self, name: str, code: int, reason: str, message: str, started: str, pid: int | None
    ) -> None:
        state: Obj = {"exitCode": code, "reason": reason, "startedAt": started}
        state["finishedAt"] = now_rfc3339()
        if message:
            state["message"] = message
        self._states[name] = {"terminated": state}
        if pid is not None:
            self._states[name]["containerID"] = f"devenv://{pid}"

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self._grace())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _finish(self) -> None:
        codes: list[int] = []
        for c in self._spec_list("initContainers") + self._spec_list("containers"):
            state = self._states.get(c["name"], {})
            if "terminated" not in state:
                self._states[c["name"]] = {"terminated": {**UNKNOWN, "finishedAt": now_rfc3339()}}
            codes.append(int(self._states[c["name"]]["terminated"]["exitCode"]))
        ok = self._initialized and not self._failed_setup and all(c == 0 for c in codes)
        self._phase = "Succeeded" if ok else "Failed"
        if self.stop_reason == "DeadlineExceeded" and not ok:
            self._reason, self._message = "DeadlineExceeded", DEADLINE_MESSAGE
        log.info("pod %s: %s", self.key, self._phase)
        await self._push(final=True)
        if self.stop_reason == "Deleted" or self.pod["metadata"].get("deletionTimestamp"):
            await force_delete(self.ctx.kube, self.pod)

    # -- status ------------------------------------------------------------------------------

    def _cond(self, ctype: str, ok: bool, reason: str = "") -> Obj:
        status = "True" if ok else "False"
        prev = self._conds.get(ctype)
        when = prev[2] if prev and prev[0] == status else now_rfc3339()
        self._conds[ctype] = (status, reason, when)
        out: Obj = {"type": ctype, "status": status, "lastTransitionTime": when}
        if reason:
            out["reason"] = reason
        return out

    def _container_status(self, c: Obj, init: bool) -> Obj:
        name = c["name"]
        waiting = "PodInitializing" if not init and not self._initialized else "ContainerCreating"
        state = self._states.get(name) or {"waiting": {"reason": waiting}}
        running = "running" in state
        status: Obj = {
            "name": name,
            "image": c.get("image", ""),
            "imageID": "",
            "ready": running and not init,
            "started": running,
            "restartCount": 0,
            "state": {k: v for k, v in state.items() if k != "containerID"},
        }
        if "containerID" in state:
            status["containerID"] = state["containerID"]
        return status

    def _status_body(self) -> Obj:
        mains = self._spec_list("containers")
        inits = self._spec_list("initContainers")
        terminal = self._phase in TERMINAL
        ready = self._phase == "Running" and all(
            "running" in self._states.get(c["name"], {}) for c in mains
        )
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: Obj = {
            "phase": self._phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self._start_time,
            "conditions": [
                self._cond("PodReadyToStartContainers", self._prepared),
                self._cond(
                    "Initialized",
                    self._initialized,
                    "" if self._initialized else "ContainersNotInitialized",
                ),
                self._cond("Ready", ready, "" if ready else not_ready),
                self._cond("ContainersReady", ready, "" if ready else not_ready),
                self._cond("PodScheduled", True),
            ],
            "containerStatuses": [self._container_status(c, False) for c in mains],
        }
        if inits:
            status["initContainerStatuses"] = [self._container_status(c, True) for c in inits]
        if self._reason:
            status["reason"] = self._reason
        if self._message and terminal:
            status["message"] = self._message
        return status

    async def _push(self, *, final: bool = False) -> None:
        """Write the status. The final one is retried until the apiserver takes it (it is what
        the Job controller waits for); intermediate ones are best effort."""
        async with self._push_lock:
            body = {"status": self._status_body()}
            path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status"
            await _retrying(
                lambda: self.ctx.kube.request("PATCH", path, body, content_type=SMP),
                what=f"pod {self.key}: status update",
                attempts=None if final else 2,
                on_404=lambda: self.request_stop("Deleted"),
            )


async def _retrying(
    call: Callable[[], Awaitable[object]],
    *,
    what: str,
    attempts: int | None,
    on_404: Callable[[], None] | None = None,
    ok_statuses: tuple[int, ...] = (),
) -> None:
    """Retry transport errors, 5xx, 409 and 429 with backoff (0.1 s doubling, capped at 5 s);
    ``attempts=None`` retries until success (cancellation ends it)."""
    attempt = 0
    while True:
        try:
            await call()
            return
        except ApiError as exc:
            if exc.status == 404 and on_404 is not None:
                on_404()
                return
            if exc.status in ok_statuses:
                return
            if exc.status < 500 and exc.status not in (409, 429):
                log.error("%s rejected: %s", what, exc)
                return
            log.warning("%s failed: %s", what, exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("%s failed: %s", what, exc)
        attempt += 1
        if attempts is not None and attempt >= attempts:
            return
        await asyncio.sleep(min(0.1 * 2**attempt, 5.0))


async def force_delete(kube: KubeClient, pod: Obj) -> None:
    """What the kubelet does once a deleted pod's containers are gone: delete it with grace 0."""
    meta = pod["metadata"]
    body: Obj = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": meta["uid"]},
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
    await _retrying(
        lambda: kube.request("DELETE", path, body),
        what=f"pod {pod_key(pod)}: delete",
        attempts=None,
        ok_statuses=(404, 409),
    )
    log.info("pod %s: deleted (grace 0)", pod_key(pod))


async def abandon(ctx: AgentContext, pod: Obj) -> None:
    """A pod bound to this node whose processes this agent never ran or lost (agent restart):
    report its containers as ContainerStatusUnknown and the pod Failed, then finish deletion."""
    runner = PodRunner(ctx, pod)
    runner._failed_setup = True
    runner._message = "the local node agent restarted and lost the pod's processes"
    if pod["metadata"].get("deletionTimestamp"):
        runner.stop_reason = "Deleted"
    await runner._finish()
