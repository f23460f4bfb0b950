"""The per-cluster operation lock's whole lifecycle: acquire, renew, release.

The decisions are :mod:`controller.backup.decide.oplock`; this module carries them out. The
protocol is documented for other tools in ``docs/operation-lock.md``.

Guarantees:

* every write is a create (201 = won) or a PUT carrying the observed ``resourceVersion``
  (a compare-and-swap); a 409 means another writer won and is reported as "not acquired",
  never as an error;
* expiry is judged from the local time at which this process first saw the current
  (holder, renewTime) of the Lease (:class:`Observations`), never from remote clocks;
* a blocked :meth:`OperationLock.acquire` says when to look again: the holder's expiry by our
  clock plus :data:`~controller.backup.decide.timing.LOCK_TAKEOVER_MARGIN_SECONDS`, so a
  crashed foreign holder is taken over within one lease duration (plus the margin) of the
  last renewal we saw, and a holder that keeps renewing blocks for as long as it renews
  (each renewal is a Lease event that re-runs the decision);
* a Job-backed holder (``backup/<record>``, ``restore/<restore>``) whose lease expired is
  taken over only once its Job is terminal or gone (:func:`holder_finished`);
* the Lease is created with its first holder and the labels of
  :func:`~controller.backup.decide.oplock.lease_labels`, so the controller's Lease informer
  sees it and other tools can find it; a Lease made by another tool without them gets them;
* our own writes are remembered (:class:`~controller.backup.act.fresh.FreshView`), so the
  next decision sees them before the watch does;
* release only ever clears a Lease we hold;
* renewals may go through their own client (``renew_api``: the same connection with its own
  write budget, :mod:`.renewer`), so they never wait behind bulk writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.backup.act.fresh import FreshView
from controller.backup.decide import names, oplock
from controller.backup.decide.conditions import parse_time
from controller.backup.decide.timing import (
    LOCK_DURATION_SECONDS,
    LOCK_RENEW_FRACTION,
    LOCK_TAKEOVER_MARGIN_SECONDS,
)
from controller.cache.store import StoreReader, thaw
from controller.errors import AlreadyExists, Conflict, NotFound
from controller.kube.client import KubeApi
from controller.kube.resources import LEASE

BACKUP_OP = "backup"
RESTORE_OP = "restore"
DELETE_OP = "delete"
JOB_OF_OPERATION = {
    BACKUP_OP: names.JobPurpose.BACKUP,
    RESTORE_OP: names.JobPurpose.RESTORE,
    DELETE_OP: names.JobPurpose.DELETE,
}
"""Our Job-backed operations and the Job each holder's run is (``<run>-<purpose>``)."""


def me(record: str, op: str = BACKUP_OP) -> str:
    """Our holder identity for a run: ``backup/<record>``."""
    return oplock.holder_identity(op, record)


def job_terminal(job: Mapping[str, Any] | None) -> bool:
    """A Job that has finished (Complete or Failed); ``None`` (gone) counts as finished."""
    if job is None:
        return True
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


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


@dataclass(frozen=True)
class Attempt:
    """The result of :meth:`OperationLock.acquire`: held, or when to look again and why."""

    held: bool
    retry_at: datetime | None = None
    message: str = ""


