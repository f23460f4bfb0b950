"""Jittered windows are identical on both replicas and across a takeover (issue 13's
acceptance), in process against the real API server.

Two Apps with leader election run in this process, each with its own identity, client,
caches and backup manager (nothing shared but the API server, as two replicas share it):
``a`` leads and writes ``status.backup.nextScheduledBackup`` (the window plus the cluster's
spread offset); ``b`` waits as a warm standby. ``a`` stops and releases the Lease; ``b``
takes over. The field is then erased, so the value that comes back is ``b``'s own
computation, not ``a``'s left in place: it is the same. Finally ``b``'s clock is moved to
the window plus the offset (as in test_spread_caps.py): the backup fires once, from ``b``,
under the window's name, not before the offset; ``a`` never created a record.

Two replicas at once, then a takeover: a restart is the same takeover without the standby
(``b`` starts from its own list of the objects either way; nothing of ``a``'s process state
reaches it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.openbao import OpenBao

from controller.backup.act.deps import utcnow
from controller.backup.decide.spread import offset_seconds
from tests.inprocess.harness import Cluster, Kube, Running, run_controller, until
from tests.inprocess.test_spread_caps import fires_once_at_the_offset

SPREAD = 600
LEASE = "spread-replicas"
ELECTION = {  # quick elections: lease > renew deadline > 1.2 x retry period
    "leader_elect": True,
    "lease_name": LEASE,
    "lease_duration": 6.0,
    "renew_deadline": 4.0,
    "retry_period": 0.5,
    "schedule_spread_seconds": SPREAD,
}


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_both_replicas_plan_the_same_jittered_window_and_it_fires_once_after_takeover(
    kube: Kube, control_plane: ControlPlane, openbao: OpenBao, namespace: str
) -> None:
    cluster = Cluster(kube=kube, namespace=namespace, name="vault", openbao_addr=openbao.addr)
    offset = offset_seconds(
        namespace=namespace, name="vault", spread_seconds=SPREAD, starting_deadline_seconds=None
    )
    window = utcnow().replace(second=0, microsecond=0) + dt.timedelta(minutes=3)
    planned = _stamp(window + dt.timedelta(seconds=offset))
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE}"
    kwargs: dict[str, Any] = {
        "kubeconfig": control_plane.kubeconfig,
        "namespace": namespace,
        "lease_namespace": namespace,
        **ELECTION,
    }

    async def holder() -> str:
        lease = await kube.get(lease_path)
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    async def leads(identity: str) -> bool:
        return await holder() == identity

    async def replanned() -> str | None:
        got = (await cluster.backup_status()).get("nextScheduledBackup")
        return str(got) if got else None

    async with contextlib.AsyncExitStack() as replica_a:
        a = await replica_a.enter_async_context(run_controller(identity="a", **kwargs))
        await until(lambda: leads("a"), what="a leading")
        body = cluster.body()
        body["spec"]["backup"]["schedule"] = f"{window.minute} {window.hour} * * *"
        await kube.api.create(path=f"{cluster.base}/openbaoclusters", body=body)
        assert await until(replanned, what="a writing its plan") == planned
        await a.settle()

        async with run_controller(identity="b", **kwargs) as b:
            assert await holder() == "a"  # b is a standby: it reconciles nothing
            assert not [c for c in b.faults.calls if c.resource != "leases"]

            await replica_a.aclose()  # a stops and releases the Lease
            await until(lambda: leads("b"), what="b taking over")
            await b.settle()
            await kube.api.merge_patch(
                path=f"{cluster.path}/status",
                body={"status": {"backup": {"nextScheduledBackup": None}}},
            )

            assert await until(replanned, what="b writing its own plan") == planned
            assert _wrote_next_window(b, planned)
            await fires_once_at_the_offset(b, kube, cluster, window=window, offset=offset)

        assert not [c for c in a.faults.calls if (c.verb, c.resource) == ("POST", "openbaobackups")]


def _wrote_next_window(ctl: Running, planned: str) -> bool:
    """The controller's own call log has the status write of ``planned``."""
    for c in ctl.faults.calls:
        if (c.verb, c.resource, c.subresource) != ("PATCH", "openbaoclusters", "status"):
            continue
        backup = ((c.body or {}).get("status") or {}).get("backup") or {}
        if backup.get("nextScheduledBackup") == planned:
            return True
    return False
