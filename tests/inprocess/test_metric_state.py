"""Metrics survive a controller restart or leader failover (issue 11), in process.

A first App starts a backup (the lock held); it stops, and a second App (a new leader, with its
own metric objects) takes over the namespace. Before it starts, the cluster's status records a
passed restore drill and an OpenBaoRestore has succeeded; the gauges about the past are set to
zero (as in a new process). The second App's first reconcile restores them from the API's
state: ``lock_held_seconds`` counts from the Lease's ``acquireTime``, the last verified drill
and the last successful restore are the recorded times. Every restore and drill series of a
cluster exists from its first reconcile, at zero.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller import metrics
from tests.inprocess.harness import GROUP, VERSION, Cluster, Kube, run_controller, until

VERIFIED_AT = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
RESTORED_AT = dt.datetime(2026, 12, 2, 4, 0, tzinfo=dt.UTC)


def sample(name: str, namespace: str, cluster: str, **extra: str) -> float | None:
    value = metrics.REGISTRY.get_sample_value(
        name, {"namespace": namespace, "cluster": cluster, **extra}
    )
    return None if value is None else float(value)


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def succeeded_restore(kube: Kube, cluster: Cluster) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{cluster.namespace}/openbaorestores"
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OpenBaoRestore",
        "metadata": {"name": "done-before"},
        "spec": {"cluster": cluster.name, "backupName": "whatever"},
    }
    await kube.api.create(path=path, body=body)
    await kube.api.merge_patch(
        path=f"{path}/done-before/status",
        body={
            "status": {
                "phase": "Succeeded",
                "completionTime": stamp(RESTORED_AT),
                "durationSeconds": 12.0,
            }
        },
    )


async def test_gauges_are_restored_from_the_api_after_a_restart(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    cluster = Cluster(kube=kube, namespace=namespace, name="vault", openbao_addr=openbao.addr)
    labels = (namespace, "vault")
    async with run_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace) as first:
        await cluster.create()
        await cluster.trigger("before-failover")
        record = (await cluster.new_record(set()))["metadata"]["name"]
        await cluster.wait_phase(record, {"Running"})
        await first.settle()
    lease = await cluster.lease()
    assert lease is not None and lease["spec"]["holderIdentity"] == f"backup/{record}"
    acquired = dt.datetime.fromisoformat(lease["spec"]["acquireTime"].replace("Z", "+00:00"))

    await kube.api.merge_patch(
        path=f"{cluster.path}/status",
        body={
            "status": {
                "backup": {
                    "lastVerifiedBackup": {
                        "name": record,
                        "time": stamp(VERIFIED_AT),
                        "durationSeconds": 30.0,
                        "result": "Passed",
                    }
                }
            }
        },
    )
    await succeeded_restore(kube, cluster)
    # a new process knows nothing: what the first App set is gone
    metrics.VERIFY_LAST.labels(*labels).set(0)
    metrics.RESTORE_LAST_SUCCESS.labels(*labels).set(0)

    async with run_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace) as second:
        await second.settle()

        async def restored() -> bool:
            return sample("openbao_backup_last_verified_timestamp_seconds", *labels) == (
                VERIFIED_AT.timestamp()
            )

        await until(restored, what="the last verified drill restored")
        assert sample("openbao_restore_last_success_timestamp_seconds", *labels) == (
            RESTORED_AT.timestamp()
        )
        held = sample("openbao_backup_lock_held_seconds", *labels)
        assert held is not None
        assert abs(held - (time.time() - acquired.timestamp())) < 30, held
        assert held > 0
        assert sample("openbao_backup_in_progress", *labels) == 1.0


async def test_restore_and_drill_series_exist_from_the_first_reconcile(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    cluster = Cluster(kube=kube, namespace=namespace, name="fresh", openbao_addr=openbao.addr)
    labels = (namespace, "fresh")
    async with run_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace) as ctl:
        await cluster.create()
        await ctl.settle()

        async def created() -> bool:
            return sample("openbao_restore_in_progress", *labels) is not None

        await until(created, what="the cluster's restore series")
        for name in (
            "openbao_restore_in_progress",
            "openbao_restore_last_success_timestamp_seconds",
            "openbao_restore_duration_seconds_count",
            "openbao_backup_last_verified_timestamp_seconds",
            "openbao_backup_verify_enabled",
            "openbao_backup_lock_held_seconds",
        ):
            assert sample(name, *labels) == 0.0, name
        for reason in metrics.RESTORE_FAILURE_REASONS:
            assert sample("openbao_restore_failures_total", *labels, reason=reason) == 0.0
        for reason in metrics.VERIFY_FAILURE_REASONS:
            assert (
                sample("openbao_backup_verification_failures_total", *labels, reason=reason) == 0.0
            )
