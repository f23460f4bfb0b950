"""controller.backup.decide.validation: Kubernetes' pod-field checks, for the spec parser.

The tables hold the inputs the CRD refuses at admission (tests/manifests/test_admission.py) and
the ones it accepts; the last tests check that the CRD's CEL regexes say the same."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from devenv.crds import load_crds

from controller.backup.decide.timing import MAX_STARTING_DEADLINE_SECONDS as TIMING_MAX
from controller.backup.decide.validation import (
    MAX_STARTING_DEADLINE_SECONDS,
    annotation_map_problems,
    label_key_problems,
    label_map_problems,
    label_value_problems,
    object_name_problems,
    parse_quantity,
    resources_problems,
    starting_deadline_problems,
    toleration_problems,
)

P = "spec.backup.executor"

LABEL_KEYS: list[tuple[str, bool]] = [
    ("a", True),
    ("app", True),
    ("A_b.c-D9", True),
    ("kubernetes.io/os", True),
    ("app.kubernetes.io/part-of", True),
    ("x" * 63, True),
    ("a" * 253 + "/" + "b" * 63, True),
    ("", False),
    ("-a", False),
    ("a-", False),
    ("_a", False),
    ("a b", False),
    ("x" * 64, False),
    ("a" * 254 + "/b", False),
    ("example.com/" + "b" * 64, False),
    ("/a", False),
    ("a/", False),
    ("a/b/c", False),
    ("Example.com/a", False),
    ("a..b/c", False),
    ("-a.com/b", False),
    ("ü", False),
]

LABEL_VALUES: list[tuple[object, bool]] = [
    ("", True),
    ("a", True),
    ("1", True),
    ("A-b_c.d", True),
    ("x" * 63, True),
    ("-a", False),
    ("a-", False),
    ("a b", False),
    ("a/b", False),
    ("x" * 64, False),
    (5, False),
    (None, False),
]


@pytest.mark.parametrize(("key", "valid"), LABEL_KEYS)
def test_label_keys(key: str, valid: bool) -> None:
    problems = label_key_problems(path=f"{P}.podLabels[{key}]", key=key)
    assert (problems == []) is valid, problems
    for problem in problems:
        assert problem.startswith(f"{P}.podLabels[{key}]: ")
        assert "qualified name" in problem


@pytest.mark.parametrize(("value", "valid"), LABEL_VALUES)
def test_label_values(value: object, valid: bool) -> None:
    problems = label_value_problems(path="x", value=value)
    assert (problems == []) is valid, problems


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, []),
        ({"app.kubernetes.io/name": "openbao-backup", "tier": ""}, []),
        ({"kubernetes.io/os": "linux"}, []),
        ({"bad key": "v"}, [f"{P}.podLabels[bad key]: 'bad key' is not a qualified name"]),
        ({"team": "has space"}, [f"{P}.podLabels[team]: 'has space' is not a label value"]),
        ({"team": "x" * 64}, [f"{P}.podLabels[team]: "]),
        ({"a/b/c": "-v"}, [f"{P}.podLabels[a/b/c]: ", f"{P}.podLabels[a/b/c]: "]),
        ("not a map", [f"{P}.podLabels: must be a map"]),
    ],
)
def test_label_maps(labels: Any, expected: list[str]) -> None:
    problems = label_map_problems(path=f"{P}.podLabels", labels=labels)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_node_selector_with_an_invalid_value() -> None:
    [problem] = label_map_problems(
        path=f"{P}.nodeSelector", labels={"kubernetes.io/os": "linux/amd64"}
    )
    assert problem.startswith(f"{P}.nodeSelector[kubernetes.io/os]: 'linux/amd64'")
    assert "label value" in problem


@pytest.mark.parametrize(
    ("annotations", "valid"),
    [
        ({}, True),
        ({"sidecar.istio.io/inject": "false"}, True),
        ({"Sidecar.Istio.IO/inject": "false"}, True),  # Kubernetes lower-cases before checking
        ({"note": "x" * 4096}, True),
        ({"a b": "x"}, False),
        ({"a/b/c": "x"}, False),
        ({"ok": 1}, False),
    ],
)
def test_annotation_maps(annotations: dict[str, Any], valid: bool) -> None:
    problems = annotation_map_problems(path=f"{P}.podAnnotations", annotations=annotations)
    assert (problems == []) is valid, problems
    assert all(p.startswith(f"{P}.podAnnotations[") for p in problems)


T = f"{P}.tolerations"
TOLERATIONS_OK: list[list[dict[str, Any]]] = [
    [],
    [{"key": "dedicated", "operator": "Exists"}],
    [{"operator": "Exists"}],
    [{"operator": "Exists", "value": ""}],
    [{"key": "k", "value": "v", "effect": "NoSchedule"}],
    [{"key": "k", "operator": "Equal", "value": "", "effect": ""}],
    [{"key": "k", "operator": "Equal", "value": "v", "effect": "PreferNoSchedule"}],
    [
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
    ],
]
TOLERATIONS_BAD: list[tuple[str, Any, str]] = [
    ("exists with a value", [{"key": "k", "operator": "Exists", "value": "v"}], f"{T}[0].value"),
    ("empty key with Equal", [{"operator": "Equal", "value": "v"}], f"{T}[0].operator"),
    ("empty key, no operator", [{"effect": "NoSchedule"}], f"{T}[0].operator"),
    (
        "seconds without NoExecute",
        [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}],
        f"{T}[0].effect",
    ),
    ("seconds without effect", [{"key": "k", "tolerationSeconds": 5}], f"{T}[0].effect"),
    ("bad key", [{"key": "a b", "operator": "Exists"}], f"{T}[0].key"),
    ("Lt operator", [{"key": "k", "operator": "Lt", "value": "3"}], f"{T}[0].operator"),
    ("unknown effect", [{"key": "k", "effect": "NoScheduleNoAdmit"}], f"{T}[0].effect"),
    ("bad value", [{"key": "k", "operator": "Equal", "value": "a b"}], f"{T}[0].value"),
    (
        "second item",
        [{"operator": "Exists"}, {"key": "k", "operator": "Exists", "value": "v"}],
        f"{T}[1].value",
    ),
    ("not a list", {"key": "k"}, f"{T}: must be a list"),
    ("item not an object", ["k"], f"{T}[0]: must be a toleration"),
]


@pytest.mark.parametrize("tolerations", TOLERATIONS_OK)
def test_valid_tolerations(tolerations: list[dict[str, Any]]) -> None:
    assert toleration_problems(path=T, tolerations=tolerations) == []


@pytest.mark.parametrize(
    ("tolerations", "start"), [pytest.param(t, s, id=i) for i, t, s in TOLERATIONS_BAD]
)
def test_invalid_tolerations(tolerations: Any, start: str) -> None:
    [problem] = toleration_problems(path=T, tolerations=tolerations)
    assert problem.startswith(start), problem


QUANTITIES: list[tuple[object, Decimal]] = [
    ("0", Decimal(0)),
    ("100m", Decimal("0.1")),
    ("64Mi", Decimal(64 * 2**20)),
    ("1.5Gi", Decimal(3 * 2**29)),
    ("1e3", Decimal(1000)),
    ("1E3", Decimal(1000)),
    ("1e-3", Decimal("0.001")),
    ("1E", Decimal(10**18)),
    ("+1k", Decimal(1000)),
    ("-1", Decimal(-1)),
    (".5", Decimal("0.5")),
    ("5.", Decimal(5)),
    ("12n", Decimal("12e-9")),
    ("3u", Decimal("3e-6")),
    ("2Ei", Decimal(2 * 2**60)),
    (1, Decimal(1)),
    (2**63 - 1, Decimal(2**63 - 1)),
]


@pytest.mark.parametrize(("text", "value"), QUANTITIES)
def test_parse_quantity(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        *("", "lots", "1K", "1e1.5", "1 Gi", " 1", "1Gb", "NaN", "inf", "1e", "--1", "1_000"),
        *("1Mii", True, None, 1.5, "1e" + "9" * 30),
    ],
)
def test_parse_quantity_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"quantity|exponent"):
        parse_quantity(text)


R = f"{P}.resources"
RESOURCES_OK: list[dict[str, Any]] = [
    {},
    {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    {"limits": {"cpu": 1, "memory": "256Mi"}},
    {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}},
    {"requests": {"ephemeral-storage": "1Gi"}},
    {"limits": {"example.com/gpu": 1}},
    {"limits": {"hugepages-2Mi": "4Mi", "memory": "1Gi"}},
]
RESOURCES_BAD: list[tuple[str, Any, str]] = [
    ("not a quantity", {"limits": {"memory": "lots"}}, f"{R}.limits[memory]: 'lots' is not a"),
    ("capital K", {"requests": {"memory": "1K"}}, f"{R}.requests[memory]: '1K' is not a"),
    ("negative string", {"requests": {"cpu": "-1"}}, f"{R}.requests[cpu]: '-1' is negative"),
    ("negative integer", {"limits": {"cpu": -1}}, f"{R}.limits[cpu]: -1 is negative"),
    (
        "request above limit",
        {"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}},
        f"{R}.requests[memory]: must be at most its limit '128Mi'",
    ),
    (
        "cpu above limit",
        {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}},
        f"{R}.requests[cpu]: must be at most its limit '1500m'",
    ),
    ("unknown name", {"limits": {"gpu": 1}}, f"{R}.limits[gpu]: 'gpu' is not a container"),
    ("bad qualified name", {"limits": {"example.com/a b": 1}}, f"{R}.limits[example.com/a b]"),
    ("not a map", ["cpu"], f"{R}: must be a map"),
    ("requests not a map", {"requests": "1"}, f"{R}.requests: must be a map"),
]


@pytest.mark.parametrize("resources", RESOURCES_OK)
def test_valid_resources(resources: dict[str, Any]) -> None:
    assert resources_problems(path=R, resources=resources) == []


@pytest.mark.parametrize(
    ("resources", "start"), [pytest.param(r, s, id=i) for i, r, s in RESOURCES_BAD]
)
def test_invalid_resources(resources: Any, start: str) -> None:
    [problem] = resources_problems(path=R, resources=resources)
    assert problem.startswith(start), problem


D = "spec.backup.startingDeadlineSeconds"


@pytest.mark.parametrize("seconds", [None, 10, 3600, MAX_STARTING_DEADLINE_SECONDS])
def test_valid_starting_deadlines(seconds: int | None) -> None:
    assert starting_deadline_problems(path=D, seconds=seconds) == []


@pytest.mark.parametrize(
    "seconds", [9, 0, -1, MAX_STARTING_DEADLINE_SECONDS + 1, 10**14, 2**63 - 1, "3600", True, 1.5]
)
def test_invalid_starting_deadlines(seconds: object) -> None:
    [problem] = starting_deadline_problems(path=D, seconds=seconds)
    assert problem.startswith(f"{D}: ")


def test_starting_deadline_limit_is_one_year_everywhere() -> None:
    """The same limit in this module, in the schedule's clamp and in the CRD."""
    assert MAX_STARTING_DEADLINE_SECONDS == 365 * 24 * 3600 == TIMING_MAX
    rules = [r["rule"] for r in BACKUP["startingDeadlineSeconds"]["x-kubernetes-validations"]]
    assert f"self <= {MAX_STARTING_DEADLINE_SECONDS}" in rules


