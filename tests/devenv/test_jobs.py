"""The local node agent runs Job pods as local processes, and the REAL Job controller of the
local control plane sees them complete, fail, hit deadlines and get deleted."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from devenv.controlplane import ControlPlane
from devenv.nodeagent import LOCAL_NODE_LABEL, NodeAgentProcess
from devenv.nodeagent_kube import ApiError, KubeClient, Obj, load_kubeconfig
from devenv.nodeagent_spec import INHERITED_ENV

pytestmark = pytest.mark.integration

T = TypeVar("T")
SLEEP_FOREVER = "import time; time.sleep(600)"


# -- helpers -------------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 60.0, what: str
) -> T:
    """Poll ``probe`` until it returns something truthy (with a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes (the agent reaps its children)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload))
    return claims


def container(command: list[str], **extra: Any) -> Obj:
    return {"name": "main", "image": "openbao-backup:dev", "command": command, **extra}


def job(name: str, containers: list[Obj], **spec: Any) -> Obj:
    pod_spec = {"restartPolicy": "Never", "containers": containers}
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {LOCAL_NODE_LABEL: "true"}}, "spec": pod_spec},
            **spec,
        },
    }


class Cluster:
    def __init__(self, kube: KubeClient, ns: str, agent: NodeAgentProcess) -> None:
        self.kube, self.ns, self.agent = kube, ns, agent

    async def create_job(self, obj: Obj) -> Obj:
        return await self.kube.request("POST", f"/apis/batch/v1/namespaces/{self.ns}/jobs", obj)

    async def job_condition(self, name: str, timeout: float = 60.0) -> Obj:
        async def probe() -> Obj | None:
            j = await self.kube.request("GET", f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}")
            for cond in (j.get("status") or {}).get("conditions") or []:
                if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                    return dict(cond)
            return None

        return await eventually(probe, timeout=timeout, what=f"job {name} to finish")

    async def job_pod(self, name: str) -> Obj:
        async def probe() -> Obj | None:
            pods = await self.kube.request(
                "GET",
                f"/api/v1/namespaces/{self.ns}/pods",
                params={"labelSelector": f"batch.kubernetes.io/job-name={name}"},
            )
            items: list[Obj] = pods.get("items") or []
            return items[0] if items else None

        return await eventually(probe, what=f"a pod of job {name}")

    async def pod(self, name: str) -> Obj | None:
        return await self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/pods/{name}")

    def pod_dir(self, pod: Obj) -> Path:
        meta = pod["metadata"]
        return self.agent.pod_dir(self.ns, meta["name"], meta["uid"])

    async def running_pid(self, pod: Obj, container_name: str = "main") -> int:
        pid_file = self.pod_dir(pod) / f"{container_name}.pid"

        async def probe() -> int | None:
            current = await self.pod(pod["metadata"]["name"])
            if not current or (current.get("status") or {}).get("phase") != "Running":
                return None
            return int(pid_file.read_text()) if pid_file.exists() else None

        pid = await eventually(probe, what=f"pod {pod['metadata']['name']} running")
        assert pid_alive(pid)
        return pid

    async def process_gone(self, pid: int) -> None:
        async def probe() -> bool:
            return not pid_alive(pid)

        await eventually(probe, timeout=30, what=f"process {pid} to exit")


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def cluster(
    control_plane: ControlPlane, node_agent: NodeAgentProcess, namespace: str
) -> AsyncIterator[Cluster]:
    kube = KubeClient(load_kubeconfig(control_plane.kubeconfig))
    try:
        # Pods are rejected until the namespace's default ServiceAccount exists.
        await eventually(
            lambda: kube.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            what="the default ServiceAccount",
        )
        yield Cluster(kube, namespace, node_agent)
        node_agent.check_alive()
    finally:
        await kube.close()


# -- tests ---------------------------------------------------------------------------------------


async def test_job_completes(cluster: Cluster) -> None:
    await cluster.create_job(job("ok", [container(["python", "-c", "print('hello from a job')"])]))
    cond = await cluster.job_condition("ok")
    assert cond["type"] == "Complete"
    pod = await cluster.job_pod("ok")
    assert pod["spec"]["nodeName"] == cluster.agent.node_name
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert "hello from a job" in (cluster.pod_dir(pod) / "main.log").read_text()


