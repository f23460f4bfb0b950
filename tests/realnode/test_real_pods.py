"""The product as users run it: the shipped Deployment from the image on a real kubelet, and
executor Jobs as real container pods in a ``restricted`` namespace.

Each test asserts what only a real node can show: the image has what the code imports, the
securityContext holds (read-only root, non-root, no capabilities), the in-cluster identity has
every verb it uses, limits and deadlines kill for real and are reported with the right reason,
the result arrives through the termination message, and ``kubectl logs`` is clean JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import boto3
from devenv.audit import refused
from devenv.storage import MOTO_REGION
from kubernetes_asyncio import client as k8s

from executor.report import Report
from tests.polling import until
from tests.realnode.conftest import (
    DEPLOYMENT,
    LEADER_LEASE,
    S3_ACCESS,
    S3_SECRET,
    SYSTEM_NS,
    Cluster,
    Tenant,
)

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def _job_pod(world: Cluster, namespace: str, job: str) -> dict[str, Any]:
    pods = world.kubectl_json("-n", namespace, "get", "pods", "-l", f"job-name={job}")
    assert pods["items"], f"no pod of Job {job}"
    pod: dict[str, Any] = pods["items"][0]
    return pod


def _record_job(record: dict[str, Any]) -> str:
    job = (record.get("status") or {}).get("jobName") or ""
    assert job, f"record {record['metadata']['name']} names no Job: {record.get('status')}"
    return str(job)


async def _leader(api: k8s.ApiClient) -> str:
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEADER_LEASE, SYSTEM_NS)
    return str(lease.spec.holder_identity or "")


async def test_controller_runs_as_a_deployment_with_one_leader(
    realnode_cluster: Cluster, rn_api: k8s.ApiClient
) -> None:
    pods = realnode_cluster.kubectl_json(
        "-n", SYSTEM_NS, "get", "pods", "-l", "app.kubernetes.io/component=controller"
    )["items"]
    assert len(pods) == 2
    node = realnode_cluster.node.node_name
    for pod in pods:
        assert pod["spec"]["nodeName"] == node
        assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    leader = await until(lambda: _leader(rn_api), timeout=60, what="a leader")
    assert leader in {p["metadata"]["name"] for p in pods}


async def test_scheduled_backup_runs_as_a_real_restricted_pod(tenant: Tenant) -> None:
    await tenant.create_cluster("sched", schedule="* * * * *")
    record = await tenant.finished("sched", timeout=150)
    status = record["status"]
    assert status["phase"] == "Succeeded", status
    pod = _job_pod(tenant.world, tenant.namespace, _record_job(record))
    assert pod["spec"]["nodeName"] == tenant.world.node.node_name
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    # The result came through the termination message, and the record says what it says.
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    report = Report.from_json(term["message"])
    assert report.sha256 == status["sha256"] and report.key == status["key"]
    s3 = boto3.client(
        "s3",
        endpoint_url=tenant.world.s3.endpoint,
        region_name=MOTO_REGION,
        aws_access_key_id=S3_ACCESS,
        aws_secret_access_key=S3_SECRET,
    )
    head = s3.head_object(Bucket=tenant.bucket, Key=status["key"])
    assert head["ContentLength"] == int(status["size"]) > 0
    await tenant.patch_cluster("sched", {"spec": {"backup": {"suspend": True}}})


async def test_kubectl_trigger_and_logs_are_clean_json(tenant: Tenant) -> None:
    await tenant.create_cluster("manual")
    tenant.trigger("manual")
    record = await tenant.finished("manual")
    assert record["status"]["phase"] == "Succeeded", record["status"]
    job = _record_job(record)
    logs = tenant.world.kubectl("-n", tenant.namespace, "logs", f"job/{job}")
    lines = [ln for ln in logs.splitlines() if ln.strip()]
    assert lines, "the executor pod logged nothing"
    events = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) for e in events)
    # stderr: structured events; stdout: the one result report (also the termination message)
    reports = [e for e in events if "event" not in e]
    assert [r["outcome"] for r in reports] == ["succeeded"], reports
    assert any(e.get("event") == "snapshot committed" for e in events), events
    for secret in (S3_SECRET, tenant.world.openbao.root_token):
        assert secret not in logs
    assert "eyJ" not in logs  # no JWT (the projected token or an OpenBao token)
    assert S3_SECRET not in tenant.world.controller_logs()


async def test_too_small_memory_limit_is_recorded_as_oomkilled(tenant: Tenant) -> None:
    mem = {"memory": "24Mi"}
    await tenant.create_cluster("oom", executor={"resources": {"limits": mem, "requests": mem}})
    tenant.trigger("oom")
    record = await tenant.finished("oom")
    assert record["status"]["phase"] == "Failed"
    assert record["status"]["failureReason"] == "OOMKilled", record["status"]


async def test_run_past_its_deadline_is_recorded_as_deadline_exceeded(tenant: Tenant) -> None:
    # 1m CPU (1% of a core): the interpreter cannot even import the executor in 30 s.
    cpu = {"cpu": "1m"}
    await tenant.create_cluster(
        "slow",
        executor={"activeDeadlineSeconds": 30, "resources": {"limits": cpu, "requests": cpu}},
    )
    tenant.trigger("slow")
    record = await tenant.finished("slow", timeout=150)
    assert record["status"]["phase"] == "Failed"
    assert record["status"]["failureReason"] == "DeadlineExceeded", record["status"]


async def test_leader_failover_by_deleting_the_leader_pod(
    tenant: Tenant, rn_api: k8s.ApiClient
) -> None:
    old = await until(lambda: _leader(rn_api), timeout=60, what="a leader")
    tenant.world.kubectl("-n", SYSTEM_NS, "delete", "pod", old, "--wait=false")

    async def new_leader() -> str | None:
        now = await _leader(rn_api)
        return now if now and now != old else None

    new = await until(new_leader, timeout=90, what="another replica takes the lead")
    assert new != old
    await tenant.create_cluster("failover")
    tenant.trigger("failover")
    record = await tenant.finished("failover")
    assert record["status"]["phase"] == "Succeeded", record["status"]
    tenant.world.kubectl(
        "-n", SYSTEM_NS, "rollout", "status", "deployment/openbao-backup-controller",
        "--timeout=180s",
    )  # fmt: skip


async def test_plugin_follows_a_real_executor_pod(tenant: Tenant) -> None:
    """``kubectl openbao-backup backup --wait`` follows the executor pod's log through the
    kubelet (the node agent lane cannot: it serves no logs)."""
    await tenant.create_cluster("plugged")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env["KUBECONFIG"] = str(tenant.world.cp.kubeconfig)
    done = await asyncio.to_thread(
        subprocess.run,
        [str(tenant.world.cp.kubectl), "openbao-backup", "backup", "plugged", "-n",
         tenant.namespace, "--wait"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "streamed " in done.stdout and "/s)" in done.stdout, done.stdout
    assert " Succeeded: realnode/" in done.stdout, done.stdout


def test_the_shipped_rbac_never_refused_the_controller(realnode_cluster: Cluster) -> None:
    """Last in the lane: every request the controller made (from any replica, the deleted
    leader's too) was allowed by the chart's RBAC. A verb the controller uses but the chart
    lacks shows here even where the controller copes with the refusal (e.g. a finalizer it
    cannot remove), from the apiserver's audit log."""
    world = realnode_cluster
    template = world.kubectl_json("-n", SYSTEM_NS, "get", "deployment", DEPLOYMENT)
    account = template["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{SYSTEM_NS}:{account}"
    assert refused(world.cp.workdir, users={user}) == []
