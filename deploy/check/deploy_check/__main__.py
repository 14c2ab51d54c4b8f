"""python -m deploy_check ROOT [--exposition FILE]

Runs every project check on the repository at ROOT and prints one line per
area. With --exposition (a /metrics scrape of a running herald), also checks
that every metric and label value the dashboard and rules select exists in
it, so a renamed metric fails here instead of showing "No data".
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import compose, dockerfile, grafana, k8s, prometheus
from .metrics import EXPORTED, SYNTHETIC, TARGET_LABELS
from .report import Report

SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def check_exposition(report: Report, text: str, used: list) -> None:
    area = "metrics of the running herald"
    series: dict[str, list[dict]] = {}
    for line in text.splitlines():
        match = SERIES.match(line)
        if match and not line.startswith("#"):
            series.setdefault(match.group(1), []).append(dict(LABEL.findall(match.group(2) or "")))
    missing_contract = sorted(EXPORTED - set(series))
    report.check(not missing_contract, area, f"herald does not export {missing_contract} (deploy_check/metrics.py lists the contract)")
    for sel in set(used):
        if sel.name is None or sel.name in SYNTHETIC or ":" in sel.name:
            continue
        if not report.check(sel.name in series, area, f"{sel.name} is queried but not exported"):
            continue
        wanted = {k: v for k, v in sel.equals if k not in TARGET_LABELS}
        report.check(any(all(s.get(k) == v for k, v in wanted.items()) for s in series[sel.name]), area,
                     f"no series {sel.name}{wanted}: a dashboard or rule selects a label value herald does not use")
    report.done(area)


def main() -> int:
    parser = argparse.ArgumentParser(prog="deploy_check")
    parser.add_argument("root", type=Path)
    parser.add_argument("--exposition", type=Path)
    args = parser.parse_args()
    root = args.root.resolve()
    report = Report()
    used: list = []

    compose_doc = compose.check(root, report)
    image = dockerfile.check(root, report)
    recorded = prometheus.recorded_names(root, report)
    prometheus.check(root, report, compose_doc, used)
    grafana.check(root, report, compose_doc, recorded, used)
    k8s.check(root, report, image)
    if args.exposition:
        check_exposition(report, args.exposition.read_text(), used)
    return report.print()


if __name__ == "__main__":
    sys.exit(main())
