"""The status the local node agent reports for a pod (part of ``devenv.nodeagent``).

Guarantees:

* Status: Pending while preparing / init; Running with PodScheduled,
  PodReadyToStartContainers, Initialized, ContainersReady, Ready, startTime and
  ``containerStatuses[].state.running``; then Succeeded (all exit 0) or Failed with
  ``state.terminated {exitCode, reason Completed|Error|DeadlineExceeded|StartError, message,
  startedAt, finishedAt}``; the message is the termination-message file (max 4096 bytes), or
  with FallbackToLogsOnError, an empty file and a failure, the log tail (80 lines / 2048 bytes)
  (read by ``devenv.nodeagent_spec.read_termination_message``).
* A container that never terminated when the pod ends is reported terminated with
  ContainerStatusUnknown (exit 137); a pod stopped for its deadline that did not succeed is
  Failed with reason DeadlineExceeded and the kubelet's message.
* Pod and host IPs are 127.0.0.1; a condition's lastTransitionTime changes only when its
  status does. Building the status is pure: writing it is the runner's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devenv.nodeagent_kube import Obj, now_rfc3339

TERMINAL = ("Succeeded", "Failed")
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
UNKNOWN = {
    "exitCode": 137,
    "reason": "ContainerStatusUnknown",
    "message": "The container could not be located when the pod was terminated",
}


@dataclass
class PodStatus:
    """One pod's status as it runs; ``body`` renders it for pods/status."""

    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    prepared: bool = False
    initialized: bool = False
    start_time: str = field(default_factory=now_rfc3339)
    states: dict[str, Obj] = field(default_factory=dict)  # container name -> containerStatus
    # condition type -> (status, reason, lastTransitionTime)
    _conds: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def terminated(
        self, name: str, code: int, reason: str, message: str, started: str, pid: int | None
    ) -> None:
        state: Obj = {"exitCode": code, "reason": reason, "startedAt": started}
        state["finishedAt"] = now_rfc3339()
        if message:
            state["message"] = message
        self.states[name] = {"terminated": state}
        if pid is not None:
            self.states[name]["containerID"] = f"devenv://{pid}"

    def conclude(self, containers: list[Obj], *, failed_setup: bool, deadline: bool) -> None:
        """The terminal phase: Succeeded if initialised, set up and every container exited 0;
        containers that never terminated become ContainerStatusUnknown."""
        codes: list[int] = []
        for c in containers:
            state = self.states.get(c["name"], {})
            if "terminated" not in state:
                self.states[c["name"]] = {"terminated": {**UNKNOWN, "finishedAt": now_rfc3339()}}
            codes.append(int(self.states[c["name"]]["terminated"]["exitCode"]))
        ok = self.initialized and not failed_setup and all(c == 0 for c in codes)
        self.phase = "Succeeded" if ok else "Failed"
        if deadline and not ok:
            self.reason, self.message = "DeadlineExceeded", DEADLINE_MESSAGE

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
        waiting = "PodInitializing" if not init and not self.initialized else "ContainerCreating"
        state = self.states.get(name) or {"waiting": {"reason": waiting}}
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

    def body(self, inits: list[Obj], mains: list[Obj]) -> Obj:
        """The pod's ``status`` for these init containers and containers."""
        terminal = self.phase in TERMINAL
        ready = self.phase == "Running" and all(
            "running" in self.states.get(c["name"], {}) for c in mains
        )
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: Obj = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                self._cond("PodReadyToStartContainers", self.prepared),
                self._cond(
                    "Initialized",
                    self.initialized,
                    "" if self.initialized else "ContainersNotInitialized",
                ),
                self._cond("Ready", ready, "" if ready else not_ready),
                self._cond("ContainersReady", ready, "" if ready else not_ready),
                self._cond("PodScheduled", True),
            ],
            "containerStatuses": [self._container_status(c, False) for c in mains],
        }
        if inits:
            status["initContainerStatuses"] = [self._container_status(c, True) for c in inits]
        if self.reason:
            status["reason"] = self.reason
        if self.message and terminal:
            status["message"] = self.message
        return status
