"""Restore drills end to end (issue 9, acceptance 6).

The real controller process, the node agent running each drill Job's pod as local processes
(the scratch OpenBao container's ``sh -c`` script with the ``bao`` of the venv, next to the
real executor in mode ``drill``), the session OpenBao and moto S3. A drill is asked for the
way a user would: ``kubectl annotate --overwrite openbaocluster <name>
backup.openbao.org/verify=<value>``.

* a backup writes the freshness marker to the live OpenBao and its manifest; a drill of it
  restores into the scratch server, unseals with the live cluster's key (a Secret), reads the
  marker back and passes: the record, the cluster's ``lastVerifiedBackup`` and condition
  ``RestoreVerified`` say so; the drill Job completes with both containers ended;
* an object whose bytes are another backup's (manifest rewritten to match, marker kept) passes
  every byte check and fails the drill with ``MarkerMismatch``: record, Warning event and the
  controller's ``openbao_backup_verification_failures_total{reason="MarkerMismatch"}``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from devenv.controlplane import ControlPlane
from devenv.nodeagent import NodeAgentProcess
from kubernetes_asyncio import client as k8s

from tests.e2e.conftest import JWT_MOUNT, Env, until
from tests.e2e.test_restore import backup_now, condition, event_reasons, kubectl
from tests.executor.harness import read_object, write_object

pytestmark = pytest.mark.integration

VERIFY_ANNOTATION = "backup.openbao.org/verify"
FAILURES = "openbao_backup_verification_failures_total"


# -- world ----------------------------------------------------------------------------------


def _bindable(port: int, *, reuse: bool = False) -> bool:
    """``port`` can be bound on 127.0.0.1; with ``reuse`` (SO_REUSEADDR, as Go listeners set
    it), closed connections in TIME_WAIT do not count, only a socket that still listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def drill_port() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (the scratch server's API and cluster
    ports), in the CRD's range 1024..65534."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if 1024 <= port <= 65533 and _bindable(port) and _bindable(port + 1):
            return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def marker_path(env: Env) -> str:
    return f"secret/data/obb-drill/{env.namespace}/marker"


def live_marker(env: Env) -> dict[str, Any]:
    """The marker as the live OpenBao holds it now."""
    return env.openbao.kv_get(f"obb-drill/{env.namespace}/marker")


async def drilled_cluster(env: Env, name: str) -> int:
    """A cluster with a freshness marker and restore drills; its drill port."""
    env.openbao.ensure_kv_mount("secret", version=2)
    policy = env.openbao.setup_marker_policy(
        name=f"drill-{env.namespace}", marker_path=marker_path(env)
    )
    role = f"drill-{env.namespace}"
    env.openbao.jwt_role(
        mount=JWT_MOUNT,
        role=role,
        subject=f"system:serviceaccount:{env.namespace}:default",
        audience="openbao",
        policy=policy,
    )
    await k8s.CoreV1Api(env.api).create_namespaced_secret(
        env.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="unseal-keys"),
            string_data={"keys": env.openbao.unseal_key + "\n"},
        ),
    )
    port = drill_port()
    await env.create_cluster(
        name,
        auth={"jwt": {"mount": JWT_MOUNT, "role": role, "audience": "openbao"}},
        marker={"path": marker_path(env), "kvVersion": 2},
        verify={
            "schedule": "0 3 * * *",
            "port": port,
            "unsealKeysSecretRef": {"name": "unseal-keys", "key": "keys"},
        },
    )
    return port


async def ask_for_drill(cp: ControlPlane, env: Env, cluster: str, value: str) -> None:
    """``kubectl -n <ns> annotate --overwrite openbaocluster <cluster> ...verify=<value>``."""
    await kubectl(
        cp,
        "-n",
        env.namespace,
        "annotate",
        "--overwrite",
        f"openbaocluster/{cluster}",
        f"{VERIFY_ANNOTATION}={value}",
    )


