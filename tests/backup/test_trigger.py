"""controller.backup.trigger: a new annotation value is queued, never dropped."""

from __future__ import annotations

import pytest

from controller.backup.names import manual_record_name
from controller.backup.trigger import (
    ANNOTATION,
    MAX_VALUE_LENGTH,
    TriggerAction,
    TriggerDecision,
    decide,
)


def run(value: str | None, last: str | None, running: bool = False) -> TriggerDecision:
    annotations = {"other": "x"} if value is None else {ANNOTATION: value, "other": "x"}
    return decide(
        cluster="prod", annotations=annotations, last_handled=last, backup_running=running
    )


CASES = [
    ("no annotation", None, None, False, TriggerAction.NONE),
    ("no annotation, something handled before", None, "t1", False, TriggerAction.NONE),
    ("empty value", "", None, False, TriggerAction.NONE),
    ("empty value after a handled one", "", "t1", False, TriggerAction.NONE),
    ("already handled", "t1", "t1", False, TriggerAction.NONE),
    ("already handled, backup running", "t1", "t1", True, TriggerAction.NONE),
    ("first trigger", "t1", None, False, TriggerAction.START),
    ("new value", "t2", "t1", False, TriggerAction.START),
    ("new value while a backup runs: pending", "t2", "t1", True, TriggerAction.PENDING),
    ("first trigger while a scheduled backup runs", "t1", None, True, TriggerAction.PENDING),
    ("whitespace is a value", " ", None, False, TriggerAction.START),
    ("case matters", "T1", "t1", False, TriggerAction.START),
    ("longest allowed", "x" * MAX_VALUE_LENGTH, None, False, TriggerAction.START),
    ("too long", "x" * (MAX_VALUE_LENGTH + 1), None, False, TriggerAction.INVALID),
    ("too long while running", "x" * (MAX_VALUE_LENGTH + 1), None, True, TriggerAction.INVALID),
]


@pytest.mark.parametrize(
    ("value", "last", "running", "action"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_decide(value: str | None, last: str | None, running: bool, action: TriggerAction) -> None:
    decision = run(value, last, running)
    assert decision.action is action
    if action in (TriggerAction.START, TriggerAction.PENDING):
        assert value is not None
        assert decision.value == value
        assert decision.record_name == manual_record_name(cluster="prod", trigger_value=value)
    else:
        assert decision.record_name is None
    if action in (TriggerAction.PENDING, TriggerAction.INVALID):
        assert decision.message


def test_no_annotations_at_all() -> None:
    empty: list[dict[str, str] | None] = [None, {}]
    for value in empty:
        decision = decide(cluster="prod", annotations=value, last_handled="t", backup_running=False)
        assert decision.action is TriggerAction.NONE


def test_pending_stays_pending_until_the_running_backup_ends_then_starts_once() -> None:
    """The decision is a function of state: it stays PENDING as long as a backup runs, and
    the value is handled once (START) when it ends, after which it is NONE."""
    last = "t1"
    for _ in range(5):
        assert run("t2", last, running=True).action is TriggerAction.PENDING
    start = run("t2", last, running=False)
    assert start.action is TriggerAction.START
    last = start.value or last  # the caller records the value once the record exists
    assert run("t2", last, running=False).action is TriggerAction.NONE


def test_values_arriving_while_running_coalesce_into_the_latest() -> None:
    decisions = [run(v, "t1", running=True) for v in ("t2", "t3", "t4")]
    assert all(d.action is TriggerAction.PENDING for d in decisions)
    final = run("t4", "t1", running=False)
    assert final.action is TriggerAction.START
    assert final.record_name == decisions[-1].record_name


def test_a_restart_with_the_record_already_created_yields_the_same_record() -> None:
    """Crash between creating the record and storing lastHandledTrigger: the same decision
    (same record name) comes back, so the create answers AlreadyExists: done once."""
    assert run("t2", "t1").record_name == run("t2", "t1").record_name
