"""The per-cluster operation lock: the thin I/O around :mod:`controller.backup.oplock`.

Guarantees:

* every write is a create (201 = won) or a PUT carrying the observed ``resourceVersion``
  (a compare-and-swap); a 409 means another writer won and is reported as "not acquired",
  never as an error;
* expiry is judged from the local time at which this process first saw the current
  (holder, renewTime) of the Lease (:class:`Observations`), never from remote clocks;
* the Lease carries ``app.kubernetes.io/managed-by=openbao-backup`` and the lock labels of
  :func:`~controller.backup.oplock.lease_labels`, so the controller's Lease informer sees it
  and other tools can find it (docs/operation-lock.md);
* release only ever clears a Lease we hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from controller.backup import names, oplock
from controller.backup.conditions import parse_time
from controller.cache.store import StoreReader, thaw
from controller.errors import AlreadyExists, Conflict, NotFound
from controller.kube.client import KubeApi
from controller.kube.resources import LEASE

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"


class Observations:
    """Local first-sight times of each Lease version (client-go's observedTime)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[str, str], datetime]] = {}

    def observed_at(self, *, key: str, holder: str, renew: str, now: datetime) -> datetime:
        version = (holder, renew)
        prev = self._seen.get(key)
        if prev is None or prev[0] != version:
            self._seen[key] = (version, now)
            return now
        return prev[1]

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


class OperationLock:
    def __init__(self, *, api: KubeApi, leases: StoreReader, duration_seconds: int = 60) -> None:
        self._api = api
        self._leases = leases
        self._obs = Observations()
        self.duration_seconds = duration_seconds

    def observe(
        self, *, namespace: str, cluster: str, now: datetime
    ) -> tuple[Mapping[str, Any] | None, oplock.ObservedLease | None]:
        name = names.lease_name(cluster=cluster)
        obj = self._leases.get(f"{namespace}/{name}")
        if obj is None:
            return None, None
        spec = obj.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renew = str(spec.get("renewTime") or "")
        observed = oplock.ObservedLease(
            holder=holder or None,
            lease_duration_seconds=spec.get("leaseDurationSeconds"),
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            observed_at=self._obs.observed_at(
                key=f"{namespace}/{name}", holder=holder, renew=renew, now=now
            ),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )
        return obj, observed

    def decide(
        self,
        *,
        namespace: str,
        cluster: str,
        me: str,
        now: datetime,
        holder_finished: Callable[[oplock.Holder], bool],
    ) -> oplock.LockDecision:
        _, observed = self.observe(namespace=namespace, cluster=cluster, now=now)
        finished = False
        if observed is not None and observed.holder:
            holder = oplock.parse_holder(observed.holder)
            finished = holder is not None and holder_finished(holder)
        return oplock.decide(lease=observed, me=me, now=now, previous_holder_finished=finished)

    async def apply(
        self,
        *,
        namespace: str,
        cluster: str,
        me: str,
        now: datetime,
        decision: oplock.LockDecision,
    ) -> bool:
        """Carry out ACQUIRE_*/RENEW; True if we hold the lock afterwards."""
        action = decision.action
        if action is oplock.LockAction.HELD_BY_US:
            return True
        name = names.lease_name(cluster=cluster)
        obj, observed = self.observe(namespace=namespace, cluster=cluster, now=now)
        labels = {LABEL_MANAGED_BY: "openbao-backup", **oplock.lease_labels(cluster=cluster)}
        try:
            if action is oplock.LockAction.ACQUIRE_CREATE:
                return await self._create(
                    namespace=namespace,
                    name=name,
                    labels=labels,
                    body={
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": name, "namespace": namespace, "labels": labels},
                        "spec": oplock.acquire_spec(
                            me=me, now=now, previous=None, duration_seconds=self.duration_seconds
                        ),
                    },
                )
            if obj is None:
                return False
            body = thaw(obj)
            body["metadata"]["labels"] = {**(body["metadata"].get("labels") or {}), **labels}
            if action is oplock.LockAction.ACQUIRE_TAKEOVER:
                body["spec"] = oplock.acquire_spec(
                    me=me, now=now, previous=observed, duration_seconds=self.duration_seconds
                )
            elif action is oplock.LockAction.RENEW:
                body["spec"] = {
                    **body.get("spec", {}),
                    **oplock.renew_spec(me=me, now=now, duration_seconds=self.duration_seconds),
                }
            else:
                return False
            await self._api.replace(path=LEASE.path(namespace=namespace, name=name), body=body)
            return True
        except (AlreadyExists, Conflict):
            return False

    async def _create(
        self, *, namespace: str, name: str, labels: dict[str, str], body: dict[str, Any]
    ) -> bool:
        """Create the Lease; if it exists but our informer cannot see it (another tool made it
        without our labels), add the labels so the next decision sees the real holder."""
        try:
            await self._api.create(path=LEASE.path(namespace=namespace), body=body)
            return True
        except AlreadyExists:
            path = LEASE.path(namespace=namespace, name=name)
            try:
                current = await self._api.get(path=path)
            except NotFound:
                return False
            have = (current.get("metadata") or {}).get("labels") or {}
            if any(have.get(k) != v for k, v in labels.items()):
                await self._api.merge_patch(path=path, body={"metadata": {"labels": labels}})
            return False

    async def release(self, *, namespace: str, cluster: str, me: str, now: datetime) -> bool:
        """Clear the Lease if ``me`` holds it; True when this call released it."""
        name = names.lease_name(cluster=cluster)
        obj, observed = self.observe(namespace=namespace, cluster=cluster, now=now)
        if obj is None or not oplock.may_release(lease=observed, me=me):
            return False
        path = LEASE.path(namespace=namespace, name=name)
        body = thaw(obj)
        for _ in range(3):
            body["spec"] = {**body.get("spec", {}), **oplock.release_spec(now=now)}
            try:
                await self._api.replace(path=path, body=body)
                return True
            except NotFound:
                return False
            except Conflict:
                # Our cache lags our own renewals: re-read, and release only if still ours.
                try:
                    body = await self._api.get(path=path)
                except NotFound:
                    return False
                if (body.get("spec") or {}).get("holderIdentity") != me:
                    return False
        return False
