"""Waiting is visible (issue 11): a record that cannot launch shows phase ``Pending`` with the
reason, and ``kubectl get openbaoclusters`` says why the cluster is not Ready.

On the real API server: the record's ``Blocked`` condition, the cluster's summary ``Ready``
condition, and the server-side table (the CRD's printer columns, as ``kubectl get -o wide``
prints them) read through kubectl.
"""

from __future__ import annotations

from typing import Any

from devenv.controlplane import ControlPlane

from tests.inprocess.conftest import World
from tests.inprocess.harness import Cluster, play_kubelet, until
from tests.inprocess.test_regressions import other_cluster


def table(control_plane: ControlPlane, namespace: str) -> dict[str, dict[str, str]]:
    """``kubectl get openbaoclusters -o wide`` (server-side printing) as {name: {column: value}}."""
    got = control_plane.run_kubectl("-n", namespace, "get", "openbaoclusters", "-o", "wide")
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]

    def row(line: str) -> dict[str, str]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        return dict(zip(names, cells, strict=True))

    rows = [row(line) for line in lines[1:]]
    return {r["NAME"]: r for r in rows}


async def blocked_condition(cluster: Cluster, name: str, reason: str) -> dict[str, Any] | None:
    got = await cluster.record(name)
    conds = {c["type"]: c for c in ((got or {}).get("status") or {}).get("conditions") or ()}
    cond = conds.get("Blocked")
    return got if cond and cond["status"] == "True" and cond["reason"] == reason else None


async def test_a_blocked_record_is_pending_with_the_reason_and_the_ready_column_says_why(
    world: World, control_plane: ControlPlane
) -> None:
    cluster = await other_cluster(world, "down")
    await world.kube.api.merge_patch(
        path=cluster.path, body={"spec": {"address": "http://127.0.0.1:9"}}
    )
    await cluster.trigger("while-down")
    name = (await cluster.new_record(set()))["metadata"]["name"]

    got = await until(
        lambda: blocked_condition(cluster, name, "OpenBaoUnreachable"),
        what="the record Blocked=OpenBaoUnreachable",
    )
    assert got["status"]["phase"] == "Pending"

    async def not_ready() -> dict[str, Any] | None:
        ready = await cluster.condition("Ready")
        return ready if ready and ready["reason"] == "OpenBaoUnreachable" else None

    ready = await until(not_ready, what="Ready=False reason OpenBaoUnreachable")
    assert ready["status"] == "False"
    assert "not reachable" in ready["message"]
    row = table(control_plane, world.namespace)["down"]
    assert (row["READY"], row["REASON"]) == ("False", "OpenBaoUnreachable")
    assert "not reachable" in row["MESSAGE"]

    await world.kube.api.merge_patch(
        path=cluster.path, body={"spec": {"address": world.openbao_addr}}
    )
    await cluster.wait_phase(name, {"Running"}, timeout=40)
    await play_kubelet(world.kube, world.namespace, f"{name}-backup")
    await cluster.wait_phase(name, {"Succeeded"})

    async def ready_now() -> dict[str, Any] | None:
        cond = await cluster.condition("Ready")
        return cond if cond and cond["status"] == "True" else None

    assert (await until(ready_now, what="Ready=True"))["reason"] == "BackupSucceeded"
    row = table(control_plane, world.namespace)["down"]
    assert (row["READY"], row["REASON"]) == ("True", "BackupSucceeded")


async def test_a_record_behind_a_running_backup_is_pending_queued(world: World) -> None:
    cluster = world.cluster
    await cluster.trigger("first")
    first = (await cluster.new_record(set()))["metadata"]["name"]
    await cluster.wait_phase(first, {"Running"})
    body = {
        "apiVersion": "backup.openbao.org/v1alpha1",
        "kind": "OpenBaoBackup",
        "metadata": {"name": "behind", "namespace": world.namespace},
        "spec": {"cluster": cluster.name, "trigger": "pre-upgrade"},
    }
    await world.kube.api.create(path=f"{cluster.base}/openbaobackups", body=body)
    got = await until(
        lambda: blocked_condition(cluster, "behind", "Queued"), what="behind: Blocked=Queued"
    )
    assert got["status"]["phase"] == "Pending"
    assert first in got["status"]["conditions"][0]["message"]
    assert await cluster.jobs_of("behind") == []

    await play_kubelet(world.kube, world.namespace, f"{first}-backup")
    await cluster.wait_phase("behind", {"Running"})
    await play_kubelet(world.kube, world.namespace, "behind-backup")
    await cluster.wait_phase("behind", {"Succeeded"})
