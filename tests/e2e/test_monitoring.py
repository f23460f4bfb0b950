"""The shipped dashboard and alerts, evaluated by a real Prometheus (issue 11).

Debian's Prometheus server (hack/devenv/prometheus.py) scrapes the e2e controller every
second and loads the chart's rule file charts/openbao-backup/files/alerts.yaml. The test gives it
something to look at, the way a user's clusters would: in one namespace a scheduled cluster
``bao`` with restore drills that has a successful backup, a passed drill, a successful restore
and a refused one; a scheduled cluster ``broken`` (a bucket that does not exist) with two
failed backups; and a cluster ``invalid`` whose spec the controller cannot act on. Then:

* every target of every panel of charts/openbao-backup/files/grafana-dashboard.json, with the
  template variables substituted (namespace: the test's; cluster and job: all;
  ``$__rate_interval`` 1m, ``$__range`` the time since Prometheus started, ``$window`` 1h),
  evaluates without error as Grafana would run it (instant for stat and bar-gauge panels,
  range otherwise) into a non-empty vector or matrix with a finite value, whose series carry
  every label the legend names, only from the test's namespace; a few panels are also checked
  for the values this world must show (2 consecutive failures of ``broken``, its ``storage``
  failures, ``invalid`` shown invalid, one leader...);
* every alert rule is loaded and evaluates with health ``ok``, and exactly the alerts this
  world deserves are active: ``OpenBaoBackupFailing`` for ``broken`` and
  ``OpenBaoBackupConfigInvalid`` for ``invalid`` (pending: their ``for`` is minutes);
* every metric name an alert, a panel or a template variable refers to has a series in
  Prometheus, so a renamed metric fails here, not in a user's on-call night.

``test_dashboard_is_consistent`` checks the files without servers: one data-source variable
used everywhere, runbook links that exist, metric names the controller's registry defines.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from devenv.controlplane import ControlPlane
from devenv.prometheus import PrometheusServer, start_prometheus
from kubernetes_asyncio import client as k8s
from prometheus_client.metrics_core import Metric

from controller.metrics import REGISTRY
from tests.e2e.conftest import JWT_MOUNT, Env, until
from tests.e2e.test_drill import ask_for_drill, drill_port, drilled, marker_path
from tests.e2e.test_restore import backup_now, create_restore, kubectl_wait, restore_role

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "charts" / "openbao-backup" / "files"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
RULE = CHART_FILES / "alerts.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/openbao-backup/openbao-backup/blob/main/docs/runbooks/"
INSTANT_PANELS = frozenset({"stat", "bargauge", "gauge", "table"})
GRAFANA_VALUES = {  # what the test puts for Grafana's variables (namespace: the test's)
    "__rate_interval": "1m",
    "__interval": "15s",
    "window": "1h",
    "job": ".*",
    "cluster": ".*",
}


# -- the files ---------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    got: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return got


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries (rows' nested panels included)."""
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        out.extend(panel.get("panels") or [])
        if panel["type"] != "row":
            out.append(panel)
    return out


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULE.read_text())
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def variable_queries(dash: dict[str, Any]) -> dict[str, str]:
    """``label_values(...)`` of each query variable."""
    out: dict[str, str] = {}
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out[var["name"]] = query["query"] if isinstance(query, dict) else query
    return out


_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (template variables already substituted)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 0.5e1
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function
            continue
        if match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


