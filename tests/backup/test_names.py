"""controller.backup.decide.names: deterministic, always-valid names."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.backup.decide.names import (
    CLUSTER_NAME_MAX,
    MAX_LABEL,
    JobPurpose,
    fit_label,
    is_dns_label,
    job_name,
    lease_name,
    manual_record_name,
    scheduled_record_name,
    short_hash,
)

C40 = "c" * 39 + "x"
W = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("0", True),
        ("a-b", True),
        ("a--b", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("-a", False),
        ("a-", False),
        ("A", False),
        ("a.b", False),
        ("a_b", False),
        ("ä", False),
        ("a b", False),
    ],
)
def test_is_dns_label(name: str, valid: bool) -> None:
    assert is_dns_label(name) is valid


@pytest.mark.parametrize(
    ("cluster", "window", "expected"),
    [
        ("prod", W, "prod-202601020304"),
        (
            "prod",
            datetime(2026, 1, 2, 4, 4, tzinfo=timezone(timedelta(hours=1))),
            "prod-202601020304",
        ),
        ("prod", datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "prod-202612312359"),
        (C40, W, f"{C40}-202601020304"),
    ],
)
def test_scheduled_record_name(cluster: str, window: datetime, expected: str) -> None:
    assert scheduled_record_name(cluster=cluster, window=window) == expected


def test_scheduled_record_name_needs_aware_window() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        scheduled_record_name(cluster="prod", window=datetime(2026, 1, 1))


def test_fall_back_windows_get_different_names() -> None:
    first = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT
    second = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert scheduled_record_name(cluster="p", window=first) != scheduled_record_name(
        cluster="p", window=second
    )


@pytest.mark.parametrize(
    "value", ["1", "2026-01-01T00:00:00Z", "x" * 1024, "ünïcödé", " ", "a/b c", "\ud800"]
)
def test_manual_record_name(value: str) -> None:
    name = manual_record_name(cluster="prod", trigger_value=value)
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    assert name == f"prod-manual-{digest}"
    assert name == manual_record_name(cluster="prod", trigger_value=value)


def test_manual_record_names_differ_per_value() -> None:
    names = {manual_record_name(cluster="prod", trigger_value=str(i)) for i in range(2000)}
    assert len(names) == 2000


@pytest.mark.parametrize("purpose", [JobPurpose.BACKUP, JobPurpose.DELETE])
def test_job_names_of_a_40_char_cluster_need_no_hash(purpose: JobPurpose) -> None:
    scheduled = scheduled_record_name(cluster=C40, window=W)
    manual = manual_record_name(cluster=C40, trigger_value="now")
    assert len(scheduled) == 53
    assert len(manual) == 56
    assert job_name(record=scheduled, purpose=purpose) == f"{scheduled}-{purpose.value}"
    assert job_name(record=manual, purpose=purpose) == f"{manual}-{purpose.value}"
    assert len(job_name(record=manual, purpose=purpose)) == MAX_LABEL


def test_cluster_limit_is_the_largest_that_needs_no_hash() -> None:
    """40 is exactly the longest cluster name whose derived names all fit unhashed."""
    for length, fits in ((CLUSTER_NAME_MAX, True), (CLUSTER_NAME_MAX + 1, False)):
        cluster = "c" * length
        derived = [
            f"{scheduled_record_name(cluster=cluster, window=W)}-backup",
            f"{manual_record_name(cluster=cluster, trigger_value='v')}-backup",
            f"{manual_record_name(cluster=cluster, trigger_value='v')}-delete",
            f"{cluster}-openbao-oplock",
        ]
        assert all(len(d) <= MAX_LABEL for d in derived) is fits


def test_lease_name() -> None:
    assert lease_name(cluster="prod") == "prod-openbao-oplock"
    assert lease_name(cluster=C40) == f"{C40}-openbao-oplock"


# Inputs from the edge of what the API server allows: names are DNS subdomains up to 253.
ODD_INPUTS = [
    "a",
    "a" * 63,
    "a" * 64,
    "a" * 253,
    "A" * 253,
    "a." * 126 + "a",
    "my.backup.example.com",
    "Upper-Case",
    "-leading",
    "trailing-",
    "-",
    "...",
    "",
    "ünïcödé-name",
    "a_b_c",
    "x" * 55 + ".y",
    "9" * 253,
]
SUFFIXES = ["", "backup", "delete", "restore", "openbao-oplock"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("base", ODD_INPUTS)
def test_fit_label_is_always_a_dns_label(base: str, suffix: str) -> None:
    name = fit_label(base, suffix=suffix)
    assert is_dns_label(name), name
    assert len(name) <= MAX_LABEL
    assert fit_label(base, suffix=suffix) == name  # deterministic
    if suffix:
        assert name.endswith(f"-{suffix}")
    candidate = f"{base}-{suffix}" if suffix else base
    if is_dns_label(candidate):
        assert name == candidate
    else:
        digest = short_hash(f"{base}\x00{suffix}")
        assert digest in name


@pytest.mark.parametrize("purpose", list(JobPurpose))
@pytest.mark.parametrize("record", ODD_INPUTS[1:])
def test_job_name_of_any_record(record: str, purpose: JobPurpose) -> None:
    name = job_name(record=record, purpose=purpose)
    assert is_dns_label(name)
    assert name.endswith(f"-{purpose.value}")


def test_long_names_sharing_a_prefix_stay_distinct() -> None:
    bases = ["b" * 200 + str(i) for i in range(500)]
    bases += ["B" * 200 + str(i) for i in range(500)]
    bases += ["b" * 200 + "." + str(i) for i in range(500)]
    names = [fit_label(b, suffix="backup") for b in bases]
    assert len(set(names)) == len(bases)
    assert all(len(n) == MAX_LABEL or len(n) < MAX_LABEL for n in names)


def test_names_that_sanitise_alike_stay_distinct() -> None:
    variants = ["Prod.Cluster", "prod.cluster", "prod_cluster", "PROD_CLUSTER", "prod-cluster-"]
    names = [fit_label(v) for v in variants]
    assert len(set(names)) == len(variants)
    assert "prod-cluster" not in names  # a valid name is never produced for an invalid one


def test_253_char_cluster_names_everything_fits() -> None:
    cluster = "z" * 253
    for name in (
        scheduled_record_name(cluster=cluster, window=W),
        manual_record_name(cluster=cluster, trigger_value="v"),
        lease_name(cluster=cluster),
        *(
            job_name(record=scheduled_record_name(cluster=cluster, window=w), purpose=p)
            for w, p in itertools.product((W, W + timedelta(minutes=1)), JobPurpose)
        ),
    ):
        assert is_dns_label(name), name
    assert scheduled_record_name(cluster=cluster, window=W) != scheduled_record_name(
        cluster=cluster, window=W + timedelta(minutes=1)
    )


@pytest.mark.parametrize("suffix", ["Bad", "a.b", "-x", "x" * 64])
def test_bad_suffixes_are_refused(suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        fit_label("base", suffix=suffix)