class OperationLock:
    def __init__(
        self,
        *,
        api: KubeApi,
        leases: FreshView,
        jobs: StoreReader,
        duration_seconds: int = LOCK_DURATION_SECONDS,
        renew_api: KubeApi | None = None,
    ) -> None:
        self._api = api
        self._renew_api = renew_api or api
        self._leases = leases
        self._jobs = jobs
        self._obs = Observations()
        self.duration_seconds = duration_seconds

    @property
    def renew_every(self) -> float:
        return self.duration_seconds / LOCK_RENEW_FRACTION

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

    def holder_finished(self, namespace: str, holder: oplock.Holder) -> bool:
        purpose = JOB_OF_OPERATION.get(holder.op)
        if purpose is None:
            return False
        return job_terminal(
            self._jobs.get(f"{namespace}/{names.job_name(record=holder.run, purpose=purpose)}")
        )

    def decide(
        self, *, namespace: str, cluster: str, me: str, now: datetime, running: bool = False
    ) -> oplock.LockDecision:
        """``running``: we hold (or held) the lock for a Job that still runs."""
        _, observed = self.observe(namespace=namespace, cluster=cluster, now=now)
        finished = False
        if observed is not None and observed.holder and not running:
            holder = oplock.parse_holder(observed.holder)
            finished = holder is not None and self.holder_finished(namespace, holder)
        return oplock.decide(lease=observed, me=me, now=now, previous_holder_finished=finished)

    async def acquire(self, *, namespace: str, cluster: str, me: str, now: datetime) -> Attempt:
        """Take the lock for ``me``, or say who holds it and when to look again."""
        decision = self.decide(namespace=namespace, cluster=cluster, me=me, now=now)
        action = decision.action
        if action is oplock.LockAction.BLOCKED:
            assert decision.until is not None
            retry = decision.until + timedelta(seconds=LOCK_TAKEOVER_MARGIN_SECONDS)
            return Attempt(False, retry, decision.message)
        if action is oplock.LockAction.WAIT_CONFIRM:
            # The holder's Job changing (a watch event) wakes us; look again after a lease
            # duration in case it never does.
            retry = now + timedelta(seconds=self.duration_seconds)
            return Attempt(False, retry, decision.message)
        if await self._apply(
            namespace=namespace, cluster=cluster, me=me, now=now, decision=decision
        ):
            return Attempt(True)
        return Attempt(False, now, "lost the race for the operation lock")

    async def renew(self, *, namespace: str, cluster: str, me: str, now: datetime) -> float:
        """Keep the lock while our Job runs; seconds until the next renewal is due."""
        decision = self.decide(namespace=namespace, cluster=cluster, me=me, now=now, running=True)
        if decision.action in (
            oplock.LockAction.RENEW,
            oplock.LockAction.ACQUIRE_TAKEOVER,
            oplock.LockAction.ACQUIRE_CREATE,
        ):
            await self._apply(
                namespace=namespace,
                cluster=cluster,
                me=me,
                now=now,
                decision=decision,
                api=self._renew_api,
            )
            return self.renew_every
        if decision.until is not None:
            return max(1.0, (decision.until - now).total_seconds())
        return self.renew_every

    async def _apply(
        self,
        *,
        namespace: str,
        cluster: str,
        me: str,
        now: datetime,
        decision: oplock.LockDecision,
        api: KubeApi | None = None,
    ) -> bool:
        """Carry out ACQUIRE_*/RENEW (PUTs through ``api``, default the main client); True if
        we hold the lock afterwards."""
        action = decision.action
        if action is oplock.LockAction.HELD_BY_US:
            return True
        name = names.lease_name(cluster=cluster)
        obj, observed = self.observe(namespace=namespace, cluster=cluster, now=now)
        labels = oplock.lease_labels(cluster=cluster)
        try:
            if action is oplock.LockAction.ACQUIRE_CREATE:
                return await self._create(
                    namespace=namespace,
                    name=name,
                    labels=labels,
                    body={
                        "apiVersion": LEASE.api_version,
                        "kind": LEASE.kind,
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
            path = LEASE.path(namespace=namespace, name=name)
            self._leases.remember(await (api or self._api).replace(path=path, body=body))
            return True
        except (AlreadyExists, Conflict):
            return False

    async def _create(
        self, *, namespace: str, name: str, labels: dict[str, str], body: dict[str, Any]
    ) -> bool:
        """Create the Lease; if it exists but our informer cannot see it (another tool made it
        without our labels), add the labels so the next decision sees the real holder."""
        try:
            self._leases.remember(
                await self._api.create(path=LEASE.path(namespace=namespace), body=body),
                created=True,
            )
            return True
        except AlreadyExists:
            path = LEASE.path(namespace=namespace, name=name)
            try:
                current = await self._api.get(path=path)
            except NotFound:
                return False
            have = (current.get("metadata") or {}).get("labels") or {}
            if any(have.get(k) != v for k, v in labels.items()):
                current = await self._api.merge_patch(
                    path=path, body={"metadata": {"labels": labels}}
                )
            self._leases.remember(current, created=True)  # the cache may not hold it yet
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
                self._leases.remember(await self._api.replace(path=path, body=body))
                return True
            except NotFound:
                return False
            except Conflict:
                # Someone wrote in between: re-read, and release only if still ours.
                try:
                    body = await self._api.get(path=path)
                except NotFound:
                    return False
                if (body.get("spec") or {}).get("holderIdentity") != me:
                    return False
        return False
