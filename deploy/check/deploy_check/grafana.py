"""deploy/grafana: the dashboard is well-formed, its queries parse and name
only metrics herald exports, and it agrees with the provisioning files and
the compose mounts (a mismatch there shows an empty Grafana, no error)."""

from __future__ import annotations

import re
from pathlib import Path

from .loading import load_json, load_yaml, parse_promql
from .metrics import selectors, unknown_names
from .report import Report

DASHBOARD = "deploy/grafana/dashboards/herald.json"
DATASOURCES = "deploy/grafana/provisioning/datasources/prometheus.yml"
PROVIDERS = "deploy/grafana/provisioning/dashboards/herald.yml"

# Grafana's built-in variables, replaced by something PromQL accepts.
BUILTIN_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, variables: set[str], report: Report, area: str) -> str:
    for name, value in BUILTIN_RANGES.items():
        expr = expr.replace(name, value)

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        report.check(name in variables, area, f"uses undefined variable ${name}")
        return ".*"

    return VARIABLE.sub(replace, expr)


def panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check(root: Path, report: Report, compose: dict | None, recorded: set[str], used: list) -> None:
    sources = load_yaml(report, root / DATASOURCES) or {}
    uids = {d.get("uid") for d in sources.get("datasources", [])}
    report.check(sources.get("apiVersion") == 1 and len(uids) == 1 and None not in uids, DATASOURCES,
                 "expected apiVersion 1 and one datasource with a uid")
    for source in sources.get("datasources", []):
        report.check(source.get("type") == "prometheus", DATASOURCES, "datasource must be of type prometheus")
        url = str(source.get("url", ""))
        report.check(url.startswith("http://prometheus:9090"), DATASOURCES, f"url {url} is not the compose prometheus service")
        if compose:
            prom = (compose.get("services") or {}).get("prometheus") or {}
            external = next((c.split("=", 1)[1] for c in prom.get("command") or [] if c.startswith("--web.external-url=")), "")
            prefix = re.sub(r"^https?://[^/]+", "", external).rstrip("/")
            report.check(url.rstrip("/").endswith(prefix), DATASOURCES,
                         f"url must include Prometheus' route prefix {prefix!r} (from --web.external-url)")

    providers = load_yaml(report, root / PROVIDERS) or {}
    paths = [p.get("options", {}).get("path") for p in providers.get("providers", [])]
    report.check(providers.get("apiVersion") == 1 and paths, PROVIDERS, "expected apiVersion 1 and a file provider")
    if compose:
        grafana = (compose.get("services") or {}).get("grafana") or {}
        mounts = {target: source for source, target in
                  (v.split(":")[:2] for v in grafana.get("volumes", []) if isinstance(v, str) and v.startswith("."))}
        report.check(mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning", PROVIDERS,
                     "compose must mount ./deploy/grafana/provisioning at /etc/grafana/provisioning")
        for path in paths:
            report.check(mounts.get(path) == "./deploy/grafana/dashboards", PROVIDERS,
                         f"provider path {path} is not where compose mounts ./deploy/grafana/dashboards")
        home = (grafana.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home:
            mount = next((t for t in mounts if home.startswith(t + "/")), None)
            report.check(mount is not None and (root / mounts[mount] / home[len(mount) + 1:]).exists(), "docker-compose.yml",
                         f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is not a mounted file")

    dashboard = load_json(report, root / DASHBOARD)
    if not isinstance(dashboard, dict):
        return
    report.check(isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36, DASHBOARD,
                 "schemaVersion must be >= 36")
    report.check(bool(dashboard.get("uid")) and bool(dashboard.get("title")), DASHBOARD, "uid and title required")
    templating = dashboard.get("templating", {}).get("list", [])
    variables = {v["name"] for v in templating}
    for var in templating:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = re.match(r"label_values\((.*),\s*\w+\)$", str(query or ""))
        if var.get("type") == "query" and report.check(match is not None, DASHBOARD, f"variable {var['name']}: expected label_values(...)"):
            expr = parse_promql(report, f"{DASHBOARD} variable {var['name']}", match.group(1))
            if expr is not None:
                bad = unknown_names(expr, recorded)
                report.check(not bad, DASHBOARD, f"variable {var['name']}: unknown metrics {bad}")

    ids = set()
    count = 0
    for panel in panels(dashboard):
        title = panel.get("title", "?")
        report.check(panel.get("id") not in ids, DASHBOARD, f"panel {title!r}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        report.check(all(k in grid for k in "hwxy") and grid.get("x", 0) + grid.get("w", 0) <= 24, DASHBOARD,
                     f"panel {title!r}: gridPos must fit 24 columns")
        if panel.get("type") == "row":
            continue
        count += 1
        report.check((panel.get("datasource") or {}).get("uid") in uids, DASHBOARD,
                     f"panel {title!r}: datasource uid is not the provisioned one {sorted(uids)}")
        targets = panel.get("targets") or []
        report.check(bool(targets), DASHBOARD, f"panel {title!r}: no queries")
        refs = [t.get("refId") for t in targets]
        report.check(len(set(refs)) == len(refs), DASHBOARD, f"panel {title!r}: duplicate refId")
        for target in targets:
            area = f"{DASHBOARD} panel {title!r}"
            expr = parse_promql(report, area, substitute(str(target.get("expr", "")), variables, report, area))
            if expr is not None:
                bad = unknown_names(expr, recorded)
                report.check(not bad, DASHBOARD, f"panel {title!r}: unknown metrics {bad}")
                used.extend(selectors(expr))
    report.check(count > 0, DASHBOARD, "no panels")
    report.done(DASHBOARD)
