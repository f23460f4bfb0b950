"""controller.backup.decide.trigger: every value is satisfied by a backup that starts after it;
at most one trigger-annotation record waits per cluster."""

from __future__ import annotations

import pytest

from controller.backup.decide.names import manual_record_name
from controller.backup.decide.trigger import (
    MAX_VALUE_LENGTH,
    Queued,
    TriggerAction,
    TriggerDecision,
    decide,
)
from controller.backup.decide.vocabulary import TRIGGER_ANNOTATION

QUEUED = Queued(name="prod-manual-aaaa", coalesced=("t3",), trigger_value="t2")


def run(value: str | None, last: str | None, queued: Queued | None = None) -> TriggerDecision:
    annotations = {"other": "x"} if value is None else {TRIGGER_ANNOTATION: value, "other": "x"}
    return decide(cluster="prod", annotations=annotations, last_handled=last, queued=queued)


CASES = [
    ("no annotation", None, None, None, TriggerAction.NONE),
    ("no annotation, something handled before", None, "t1", None, TriggerAction.NONE),
    ("empty value", "", None, None, TriggerAction.NONE),
    ("empty value after a handled one", "", "t1", None, TriggerAction.NONE),
    ("already handled", "t1", "t1", None, TriggerAction.NONE),
    ("already handled, a record queued", "t1", "t1", QUEUED, TriggerAction.NONE),
    ("first trigger", "t1", None, None, TriggerAction.START),
    ("new value", "t2", "t1", None, TriggerAction.START),
    ("new value while a record is queued: coalesced", "t4", "t3", QUEUED, TriggerAction.COALESCE),
    ("whitespace is a value", " ", None, None, TriggerAction.START),
    ("case matters", "T1", "t1", None, TriggerAction.START),
    ("longest allowed", "x" * MAX_VALUE_LENGTH, None, None, TriggerAction.START),
    ("too long", "x" * (MAX_VALUE_LENGTH + 1), None, None, TriggerAction.INVALID),
    ("too long while queued", "x" * (MAX_VALUE_LENGTH + 1), None, QUEUED, TriggerAction.INVALID),
]


@pytest.mark.parametrize(
    ("value", "last", "queued", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_table(
    value: str | None, last: str | None, queued: Queued | None, action: TriggerAction
) -> None:
    assert run(value, last, queued).action is action


def test_start_names_the_record_by_value() -> None:
    got = run("t2", "t1")
    assert got == TriggerDecision(
        TriggerAction.START,
        value="t2",
        record_name=manual_record_name(cluster="prod", trigger_value="t2"),
    )


def test_coalesce_names_the_queued_record_not_a_new_one() -> None:
    got = run("t9", "t3", QUEUED)
    assert got.action is TriggerAction.COALESCE
    assert got.record_name == QUEUED.name
    assert got.value == "t9"
    assert got.message != "listed"


@pytest.mark.parametrize("value", ["t2", "t3"])
def test_value_already_on_the_queued_record_is_only_marked(value: str) -> None:
    """A crash after listing, before lastHandledTrigger was written: list it once only."""
    got = run(value, "t1", QUEUED)
    assert (got.action, got.record_name, got.message) == (
        TriggerAction.COALESCE,
        QUEUED.name,
        "listed",
    )


def test_a_storm_of_values_while_queued_never_creates_a_second_record() -> None:
    last = "t3"
    actions = set()
    for i in range(20):
        value = f"storm-{i}"
        got = run(value, last, QUEUED)
        actions.add((got.action, got.record_name))
        last = value
    assert actions == {(TriggerAction.COALESCE, QUEUED.name)}


def test_too_long_is_reported_not_handled() -> None:
    got = run("x" * (MAX_VALUE_LENGTH + 1), None)
    assert got.value is None
    assert str(MAX_VALUE_LENGTH) in got.message
