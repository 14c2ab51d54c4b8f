"""Reading the repository's files once, with parse errors turned into problems."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from .report import Report


def load_yaml(report: Report, path: Path) -> Any:
    """All documents of a YAML file: one value, or a list when there are several."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as err:
        report.problem(str(path), f"cannot read YAML: {err}")
        return None
    return docs[0] if len(docs) == 1 else docs


def load_json(report: Report, path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        report.problem(str(path), f"cannot read JSON: {err}")
        return None


def load_toml_text(report: Report, area: str, text: str) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        report.problem(area, f"invalid TOML: {err}")
        return None


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> timedelta | None:
    """Durations as Compose, Prometheus and herald write them: 1h, 1m30s, 15s, 500ms."""
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (int(g) if g else 0 for g in match.groups())
    return timedelta(hours=h, minutes=m, seconds=s, milliseconds=ms)


def parse_promql(report: Report, area: str, expr: str):
    try:
        return promql_parser.parse(expr)
    except ValueError as err:
        report.problem(area, f"PromQL does not parse: {err}: {expr}")
        return None
