"""The cluster's summary ``Ready`` condition (the READY/REASON columns) on a table of inputs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller.backup.decide import conditions as cond

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def c(type: str, status: str, reason: str = "R", message: str = "m") -> dict[str, Any]:
    return {"type": type, "status": status, "reason": reason, "message": message}


OK = c(cond.BACKUP_READY, "True", "BackupSucceeded", "vault-1: key")
VALID = c(cond.CONFIG_VALID, "True", "Valid", "")
CASES = [
    ([], ("False", "NoBackupYet")),
    ([VALID, OK], ("True", "BackupSucceeded")),
    ([c(cond.CONFIG_VALID, "False", "Invalid", "bad schedule"), OK], ("False", "InvalidSpec")),
    ([VALID, c(cond.STALLED, "True", "Launch"), OK], ("False", "Stalled")),
    ([OK, c(cond.PREFLIGHT_BLOCKED, "True", "OpenBaoSealed")], ("False", "OpenBaoSealed")),
    ([OK, c(cond.PREFLIGHT_BLOCKED, "True", "LockHeld")], ("False", "LockHeld")),
    ([OK, c(cond.PREFLIGHT_BLOCKED, "False", "Clear")], ("True", "BackupSucceeded")),
    ([c(cond.BACKUP_FAILING, "True", "BackupFailed")], ("False", "BackupFailing")),
    ([OK, c(cond.SUSPENDED, "True", "Suspended")], ("True", "Suspended")),
    ([c(cond.SUSPENDED, "True", "Suspended")], ("False", "Suspended")),
    # the spec first, then a stalled step, then a block, then failing backups
    (
        [
            c(cond.CONFIG_VALID, "False"),
            c(cond.STALLED, "True"),
            c(cond.PREFLIGHT_BLOCKED, "True", "NoActiveNode"),
        ],
        ("False", "InvalidSpec"),
    ),
    (
        [c(cond.BACKUP_FAILING, "True"), c(cond.PREFLIGHT_BLOCKED, "True", "NoActiveNode")],
        ("False", "NoActiveNode"),
    ),
]


@pytest.mark.parametrize(("conditions", "want"), CASES)
def test_ready_summarises_the_other_conditions(
    conditions: list[dict[str, Any]], want: tuple[str, str]
) -> None:
    out = cond.with_ready(conditions, observed_generation=3, now=NOW)
    ready = cond.get_condition(out, cond.READY)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == want
    assert ready["observedGeneration"] == 3
    assert [x["type"] for x in out[: len(conditions)]] == [x["type"] for x in conditions]


def test_the_block_message_is_the_ready_message_and_the_input_is_not_mutated() -> None:
    blocked = c(cond.PREFLIGHT_BLOCKED, "True", "OpenBaoSealed", "OpenBao is sealed")
    before = [dict(blocked)]
    out = cond.with_ready(before, observed_generation=None, now=NOW)
    assert before == [blocked]
    assert cond.get_condition(out, cond.READY)["message"] == "OpenBao is sealed"  # type: ignore[index]


def test_ready_transition_time_moves_only_with_its_status() -> None:
    first = cond.with_ready([OK], observed_generation=1, now=NOW)
    later = NOW + dt.timedelta(hours=1)
    again = cond.with_ready(first, observed_generation=1, now=later)
    assert cond.get_condition(again, cond.READY)["lastTransitionTime"] == cond.rfc3339(NOW)  # type: ignore[index]
    flipped = cond.with_ready(
        [*again, c(cond.PREFLIGHT_BLOCKED, "True", "LockHeld")], observed_generation=1, now=later
    )
    assert cond.get_condition(flipped, cond.READY)["lastTransitionTime"] == cond.rfc3339(later)  # type: ignore[index]
