"""The pure half of leader election: the Lease record, expiry, and what to write.

Guarantees:

* pure: no I/O, no clock reads, no Kubernetes client; the local monotonic time and the wall
  time are parameters;
* expiry is judged from the **local monotonic time at which this process last saw the lease
  record change**, never from the remote ``renewTime``; clock skew between nodes does not
  matter, only clock *rate*. A process that has never seen the record counts first sight as
  "just changed", so it waits a full ``leaseDuration`` before taking over from a holder;
* ``acquireTime``/``renewTime`` are MicroTime strings formatted exactly
  ``%Y-%m-%dT%H:%M:%S.%fZ`` in UTC; ``leaseDurationSeconds`` is an int;
  ``leaseTransitions`` is incremented whenever the holder changes to us;
* :func:`release_record` gives the lease up with holder ``""`` and duration 1, so a standby
  takes over at once.

The decision logic is pure functions (:func:`observe`, :func:`decide`, :func:`next_record`,
:func:`release_record`), tested exhaustively without a server; the I/O that feeds them is
:mod:`controller.leaderelection.elector`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.kube.resources import format_microtime


def parse_microtime(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseRecord:
    """The election-relevant part of a Lease's spec."""

    holder: str = ""
    duration: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=parse_microtime(spec.get("acquireTime")),
            renew_time=parse_microtime(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = format_microtime(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_microtime(self.renew_time)
        return spec


@dataclass(frozen=True)
class Observation:
    """The last record we saw and the local monotonic time at which it last changed."""

    record: LeaseRecord
    observed_at: float


class Decision(enum.Enum):
    CREATE = "create"  # no Lease object: create it with us as holder
    RENEW = "renew"  # we hold it: renew
    ACQUIRE = "acquire"  # empty or expired: take it (CAS)
    WAIT = "wait"  # someone else holds a live lease


def observe(previous: Observation | None, record: LeaseRecord, *, now: float) -> Observation:
    """Update the observation: the clock restarts only when the record changed."""
    if previous is None or previous.record != record:
        return Observation(record=record, observed_at=now)
    return previous


def is_expired(observation: Observation, *, now: float) -> bool:
    """True once ``leaseDuration`` has passed since we saw the record change."""
    return observation.observed_at + observation.record.duration <= now


def decide(observation: Observation | None, *, identity: str, now: float) -> Decision:
    """What to do with the lease as last observed (None: the Lease does not exist)."""
    if observation is None:
        return Decision.CREATE
    record = observation.record
    if record.holder == identity:
        return Decision.RENEW
    if not record.holder or is_expired(observation, now=now):
        return Decision.ACQUIRE
    return Decision.WAIT


def next_record(
    current: LeaseRecord | None, *, identity: str, duration: float, now: datetime
) -> LeaseRecord:
    """The record to write to acquire or renew the lease as ``identity``."""
    if current is not None and current.holder == identity:
        return LeaseRecord(
            holder=identity,
            duration=max(1, round(duration)),
            acquire_time=current.acquire_time or now,
            renew_time=now,
            transitions=current.transitions,
        )
    transitions = current.transitions + 1 if current is not None else 0
    return LeaseRecord(
        holder=identity,
        duration=max(1, round(duration)),
        acquire_time=now,
        renew_time=now,
        transitions=transitions,
    )


def release_record(current: LeaseRecord, *, now: datetime) -> LeaseRecord:
    """The record that gives the lease up: no holder, duration 1 s, transitions kept."""
    return LeaseRecord(
        holder="", duration=1, acquire_time=now, renew_time=now, transitions=current.transitions
    )