async def test_job_fails_with_termination_message(cluster: Cluster) -> None:
    script = (
        "import os, sys\n"
        "open(os.environ['MSG_PATH'], 'w').write('restore failed: snapshot checksum mismatch')\n"
        "sys.exit(3)\n"
    )
    spec = container(
        ["python3", "-c", script],
        env=[{"name": "MSG_PATH", "value": "/run/obb/termination"}],
        terminationMessagePath="/run/obb/termination",
    )
    await cluster.create_job(job("fails", [spec]))
    cond = await cluster.job_condition("fails")
    assert cond["type"] == "Failed"
    pod = await cluster.job_pod("fails")
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3
    assert term["reason"] == "Error"
    assert term["message"] == "restore failed: snapshot checksum mismatch"


async def test_fallback_to_logs_on_error(cluster: Cluster) -> None:
    script = "import sys; print('last words'); sys.exit(1)"
    spec = container(["python", "-c", script], terminationMessagePolicy="FallbackToLogsOnError")
    await cluster.create_job(job("logs", [spec]))
    assert (await cluster.job_condition("logs"))["type"] == "Failed"
    pod = await cluster.job_pod("logs")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 1
    assert term["message"].strip() == "last words"


async def test_env_secret_volume_and_projected_token(cluster: Cluster) -> None:
    ns = cluster.ns

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    await cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": b64("s3cr3t"), "access-key": b64("AKIA-test")},
        },
    )
    await cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"region": "eu-west-1", "bucket": "backups"},
        },
    )
    script = (
        "import json, os, sys\n"
        "out, creds = sys.argv[1], sys.argv[2].split('=', 1)[1]\n"
        "keys = ['PASSWORD', 'REGION', 'POD_NAME', 'POD_NS', 'POD_UID', 'NODE', 'SA', 'POD_IP',\n"
        "        'APP', 'CFG_bucket', 'CFG_region', 'GREETING', 'DEVENV_POD_ROOT', 'MISSING']\n"
        "report = {k: os.environ.get(k) for k in keys}\n"
        "report['env_keys'] = sorted(os.environ)\n"
        "report['access_key'] = open(os.path.join(creds, 'keys/access')).read()\n"
        "report['mode'] = oct(os.stat(os.path.join(creds, 'keys/access')).st_mode & 0o777)\n"
        "report['token'] = open(os.environ['TOKEN_FILE']).read()\n"
        "report['ns_file'] = open('/var/run/secrets/openbao/namespace'.replace(\n"
        "    '/var/run/secrets/openbao', os.path.dirname(os.environ['TOKEN_FILE']))).read()\n"
        "json.dump(report, open(out, 'w'))\n"
    )
    env: list[Obj] = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}}},
        {
            "name": "MISSING",
            "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}},
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME) in $(REGION) $$(KEPT)"},
        {"name": "TOKEN_FILE", "value": "/var/run/secrets/openbao/token"},
    ]
    spec = container(
        ["python", "-c", script, "/out/report.json", "--creds=/etc/creds"],
        env=env,
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        volumeMounts=[
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "token", "mountPath": "/var/run/secrets/openbao", "readOnly": True},
            {"name": "out", "mountPath": "/out"},
        ],
    )
    volumes = [
        {
            "name": "creds",
            "secret": {
                "secretName": "creds",
                "items": [{"key": "access-key", "path": "keys/access", "mode": 0o400}],
            },
        },
        {
            "name": "token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": "openbao",
                            "expirationSeconds": 600,
                            "path": "token",
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ]
            },
        },
        {"name": "out", "emptyDir": {}},
    ]
    obj = job("env", [spec], pod={"volumes": volumes})
    obj["spec"]["template"]["metadata"]["labels"]["app"] = "obb-test"
    await cluster.create_job(obj)
    cond = await cluster.job_condition("env")
    pod = await cluster.job_pod("env")
    assert cond["type"] == "Complete", (cluster.pod_dir(pod) / "main.log").read_text()
    pod_dir = cluster.pod_dir(pod)
    report = json.loads((pod_dir / "volumes" / "out" / "report.json").read_text())
    meta = pod["metadata"]
    assert report["PASSWORD"] == "s3cr3t"
    assert report["REGION"] == "eu-west-1"
    assert report["MISSING"] is None
    assert (report["POD_NAME"], report["POD_NS"], report["POD_UID"]) == (
        meta["name"],
        ns,
        meta["uid"],
    )
    assert report["NODE"] == cluster.agent.node_name
    assert report["SA"] == "default"
    assert report["POD_IP"] == "127.0.0.1"
    assert report["APP"] == "obb-test"
    assert (report["CFG_bucket"], report["CFG_region"]) == ("backups", "eu-west-1")
    assert report["GREETING"] == f"hello {meta['name']} in eu-west-1 $(KEPT)"
    assert report["DEVENV_POD_ROOT"] == str(pod_dir)
    allowed = {
        *INHERITED_ENV,
        "LC_CTYPE",
        "HOSTNAME",
        "TMPDIR",
        "DEVENV_POD_ROOT",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "KUBERNETES_SERVICE_PORT_HTTPS",
        "KUBERNETES_PORT",
        "CFG_bucket",
        "CFG_region",
        *(e["name"] for e in env),
    }
    assert set(report["env_keys"]) <= allowed, set(report["env_keys"]) - allowed
    assert report["access_key"] == "AKIA-test"
    assert report["mode"] == "0o400"
    assert report["ns_file"] == ns
    claims = jwt_claims(report["token"])
    assert claims["aud"] == ["openbao"]
    assert claims["sub"] == f"system:serviceaccount:{ns}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": meta["name"], "uid": meta["uid"]}
    assert 590 <= claims["exp"] - claims["iat"] <= 610