def label_values_query(query: str) -> tuple[str, str, str]:
    """``label_values(<selector>, <label>)``: (selector, its metric name, label)."""
    got = re.fullmatch(
        r"\s*label_values\(\s*(([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?)\s*,\s*(\w+)\s*\)\s*",
        query,
    )
    assert got, f"not a label_values(selector, label) query: {query}"
    return got.group(1), got.group(2), got.group(3)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of ``$name`` / ``${name}`` (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def registry_names() -> set[str]:
    """Every series name the controller's registry can expose."""
    names: set[str] = set()
    family: Metric
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", ""),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


# -- 1. the files, without servers ---------------------------------------------------------------


def test_dashboard_is_consistent() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    source = variables.get("datasource")
    assert source is not None and source["type"] == "datasource", variables.keys()
    assert source["query"] == "prometheus"
    want_ds = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("job", "namespace", "cluster"):
        assert variables[name]["type"] == "query", name
        assert variables[name]["datasource"] == want_ds, name
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    queries = variable_queries(dash)
    assert queries["namespace"].startswith("label_values(") and "namespace)" in queries["namespace"]

    cells: dict[tuple[int, int], str] = {}  # the 24-column grid: no two panels overlap
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    all_panels = panels(dash)
    ids = [p["id"] for p in dash["panels"]] + [
        q["id"] for p in dash["panels"] for q in p.get("panels") or []
    ]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    known = registry_names()
    linked: set[str] = set()
    for panel in all_panels:
        where = f"panel {panel['title']!r}"
        assert panel["datasource"] == want_ds, where
        assert panel["targets"], where
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), where
        for target in panel["targets"]:
            assert target["datasource"] == want_ds, where
            assert target["legendFormat"], where
            names = metric_names(
                substitute(target["expr"], GRAFANA_VALUES | {"namespace": "x", "__range": "1h"})
            )
            assert names, (where, target["expr"])
            assert names <= known, (where, names - known)
        for link in panel.get("links") or []:
            assert link["url"].startswith(RUNBOOK_URL), (where, link)
            linked.add(link["url"].removeprefix(RUNBOOK_URL))
    for query in queries.values():
        assert label_values_query(query)[1] in known, query
    files = {p.name for p in RUNBOOKS.glob("*.md")}
    assert linked <= files, linked - files

    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"{RUNBOOK_URL}{rule['alert']}.md", url
        text = (RUNBOOKS / f"{rule['alert']}.md").read_text()
        assert text.startswith(f"# {rule['alert']}\n"), rule["alert"]
        assert len(text.splitlines()) >= 20, f"runbook {rule['alert']} is a stub"
        assert metric_names(rule["expr"]) <= known, (rule["alert"], metric_names(rule["expr"]))
    # the parser itself: what one of the rules selects
    assert metric_names(
        "openbao_backup_age_seconds > (openbao_backup_schedule_interval_seconds + "
        "clamp_min(0.25 * openbao_backup_schedule_interval_seconds, 3600)) and on (cluster) "
        'x_total{a="b c"} > 1e3'
    ) == {"openbao_backup_age_seconds", "openbao_backup_schedule_interval_seconds", "x_total"}


# -- 2. the world, and a real Prometheus looking at it -----------------------------------------


@pytest.fixture
def prometheus(env: Env, tmp_path: Path) -> Iterator[PrometheusServer]:
    prom = start_prometheus(
        tmp_path / "prometheus",
        targets=[env.controller.url.removeprefix("http://")],
        rule_files=[RULE],
    )
    try:
        yield prom
    finally:
        prom.stop()


async def build_world(env: Env, cp: ControlPlane, schedule: str) -> None:
    """``bao`` (backed up, drilled, restored, one refused restore), ``broken`` (two failed
    backups), ``invalid`` (a time zone that does not exist), all on ``schedule``."""
    openbao = env.openbao
    openbao.ensure_kv_mount("secret", version=2)
    role = f"drill-{env.namespace}"
    openbao.jwt_role(
        mount=JWT_MOUNT,
        role=role,
        subject=f"system:serviceaccount:{env.namespace}:default",
        audience="openbao",
        policy=openbao.setup_marker_policy(name=role, marker_path=marker_path(env)),
    )
    restorer = restore_role(env)  # before the backup: the restore puts OpenBao back to it
    await k8s.CoreV1Api(env.api).create_namespaced_secret(
        env.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="unseal-keys"),
            string_data={"keys": openbao.unseal_key + "\n"},
        ),
    )
    await env.create_cluster(
        "bao",
        schedule=schedule,
        auth={"jwt": {"mount": JWT_MOUNT, "role": role, "audience": "openbao"}},
        marker={"path": marker_path(env), "kvVersion": 2},
        verify={
            "schedule": schedule,
            "port": drill_port(),
            "unsealKeysSecretRef": {"name": "unseal-keys", "key": "keys"},
        },
    )
    await env.create_cluster("broken", schedule=schedule, target={"bucket": "no-such-bucket-obb"})
    await env.create_cluster("invalid", schedule=schedule, timeZone="Europe/Nowhere")

    async def failures(n: int) -> Any:
        async def probe() -> dict[str, Any] | None:
            obj = await env.get("openbaoclusters", "broken")
            backup = ((obj or {}).get("status") or {}).get("backup") or {}
            return backup if backup.get("consecutiveFailures") == n else None

        return await until(probe, what=f"broken: consecutiveFailures == {n}")

    await env.trigger("broken", "f1")  # runs beside bao's backup: another cluster
    record = await backup_now(env, "bao", "first")
    await failures(1)
    await env.trigger("broken", "f2")
    await ask_for_drill(cp, env, "bao", "now")
    drill = await drilled(env, record["metadata"]["name"])
    assert drill["result"] == "Passed", drill
    backup = await failures(2)
    assert backup["lastFailureReason"].startswith("storage:"), backup

    # a restore the controller refuses, then one that puts OpenBao back to bao's backup
    await create_restore(
        cp, env, "missing", cluster="bao", backupName="no-such-backup", safetySnapshot=False
    )
    refused = await kubectl_wait(cp, env, "missing", "Failed")
    assert refused["status"]["failureReason"] == "BackupNotFound", refused["status"]
    await create_restore(
        cp,
        env,
        "back",
        cluster="bao",
        backupName=record["metadata"]["name"],
        safetySnapshot=False,
        auth={"jwt": {"mount": JWT_MOUNT, "role": restorer, "audience": "openbao"}},
    )
    await kubectl_wait(cp, env, "back", "Succeeded")


