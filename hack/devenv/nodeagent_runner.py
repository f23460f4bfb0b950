"""Run one bound pod as local processes and report it like a kubelet (part of
``devenv.nodeagent``).

Guarantees:

* Running: the pod is prepared first (volumes, then every container's plan); missing
  secrets/configmaps/keys keep its containers waiting with CreateContainerConfigError and are
  retried (0.2 s doubling to 2 s) until the pod is stopped; a permanent error fails the pod.
  Then init containers run one after another, then all containers concurrently (processes:
  ``devenv.nodeagent_launch``). ``restartPolicy`` is always treated as Never. The PID is
  written to ``<pod dir>/<container>.pid``; stdout+stderr go to ``<pod dir>/<container>.log``.
  Projected service account tokens are refreshed at 80% of their lifetime while it runs.
* ``spec.activeDeadlineSeconds`` is enforced from the pod's start: the processes are stopped,
  the pod Failed with reason DeadlineExceeded. A deleted pod (deletionTimestamp) has its
  processes stopped, gets its terminal status and is then deleted with gracePeriodSeconds=0,
  as a kubelet would (the Job controller still removes its ``batch.kubernetes.io/job-tracking``
  finalizer). A pod found Running on this node that this agent process never ran (agent
  restart) is reported Failed with ContainerStatusUnknown (exit 137).
* Stopping: a stop request (deletion, deadline, agent shutdown) stops each running container
  (grace = min(pod grace, ``--max-grace``); see ``devenv.nodeagent_launch``); when the pod
  ends, whatever is left of its processes is SIGKILLed.
* An unexpected error in the agent fails the pod with a "node agent error" message. The status
  is built by ``devenv.nodeagent_status`` and written by ``devenv.nodeagent_writes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devenv.nodeagent_kube import ApiError, KubeClient, Obj, now_rfc3339
from devenv.nodeagent_launch import exit_code, kill_group, start_process, terminate
from devenv.nodeagent_spec import ConfigError, ContainerPlan, PodSetup, read_termination_message
from devenv.nodeagent_status import PodStatus
from devenv.nodeagent_writes import force_delete, patch_status

log = logging.getLogger("nodeagent")


@dataclass(frozen=True)
class AgentContext:
    kube: KubeClient
    node_name: str
    workdir: Path
    max_grace: float
    service_env: dict[str, str]


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
        self.status = PodStatus()
        self._failed_setup = False
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
            self.status.message = f"node agent error: {type(exc).__name__}: {exc}"[:1000]
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
                self.status.prepared = True
                return plans
            except ConfigError as exc:
                if exc.permanent:
                    log.warning("pod %s: cannot run: %s", self.key, exc)
                    self._failed_setup = True
                    self.status.message = str(exc)
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
                self.status.states[c["name"]] = {"waiting": {"reason": reason, "message": message}}
            await self._push()

    async def _run_containers(self, plans: dict[str, ContainerPlan]) -> None:
        for c in self._spec_list("initContainers"):
            code = await self._run_container(plans[c["name"]], init=True)
            if code != 0:
                return
        self.status.initialized = True
        mains = [plans[c["name"]] for c in self._spec_list("containers")]
        await asyncio.gather(*(self._run_container(p, init=False) for p in mains))

    async def _run_container(self, plan: ContainerPlan, *, init: bool) -> int | None:
        if self._stop.is_set():
            return None
        started = now_rfc3339()
        try:
            proc = await start_process(plan)
        except OSError as exc:
            self.status.terminated(plan.name, 128, "StartError", str(exc), started, None)
            await self._push()
            return 128
        (self.pod_dir / f"{plan.name}.pid").write_text(f"{proc.pid}\n")
        self._procs[plan.name] = proc
        log.info("pod %s: container %s running (pid %d)", self.key, plan.name, proc.pid)
        self.status.states[plan.name] = {
            "running": {"startedAt": started},
            "containerID": f"devenv://{proc.pid}",
        }
        if not init:
            self.status.phase = "Running"
        await self._push()
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not waiter.done():
            await terminate(proc, self._grace())
        await waiter
        kill_group(proc.pid)  # the container's leftovers die with it
        self._procs.pop(plan.name, None)
        code = exit_code(proc.returncode if proc.returncode is not None else -9)
        reason = "Completed" if code == 0 else "Error"
        if code != 0 and self.stop_reason == "DeadlineExceeded":
            reason = "DeadlineExceeded"
        message = read_termination_message(plan, code)
        self.status.terminated(plan.name, code, reason, message, started, proc.pid)
        log.info("pod %s: container %s exited %d (%s)", self.key, plan.name, code, reason)
        if init or self._procs:
            await self._push()
        return code

    def _kill_all(self) -> None:
        for proc in list(self._procs.values()):
            kill_group(proc.pid)

    async def _finish(self) -> None:
        self.status.conclude(
            self._spec_list("initContainers") + self._spec_list("containers"),
            failed_setup=self._failed_setup,
            deadline=self.stop_reason == "DeadlineExceeded",
        )
        log.info("pod %s: %s", self.key, self.status.phase)
        await self._push(final=True)
        if self.stop_reason == "Deleted" or self.pod["metadata"].get("deletionTimestamp"):
            await force_delete(self.ctx.kube, self.pod)

    # -- status ------------------------------------------------------------------------------

    async def _push(self, *, final: bool = False) -> None:
        """Write the status. The final one is retried until the apiserver takes it (it is what
        the Job controller waits for); intermediate ones are best effort."""
        async with self._push_lock:
            await patch_status(
                self.ctx.kube,
                self.ns,
                self.name,
                self.status.body(self._spec_list("initContainers"), self._spec_list("containers")),
                final=final,
                on_404=lambda: self.request_stop("Deleted"),
            )


async def abandon(ctx: AgentContext, pod: Obj) -> None:
    """A pod bound to this node whose processes this agent never ran or lost (agent restart):
    report its containers as ContainerStatusUnknown and the pod Failed, then finish deletion."""
    runner = PodRunner(ctx, pod)
    runner._failed_setup = True
    runner.status.message = "the local node agent restarted and lost the pod's processes"
    if pod["metadata"].get("deletionTimestamp"):
        runner.stop_reason = "Deleted"
    await runner._finish()