async def test_job_deadline_kills_process(cluster: Cluster) -> None:
    """Job-level activeDeadlineSeconds: the Job controller deletes the pod; the agent stops
    the process and finalises the pod."""
    await cluster.create_job(
        job("deadline", [container(["python", "-c", SLEEP_FOREVER])], activeDeadlineSeconds=3)
    )
    pod = await cluster.job_pod("deadline")
    pid = await cluster.running_pid(pod)
    cond = await cluster.job_condition("deadline")
    assert (cond["type"], cond["reason"]) == ("Failed", "DeadlineExceeded")
    await cluster.process_gone(pid)


async def test_pod_deadline_is_enforced_by_agent(cluster: Cluster) -> None:
    """Pod-level spec.activeDeadlineSeconds: the agent kills the process and fails the pod."""
    await cluster.create_job(
        job("poddl", [container(["python", "-c", SLEEP_FOREVER])], pod={"activeDeadlineSeconds": 2})
    )
    pod = await cluster.job_pod("poddl")
    pid = await cluster.running_pid(pod)
    cond = await cluster.job_condition("poddl")
    assert cond["type"] == "Failed"
    await cluster.process_gone(pid)
    pod = await cluster.job_pod("poddl")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "DeadlineExceeded"
    assert term["exitCode"] == 128 + 15


async def test_deleting_running_pod_stops_process(cluster: Cluster) -> None:
    """A pod that ignores SIGTERM is SIGKILLed after its (short) grace period, then the agent
    deletes it with grace 0, as a kubelet would."""
    name = f"sleeper-{uuid.uuid4().hex[:6]}"
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    pod = await cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{cluster.ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {LOCAL_NODE_LABEL: "true"}},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [container(["python", "-c", script])],
            },
        },
    )
    pid = await cluster.running_pid(pod)
    await cluster.kube.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/pods/{name}")
    await cluster.process_gone(pid)

    async def pod_gone() -> bool:
        return await cluster.pod(name) is None

    await eventually(pod_gone, timeout=30, what=f"pod {name} to be removed")


async def test_deleting_job_stops_its_process(cluster: Cluster) -> None:
    await cluster.create_job(job("deljob", [container(["python", "-c", SLEEP_FOREVER])]))
    pod = await cluster.job_pod("deljob")
    pid = await cluster.running_pid(pod)
    await cluster.kube.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{cluster.ns}/jobs/deljob",
        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
    )
    await cluster.process_gone(pid)

    async def pod_gone() -> bool:
        try:
            return await cluster.pod(pod["metadata"]["name"]) is None
        except ApiError:
            return False

    await eventually(pod_gone, timeout=30, what="the job's pod to be removed")