async def scraped(prom: PrometheusServer, expr: str, what: str) -> list[dict[str, Any]]:
    """Poll until ``expr`` (an instant query) has a result: Prometheus saw the state."""

    async def probe() -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = prom.query(expr)["result"]
        return result

    got: list[dict[str, Any]] = await until(probe, timeout=30, what=f"Prometheus: {what}")
    return got


# -- 3. the checks --------------------------------------------------------------------------------


def values_of(data: dict[str, Any]) -> list[float]:
    if data["resultType"] == "vector":
        return [float(s["value"][1]) for s in data["result"]]
    return [float(v[1]) for s in data["result"] for v in s["values"]]


def last_by(data: dict[str, Any], *labels: str) -> dict[tuple[str, ...], float]:
    """The newest value of each series, keyed by the given labels."""
    out: dict[tuple[str, ...], float] = {}
    for series in data["result"]:
        key = tuple(series["metric"].get(label, "") for label in labels)
        point = series["value"] if "value" in series else series["values"][-1]
        out[key] = float(point[1])
    return out


def check_target(
    panel: dict[str, Any], target: dict[str, Any], data: dict[str, Any], namespace: str
) -> list[str]:
    """What is wrong with one panel target's answer (nothing: [])."""
    where = f"{panel['title']!r} {target['refId']}"
    instant = panel["type"] in INSTANT_PANELS
    want_type = "vector" if instant else "matrix"
    problems: list[str] = []
    if data["resultType"] != want_type:
        problems.append(f"{where}: a {data['resultType']}, not a {want_type}")
    if not data["result"]:
        return [*problems, f"{where}: no data"]
    if not any(math.isfinite(v) for v in values_of(data)):
        problems.append(f"{where}: no finite value in {data['result']}")
    wanted = legend_labels(target["legendFormat"])
    for series in data["result"]:
        labels = series["metric"]
        if not wanted <= labels.keys():
            problems.append(f"{where}: series {labels} lacks {wanted - labels.keys()}")
        if "namespace" in wanted and labels.get("namespace") != namespace:
            problems.append(f"{where}: series {labels} is not of namespace {namespace}")
    return problems