@pytest.mark.parametrize(("name", "valid"), [("a", True), ("b" * 63, True), ("b" * 64, False)])
def test_object_names(name: str, valid: bool) -> None:
    assert (object_name_problems(path="metadata.name", name=name) == []) is valid


# -- the CRD says the same -----------------------------------------------------------------

CLUSTER = next(d for d in load_crds() if d["spec"]["names"]["kind"] == "OpenBaoCluster")
BACKUP = CLUSTER["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]["backup"]["properties"]
EXECUTOR = BACKUP["executor"]["properties"]


def cel_regexes(node: dict[str, Any]) -> list[str]:
    rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
    return [rx for rule in rules for rx in re.findall(r"matches\('([^']*)'\)", rule)]


def test_crd_key_rules_are_the_same_regexes() -> None:
    for node in (
        EXECUTOR["podLabels"],
        EXECUTOR["nodeSelector"],
        EXECUTOR["tolerations"]["items"]["properties"]["key"],
        EXECUTOR["resources"]["properties"]["limits"],
        EXECUTOR["resources"]["properties"]["requests"],
    ):
        assert cel_regexes(node) == cel_regexes(EXECUTOR["podLabels"])
    qualified, long_prefix = cel_regexes(EXECUTOR["podLabels"])
    assert cel_regexes(EXECUTOR["podAnnotations"]) == [f"(?i){qualified}", long_prefix]


@pytest.mark.parametrize(("key", "valid"), LABEL_KEYS)
def test_crd_key_regexes_agree(key: str, valid: bool) -> None:
    qualified, long_prefix = cel_regexes(EXECUTOR["podLabels"])
    crd_ok = re.search(qualified, key) is not None and re.search(long_prefix, key) is None
    assert crd_ok is valid


@pytest.mark.parametrize(
    ("value", "valid"), [(v, ok) for v, ok in LABEL_VALUES if isinstance(v, str)]
)
def test_crd_value_regexes_agree(value: str, valid: bool) -> None:
    for node in (
        EXECUTOR["podLabels"]["additionalProperties"],
        EXECUTOR["nodeSelector"]["additionalProperties"],
        EXECUTOR["tolerations"]["items"]["properties"]["value"],
    ):
        [regex] = cel_regexes(node)
        crd_ok = re.search(regex, value) is not None and len(value) <= node["maxLength"]
        assert crd_ok is valid