async def test_parallel_job_with_init_container(cluster: Cluster) -> None:
    init = {
        "name": "prepare",
        "image": "openbao-backup:dev",
        "command": ["python", "-c", "import sys; open(sys.argv[1], 'w').write('ready')"],
        "args": ["/work/flag"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    main = container(
        [
            "python",
            "-c",
            "import sys, time; assert open(sys.argv[1]).read() == 'ready'; time.sleep(0.5)",
            "/work/flag",
        ],
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
    )
    obj = job(
        "par",
        [main],
        completions=3,
        parallelism=3,
        pod={"initContainers": [init], "volumes": [{"name": "work", "emptyDir": {}}]},
    )
    await cluster.create_job(obj)
    assert (await cluster.job_condition("par"))["type"] == "Complete"
    pods = await cluster.kube.request(
        "GET",
        f"/api/v1/namespaces/{cluster.ns}/pods",
        params={"labelSelector": "batch.kubernetes.io/job-name=par"},
    )
    assert len(pods["items"]) == 3
    for pod in pods["items"]:
        term = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
        assert term["reason"] == "Completed"
        assert pod["status"]["phase"] == "Succeeded"


async def test_missing_secret_is_retried(cluster: Cluster) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    script = "import os, sys; sys.exit(0 if os.environ['TOKEN'] == 'abc' else 1)"
    await cluster.create_job(job("late", [container(["python", "-c", script], env=env)]))
    pod = await cluster.job_pod("late")

    async def waiting_for_config() -> bool:
        current = await cluster.pod(pod["metadata"]["name"]) or {}
        for status in (current.get("status") or {}).get("containerStatuses") or []:
            if (status["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError":
                return True
        return False

    await eventually(waiting_for_config, what="CreateContainerConfigError")
    await cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{cluster.ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "late"},
            "stringData": {"token": "abc"},
        },
    )
    assert (await cluster.job_condition("late"))["type"] == "Complete"


async def test_missing_executable_is_start_error(cluster: Cluster) -> None:
    await cluster.create_job(job("noexe", [container(["no-such-program-xyz", "--help"])]))
    assert (await cluster.job_condition("noexe"))["type"] == "Failed"
    pod = await cluster.job_pod("noexe")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (128, "StartError")
    assert "not found" in term["message"]


async def test_agent_stop_kill_and_restart(
    cluster: Cluster, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """A second agent (own node and label value): SIGKILLing it takes its processes down
    (parent-death signal); its successor reports the lost pod Failed; a SIGTERM stops the
    running containers, fails their pods and marks the Node NotReady."""
    node = f"devenv-second-{uuid.uuid4().hex[:6]}"

    def second_agent() -> NodeAgentProcess:
        return NodeAgentProcess(
            kubeconfig=control_plane.kubeconfig,
            workdir=tmp_path / "agent",
            node_name=node,
            label_selector=f"{LOCAL_NODE_LABEL}=second",
        )

    async def sleeper(name: str) -> tuple[Obj, int]:
        pod = await cluster.kube.request(
            "POST",
            f"/api/v1/namespaces/{cluster.ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {LOCAL_NODE_LABEL: "second"}},
                "spec": {"restartPolicy": "Never", "containers": [container(["sleep", "600"])]},
            },
        )
        return pod, await Cluster(cluster.kube, cluster.ns, agent).running_pid(pod)

    async def phase_failed(name: str) -> Obj:
        async def probe() -> Obj | None:
            pod = await cluster.pod(name)
            return pod if pod and pod["status"].get("phase") == "Failed" else None

        return await eventually(probe, what=f"pod {name} Failed")

    agent = second_agent().start()
    try:
        _, lost_pid = await sleeper("lost")
        assert agent.server is not None
        agent.server.kill()
        await cluster.process_gone(lost_pid)

        agent = second_agent().start()
        pod = await phase_failed("lost")
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == (
            "ContainerStatusUnknown"
        )

        _, pid = await sleeper("stopped")
        agent.stop()
        await cluster.process_gone(pid)
        await phase_failed("stopped")
        node_obj = await cluster.kube.request("GET", f"/api/v1/nodes/{node}")
        ready = [c for c in node_obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "False"
    finally:
        agent.stop()
        await cluster.kube.request("DELETE", f"/api/v1/nodes/{node}")