async def test_dashboard_and_alerts_against_real_prometheus(
    env: Env, control_plane: ControlPlane, prometheus: PrometheusServer
) -> None:
    prom = prometheus
    started = time.time()

    async def up() -> bool:
        return prom.targets_up()

    await until(up, timeout=30, what="Prometheus scraping the controller")
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24  # no window of the schedule during the test
    await build_world(env, control_plane, f"0 {hour} * * *")
    ns = env.namespace
    sel = f'namespace="{ns}", cluster="bao"'
    await scraped(prom, f"openbao_restore_last_success_timestamp_seconds{{{sel}}} > 0", "restore")
    await scraped(prom, f"openbao_backup_last_verified_timestamp_seconds{{{sel}}} > 0", "drill")
    await scraped(
        prom, f'openbao_backup_consecutive_failures{{namespace="{ns}", cluster="broken"}} == 2', "2"
    )
    await scraped(
        prom, f'openbao_backup_config_valid{{namespace="{ns}", cluster="invalid"}} == 0', "0"
    )

    # -- alerts: all loaded and healthy; exactly the deserved ones active
    rules = alert_rules()

    async def evaluated() -> list[dict[str, Any]] | None:
        got = [r for g in prom.rule_groups() for r in g["rules"] if r["type"] == "alerting"]
        done = all(not r["lastEvaluation"].startswith("0001-") for r in got)
        return got if got and done else None

    loaded = await until(evaluated, timeout=30, what="every rule evaluated")
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules)
    unhealthy = [
        (r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"
    ]
    assert not unhealthy, unhealthy
    for rule in rules:
        prom.query(rule["expr"])  # raises with Prometheus's error if it does not evaluate
    deserved = {("OpenBaoBackupFailing", "broken"), ("OpenBaoBackupConfigInvalid", "invalid")}

    async def active() -> set[tuple[str, str]] | None:
        got = {
            (a["labels"]["alertname"], a["labels"].get("cluster", ""))
            for a in prom.alerts()
            if a["labels"].get("namespace") in (ns, None)
        }
        return got if deserved <= got else None

    assert await until(active, timeout=30, what=f"alerts {deserved} active") == deserved
    states = {a["labels"]["alertname"]: a["state"] for a in prom.alerts()}
    assert states["OpenBaoBackupFailing"] == "pending", states  # for: 5m

    # -- every dashboard target
    dash = dashboard()
    end = time.time()
    values = GRAFANA_VALUES | {
        "namespace": ns,  # a DNS label: no regex metacharacters
        "__range": f"{math.ceil(end - started) + 5}s",
    }
    problems: list[str] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    checked = 0
    for panel in panels(dash):
        for target in panel["targets"]:
            expr = substitute(target["expr"], values)
            if panel["type"] in INSTANT_PANELS:
                data = prom.query(expr, at=end)
            else:
                data = prom.query_range(expr, start=started, end=end, step=2)
            results.setdefault(panel["title"], {})[target["refId"]] = data
            problems += check_target(panel, target, data, ns)
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 30, checked

    # -- the values this world must show
    def panel_data(title: str, ref: str = "A") -> dict[str, Any]:
        assert title in results, f"no panel {title!r} (renamed? update this test)"
        return results[title][ref]

    consecutive = last_by(panel_data("Consecutive failed backups"), "cluster")
    assert consecutive == {("bao",): 0, ("broken",): 2, ("invalid",): 0}, consecutive
    failed = last_by(panel_data("Failed backups in the time range, by reason"), "cluster", "reason")
    assert failed == {("broken", "storage"): 2}, failed
    sizes = last_by(panel_data("Size of the last successful snapshot"), "cluster")
    assert sizes[("bao",)] > 0 and sizes[("broken",)] == 0, sizes
    valid = last_by(panel_data("Backup spec valid"), "cluster")
    assert valid == {("bao",): 1, ("broken",): 1, ("invalid",): 0}, valid
    drill_age = last_by(panel_data("Time since the last passed restore drill"), "cluster")
    assert list(drill_age) == [("bao",)] and 0 <= drill_age[("bao",)] < end - started, drill_age
    restore_failed = last_by(
        panel_data("Failed restores in the time range, by reason"), "cluster", "reason"
    )
    assert restore_failed == {("bao", "BackupNotFound"): 1}, restore_failed
    restored = last_by(panel_data("Time since the last successful restore"), "cluster")
    assert list(restored) == [("bao",)], restored
    took = last_by(panel_data("Restore duration (mean since the controller started)"), "cluster")
    assert list(took) == [("bao",)] and 0 < took[("bao",)] < end - started, took
    leaders = values_of(panel_data("Replicas holding the leader lease"))
    assert leaders == [1.0], leaders
    ages = last_by(panel_data("Age of the last successful backup vs. its schedule"), "cluster")
    gaps = last_by(panel_data("Age of the last successful backup vs. its schedule", "B"), "cluster")
    assert ages[("bao",)] < gaps[("bao",)] == 86400, (ages, gaps)

    # -- every metric an alert, a panel or a variable refers to has a series
    referenced: set[str] = set()
    for rule in rules:
        referenced |= metric_names(rule["expr"])
    for panel in panels(dash):
        for target in panel["targets"]:
            referenced |= metric_names(substitute(target["expr"], values))
    queries = variable_queries(dash)
    referenced |= {label_values_query(q)[1] for q in queries.values()}
    present = {
        s["metric"]["__name__"]
        for s in prom.query(
            f'group by (__name__) ({{__name__=~"{"|".join(sorted(referenced))}"}})'
        )["result"]
    }
    assert referenced - present == set(), f"no series in Prometheus: {referenced - present}"
    assert len(referenced) >= 25, referenced

    # -- the template variables offer the test's objects (each query as Grafana runs it)
    offered: dict[str, list[str]] = {}
    for name, query in queries.items():
        selector, _, label = label_values_query(query)
        offered[name] = prom.label_values(label, match=substitute(selector, values))
    assert offered["job"] == ["openbao-backup-controller"], offered
    assert ns in offered["namespace"], offered
    assert set(offered["cluster"]) == {"bao", "broken", "invalid"}, offered