def verification(record: dict[str, Any] | None) -> dict[str, Any]:
    got: dict[str, Any] = ((record or {}).get("status") or {}).get("verification") or {}
    return got


async def drilled(env: Env, record: str, timeout: float = 120) -> dict[str, Any]:
    """The record's ``status.verification`` once its drill ended."""

    async def probe() -> dict[str, Any] | None:
        got = verification(await env.get("openbaobackups", record))
        return got if got.get("result") in ("Passed", "Partial", "Failed") else None

    found: dict[str, Any] = await until(
        probe, timeout=timeout, what=f"the drill of {record} to end"
    )
    return found


def manifest_of(env: Env, record: dict[str, Any]) -> dict[str, Any]:
    raw = read_object(
        "s3", endpoint=env.s3.endpoint, bucket=env.bucket, key=record["status"]["manifestKey"]
    )
    got: dict[str, Any] = json.loads(raw)
    return got


def pod_log(agent: NodeAgentProcess, env: Env, pod: str, container: str) -> str:
    """The container log of the local pod named ``pod`` or ``pod-*`` (a Job's pod)."""
    root = agent.workdir / "pods"
    for d in sorted(root.glob(f"{env.namespace}_{pod}*")):
        log = d / f"{container}.log"
        if log.exists():
            return log.read_text(errors="replace")[-3000:]
    return f"(no log for {pod}/{container} under {root})"


# -- 1. a drill passes -----------------------------------------------------------------------


async def test_drill_restores_the_backup_and_reads_the_marker_back(
    env: Env, control_plane: ControlPlane, node_agent: NodeAgentProcess
) -> None:
    port = await drilled_cluster(env, "bao")
    record = await backup_now(env, "bao", "for-drill")
    name = record["metadata"]["name"]

    # the marker is in the live OpenBao and in the record's manifest
    manifest = manifest_of(env, record)
    marker = manifest.get("marker")
    assert marker is not None, manifest
    assert marker["path"] == marker_path(env)
    assert marker["record"] == name
    assert live_marker(env) == {k: marker[k] for k in ("record", "time", "nonce")}

    await ask_for_drill(control_plane, env, "bao", "now")
    got = await drilled(env, name)
    job = f"{name}-drill"
    assert got["result"] == "Passed", (got, pod_log(node_agent, env, job, "executor"))
    assert got["markerMatched"] is True, got
    assert got["unsealed"] is True, got
    assert got["jobName"] == job

    async def cluster_verified() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        last = ((obj or {}).get("status") or {}).get("backup", {}).get("lastVerifiedBackup")
        ok = last and last.get("name") == name
        return obj if ok else None

    cluster = await until(cluster_verified, what="status.backup.lastVerifiedBackup")
    status = cluster["status"]
    assert status["backup"]["lastVerifiedBackup"]["result"] == "Passed"
    assert status["backup"]["lastHandledVerifyTrigger"] == "now"
    verified = condition(cluster, "RestoreVerified")
    assert verified is not None and verified["status"] == "True", status

    # the drill Job completed: both containers ended, the scratch server after the done file
    batch = k8s.BatchV1Api(env.api)

    async def completed() -> Any:
        j = await batch.read_namespaced_job(job, env.namespace)
        conds = {c.type: c.status for c in (j.status.conditions or [])}
        return j if conds.get("Complete") == "True" else None

    await until(completed, timeout=60, what=f"Job {job} Complete")
    pods = await k8s.CoreV1Api(env.api).list_namespaced_pod(
        env.namespace, label_selector=f"job-name={job}"
    )
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    pod = pods.items[0]
    assert pod.status.phase == "Succeeded"
    ended = {s.name: s.state.terminated for s in pod.status.container_statuses}
    assert set(ended) == {"executor", "openbao"}, ended
    for cname, term in ended.items():
        assert term is not None and term.exit_code == 0, (cname, term)
    server_log = pod_log(node_agent, env, pod.metadata.name, "openbao")
    assert "stopped after" in server_log and "done" in server_log, server_log
    free = _bindable(port, reuse=True) and _bindable(port + 1, reuse=True)
    assert free, "the scratch server still listens on its ports"

    async def announced() -> list[str] | None:
        reasons = [r for _, r, _ in await event_reasons(env, "OpenBaoBackup", name)]
        ok = "RestoreDrillStarted" in reasons and "RestoreDrillPassed" in reasons
        return reasons if ok else None

    await until(announced, timeout=30, what=f"RestoreDrillStarted and -Passed on {name}")


