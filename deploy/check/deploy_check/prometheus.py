"""deploy/prometheus: the scrape config finds every gateway replica, and every
rule expression parses and names only metrics herald exports. promtool, when
scripts/check-deploy finds it, checks the same files again and runs
rules_test.yml."""

from __future__ import annotations

from pathlib import Path

from .loading import load_yaml, parse_duration, parse_promql
from .metrics import selectors, unknown_names
from .report import Report

CONFIG = "deploy/prometheus/prometheus.yml"


def recorded_names(root: Path, report: Report) -> set[str]:
    """Names the recording rules define; dashboards and alerts may use them."""
    rules = load_yaml(report, root / "deploy/prometheus/rules.yml") or {}
    return {rule["record"] for group in rules.get("groups", []) for rule in group.get("rules", []) if "record" in rule}


def check_rules(root: Path, report: Report, rel: str, recorded: set[str], used: list) -> None:
    rules = load_yaml(report, root / "deploy/prometheus" / rel)
    area = f"deploy/prometheus/{rel}"
    if not isinstance(rules, dict) or not rules.get("groups"):
        report.problem(area, "no rule groups")
        return
    names = set()
    for group in rules["groups"]:
        report.check(group.get("name") not in names, area, f"duplicate group {group.get('name')}")
        names.add(group.get("name"))
        for rule in group.get("rules", []):
            label = rule.get("record") or rule.get("alert")
            report.check(bool(label) and ("record" in rule) != ("alert" in rule), area,
                         f"rule needs exactly one of record/alert: {rule}")
            if "for" in rule:
                report.check(parse_duration(rule["for"]) is not None, area, f"{label}: bad `for` {rule['for']!r}")
            if "alert" in rule:
                report.check("summary" in (rule.get("annotations") or {}), area, f"{label}: no summary annotation")
            expr = parse_promql(report, f"{area} {label}", str(rule.get("expr", "")))
            if expr is not None:
                bad = unknown_names(expr, recorded)
                report.check(not bad, area, f"{label}: unknown metrics {bad}")
                used.extend(selectors(expr))


def check(root: Path, report: Report, compose: dict | None, used: list) -> None:
    config = load_yaml(report, root / CONFIG)
    if not isinstance(config, dict):
        return
    jobs = {job.get("job_name"): job for job in config.get("scrape_configs", [])}
    herald = jobs.get("herald")
    if report.check(herald is not None, CONFIG, "no scrape job named herald"):
        report.check(herald.get("metrics_path", "/metrics") == "/metrics", CONFIG, "herald serves /metrics")
        dns = herald.get("dns_sd_configs") or []
        report.check(
            any("gateway" in d.get("names", []) and d.get("port") == 8080 and d.get("type", "SRV") == "A" for d in dns),
            CONFIG, "herald job must discover every replica with dns_sd_configs: names [gateway], type A, port 8080",
        )
        report.check(not herald.get("static_configs"), CONFIG,
                     "herald job must not use static targets: a static 'gateway:8080' scrapes one random replica")
    for key in ("scrape_interval", "evaluation_interval"):
        value = (config.get("global") or {}).get(key)
        report.check(value is None or parse_duration(value) is not None, CONFIG, f"global.{key} {value!r} is not a duration")

    recorded = recorded_names(root, report)
    for rel in config.get("rule_files", []):
        if report.check((root / "deploy/prometheus" / rel).exists(), CONFIG, f"rule file {rel} missing"):
            check_rules(root, report, rel, recorded, used)
    report.check((root / "deploy/prometheus/rules_test.yml").exists(), CONFIG, "rules_test.yml missing")

    if compose:
        prom = (compose.get("services") or {}).get("prometheus") or {}
        command = prom.get("command") or []
        config_flag = next((c.split("=", 1)[1] for c in command if c.startswith("--config.file=")), "")
        mounts = {target: source for source, target in
                  (v.split(":")[:2] for v in prom.get("volumes", []) if isinstance(v, str) and v.startswith("."))}
        report.check(
            mounts.get(str(Path(config_flag).parent)) == "./deploy/prometheus" and config_flag.endswith("/prometheus.yml"),
            CONFIG, "compose must mount ./deploy/prometheus at the --config.file directory (rule_files are relative)",
        )
    report.done(CONFIG)
