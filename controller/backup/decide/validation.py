"""Kubernetes' own checks of the executor pod fields, for the controller's spec parser.

Guarantees:

* every function is pure and total: any input (wrong types included) gives a list of problems,
  never an exception; an empty list means the API server accepts the value in a pod spec;
* each problem reads ``"<field path>: <what is wrong and what is allowed>"``, with map keys as
  ``path[key]`` and list items as ``path[index]``, as the API server prints them;
* the rules are the CRD's admission rules
  (charts/openbao-backup/crds/backup.openbao.org_openbaoclusters.yaml),
  which mirror Kubernetes' pod validation (label keys and values, annotation keys, tolerations,
  resource names and quantities), so an object written before the CRD had them, or with
  validation bypassed, becomes a clear condition instead of a Job the API server refuses on
  every retry;
* only the standard library is used: no Kubernetes client, no I/O.

The Kubernetes quantity parser below is hand-written on purpose. The one maintained Python
parser, ``kubernetes.utils.quantity.parse_quantity``, ships inside the official synchronous
client, which is not a dependency (we use kubernetes-asyncio, which has none) and which this
layer must not import; it is also laxer than the API server (it takes ``1K``, ``NaN`` and
surrounding blanks). The grammar here is apimachinery's ``resource.ParseQuantity``: an optional
sign, digits with an optional fraction, then one of the suffixes n u m k M G T P E, Ki Mi Gi Ti
Pi Ei, or an integer exponent ``e``/``E``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal

from controller.backup.decide.timing import MAX_STARTING_DEADLINE_SECONDS

__all__ = ["MAX_STARTING_DEADLINE_SECONDS"]  # re-exported: the CRD's upper bound
MIN_STARTING_DEADLINE_SECONDS = 10
MAX_OBJECT_LABEL_NAME = 63
"""OpenBaoBackup and OpenBaoRestore names are copied into Job labels (at most 63 characters)."""

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?"
)
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_INT64_MAX = 2**63 - 1

QUALIFIED_NAME_RULE = (
    "a qualified name: an optional DNS subdomain prefix of at most 253 characters and '/', "
    "then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)
LABEL_VALUE_RULE = (
    "a label value: empty, or at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def label_key_problems(*, path: str, key: object) -> list[str]:
    """Problems of ``key`` as a label key (``validation.IsQualifiedName``)."""
    if not isinstance(key, str):
        return [f"{path}: must be a string, {QUALIFIED_NAME_RULE}"]
    prefix, slash, name = key.rpartition("/")
    prefix_ok = not slash or (0 < len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(prefix)))
    ok = prefix_ok and len(name) <= 63 and _NAME.fullmatch(name) is not None
    return [] if ok else [f"{path}: {key!r} is not {QUALIFIED_NAME_RULE}"]


def label_value_problems(*, path: str, value: object) -> list[str]:
    """Problems of ``value`` as a label value (``validation.IsValidLabelValue``)."""
    if isinstance(value, str) and len(value) <= 63 and _LABEL_VALUE.fullmatch(value):
        return []
    return [f"{path}: {value!r} is not {LABEL_VALUE_RULE}"]


def label_map_problems(*, path: str, labels: Mapping[str, object]) -> list[str]:
    """Problems of a label map (``podLabels``, ``nodeSelector``): keys and values."""
    if not isinstance(labels, Mapping):
        return [f"{path}: must be a map of label keys to label values"]
    problems: list[str] = []
    for key, value in labels.items():
        problems += label_key_problems(path=f"{path}[{key}]", key=key)
        problems += label_value_problems(path=f"{path}[{key}]", value=value)
    return problems


def annotation_map_problems(*, path: str, annotations: Mapping[str, object]) -> list[str]:
    """Problems of an annotation map: keys are qualified names once lower-cased (as Kubernetes
    checks them), values strings."""
    if not isinstance(annotations, Mapping):
        return [f"{path}: must be a map of annotation keys to strings"]
    problems: list[str] = []
    for key, value in annotations.items():
        lowered = key.lower() if isinstance(key, str) else key
        if label_key_problems(path=path, key=lowered):
            problems.append(f"{path}[{key}]: {key!r} is not {QUALIFIED_NAME_RULE}")
        if not isinstance(value, str):
            problems.append(f"{path}[{key}]: annotation values must be strings")
    return problems


def toleration_problems(*, path: str, tolerations: object) -> list[str]:
    """Problems of a pod's tolerations, rule for rule as ``ValidateTolerations`` in
    kubernetes/pkg/apis/core/validation (Lt and Gt are behind a feature gate: refused)."""
    if not isinstance(tolerations, list | tuple):
        return [f"{path}: must be a list of tolerations"]
    problems: list[str] = []
    for index, item in enumerate(tolerations):
        at = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a toleration object")
            continue
        key, operator = item.get("key") or "", item.get("operator") or ""
        value, effect = item.get("value") or "", item.get("effect") or ""
        if key:
            problems += label_key_problems(path=f"{at}.key", key=key)
        if not key and operator != "Exists":
            problems.append(
                f"{at}.operator: must be Exists when key is empty "
                "(an empty key with Exists tolerates every taint)"
            )
        if item.get("tolerationSeconds") is not None and effect != "NoExecute":
            problems.append(f"{at}.effect: must be NoExecute when tolerationSeconds is set")
        if operator == "Exists":
            if value:
                problems.append(
                    f"{at}.value: must be empty when operator is Exists "
                    "(Exists matches every value; use Equal to match one)"
                )
        elif operator in ("Equal", ""):
            problems += label_value_problems(path=f"{at}.value", value=value)
        else:
            problems.append(f"{at}.operator: {operator!r} is not one of Exists, Equal")
        if effect and effect not in TAINT_EFFECTS:
            problems.append(
                f"{at}.effect: {effect!r} is not one of NoSchedule, PreferNoSchedule, "
                "NoExecute or empty (every effect)"
            )
    return problems


def parse_quantity(text: object) -> Decimal:
    """The exact value of a Kubernetes quantity (a string or an integer).

    Raises ValueError when the API server would refuse it."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{text!r} is not a quantity")
    if isinstance(text, int):
        return Decimal(text)
    m = _QUANTITY.fullmatch(text)
    if not text or m is None:
        raise ValueError(f"{text!r} is not a quantity")
    digits = (m["int"] or "0") + "." + (m["frac"] or "0")
    suffix = m["suffix"] or ""
    if suffix in _BINARY_SUFFIX:
        number = Decimal(digits)
        context = Context(prec=len(digits) + 25, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
        value = context.multiply(number, Decimal(2 ** _BINARY_SUFFIX[suffix]))
    else:
        exponent = _DECIMAL_SUFFIX.get(suffix, 0)
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            exponent = int(suffix[1:])
            if abs(exponent) > _INT64_MAX:
                raise ValueError(f"{text!r}: exponent out of range")
        value = Decimal(digits).scaleb(exponent, Context(Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[]))
    return -value if m["sign"] == "-" else value


def resources_problems(*, path: str, resources: object) -> list[str]:
    """Problems of a container's ``resources``: names, non-negative quantities, and every
    request at most the limit of the same name (``ValidateContainerResourceRequirements``)."""
    if not isinstance(resources, Mapping):
        return [f"{path}: must be a map with requests and limits"]
    problems: list[str] = []
    parsed: dict[str, dict[object, tuple[Decimal, object]]] = {}
    for part in ("limits", "requests"):
        amounts = resources.get(part)
        parsed[part] = {}
        if amounts is None:
            continue
        if not isinstance(amounts, Mapping):
            problems.append(f"{path}.{part}: must be a map of resource names to quantities")
            continue
        for name, raw in amounts.items():
            at = f"{path}.{part}[{name}]"
            problems += _resource_name_problems(path=at, name=name)
            try:
                amount = parse_quantity(raw)
            except ValueError:
                problems.append(f"{at}: {raw!r} is not a quantity, e.g. 100m, 1, 64Mi or 1Gi")
                continue
            if amount < 0:
                problems.append(f"{at}: {raw!r} is negative; quantities must be at least 0")
            parsed[part][name] = (amount, raw)
    for name, (request, _) in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit[0]:
            problems.append(f"{path}.requests[{name}]: must be at most its limit {limit[1]!r}")
    return problems


def _resource_name_problems(*, path: str, name: object) -> list[str]:
    if name in CONTAINER_RESOURCES:
        return []
    extended = isinstance(name, str) and ("/" in name or name.startswith("hugepages-"))
    if extended and not label_key_problems(path=path, key=name):
        return []
    return [
        f"{path}: {name!r} is not a container resource: cpu, memory, ephemeral-storage, "
        "hugepages-<size> or a domain-prefixed qualified name such as example.com/gpu"
    ]


def starting_deadline_problems(*, path: str, seconds: object) -> list[str]:
    """Problems of ``startingDeadlineSeconds`` (unset is fine: None)."""
    if seconds is None:
        return []
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return [f"{path}: must be an integer number of seconds"]
    if not MIN_STARTING_DEADLINE_SECONDS <= seconds <= MAX_STARTING_DEADLINE_SECONDS:
        return [
            f"{path}: {seconds} is out of range; allowed are {MIN_STARTING_DEADLINE_SECONDS} to "
            f"{MAX_STARTING_DEADLINE_SECONDS} seconds (one year), or unset"
        ]
    return []


def object_name_problems(*, path: str, name: object) -> list[str]:
    """Problems of an OpenBaoBackup or OpenBaoRestore name (copied into Job labels)."""
    if isinstance(name, str) and 0 < len(name) <= MAX_OBJECT_LABEL_NAME:
        return []
    return [f"{path}: must be 1 to {MAX_OBJECT_LABEL_NAME} characters (it becomes a label value)"]