# -- 2. an object that is not its manifest's snapshot fails the drill -------------------------


async def test_drill_of_a_swapped_object_fails_with_marker_mismatch(
    env: Env, control_plane: ControlPlane, node_agent: NodeAgentProcess
) -> None:
    await drilled_cluster(env, "bao")
    a = await backup_now(env, "bao", "a")
    b = await backup_now(env, "bao", "b")
    a_name, b_name = a["metadata"]["name"], b["metadata"]["name"]
    manifest_a, manifest_b = manifest_of(env, a), manifest_of(env, b)
    assert manifest_a["marker"]["nonce"] != manifest_b["marker"]["nonce"]
    assert live_marker(env)["record"] == b_name  # B wrote the newer marker

    # A's object becomes B's valid snapshot; A's manifest gets B's byte facts, keeps A's marker
    where = {"endpoint": env.s3.endpoint, "bucket": env.bucket}
    write_object(
        "s3",
        key=a["status"]["key"],
        data=read_object("s3", key=b["status"]["key"], **where),
        **where,
    )
    forged = dict(manifest_a)
    for field in ("sha256", "size", "raftIndex", "raftTerm", "raftConfigurationIndex"):
        if field in manifest_b:
            forged[field] = manifest_b[field]
    write_object("s3", key=a["status"]["manifestKey"], data=json.dumps(forged).encode(), **where)

    before = env.metric(FAILURES, cluster="bao", reason="MarkerMismatch") or 0.0

    # the controller drills the newest unverified backup: B first, which passes
    await ask_for_drill(control_plane, env, "bao", "first")
    got_b = await drilled(env, b_name)
    assert got_b["result"] == "Passed", (
        got_b,
        pod_log(node_agent, env, f"{b_name}-drill", "executor"),
    )
    assert verification(await env.get("openbaobackups", a_name)) == {}

    # then A: every byte check passes, the marker read back is B's
    await ask_for_drill(control_plane, env, "bao", "second")
    got_a = await drilled(env, a_name)
    assert got_a["result"] == "Failed", got_a
    assert got_a["reason"] == "MarkerMismatch", got_a
    assert got_a["message"].startswith("marker mismatch:"), got_a
    assert got_a["unsealed"] is True and got_a["markerMatched"] is False, got_a

    async def warned() -> list[tuple[str, str, str]] | None:
        events = await event_reasons(env, "OpenBaoBackup", a_name)
        hit = [e for e in events if e[:2] == ("Warning", "RestoreDrillFailed")]
        return hit or None

    (event,) = await until(warned, timeout=30, what=f"Warning RestoreDrillFailed on {a_name}")
    assert event[2].startswith("MarkerMismatch: marker mismatch:"), event

    async def counted() -> float | None:
        now = env.metric(FAILURES, cluster="bao", reason="MarkerMismatch")
        return now if now is not None and now >= before + 1 else None

    assert await until(counted, timeout=30, what=f"{FAILURES} incremented") == before + 1

    async def cluster_failed() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        cond = condition(obj, "RestoreVerified")
        return obj if cond is not None and cond["status"] == "False" else None

    cluster = await until(cluster_failed, timeout=30, what="RestoreVerified=False")
    failed = condition(cluster, "RestoreVerified")
    assert failed is not None and failed["reason"] == "MarkerMismatch", failed
    assert a_name in failed["message"], failed
    # B stays the newest verified backup
    assert cluster["status"]["backup"]["lastVerifiedBackup"]["name"] == b_name
