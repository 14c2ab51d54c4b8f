"""The metric names herald promises (README.md lists them), and the names a
PromQL expression uses.

Dashboards and alerts that name a metric herald does not export show
"No data" or never fire, and nothing else ever says so. Every expression in
deploy/ is checked against this list; scripts/check-deploy also checks the
list against a running herald when HERALD_BIN is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import promql_parser

COUNTERS = {
    "herald_events_published_total",
    "herald_events_delivered_total",
    "herald_events_dropped_total",
    "herald_disconnects_total",
    "herald_resumes_total",
    "herald_broker_reconnects_total",
    "herald_broker_failovers_total",
    "herald_http_requests_total",
}
GAUGES = {"herald_connections", "herald_topics", "herald_broker_up", "herald_broker_primaries"}

HISTOGRAMS = {"herald_publish_duration_seconds", "herald_delivery_lag_seconds"}

# The standard process collector of the prometheus crate (Linux).
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
}

# Series a histogram exposes.
HISTOGRAM_SERIES = {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

# What herald exports.
EXPORTED = COUNTERS | GAUGES | HISTOGRAM_SERIES | PROCESS

# What Prometheus adds to every scrape target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# Labels Prometheus attaches to every series of a target; they are not in
# herald's own exposition.
TARGET_LABELS = {"job", "instance"}


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric name and its equality matchers."""

    name: str | None
    equals: tuple[tuple[str, str], ...]


def selectors(expr) -> list[Selector]:
    """Every vector selector in a parsed expression (range selectors included)."""
    found: list[Selector] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            equals = []
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
                    name = matcher.value
                elif matcher.op == promql_parser.MatchOp.Equal:
                    equals.append((matcher.name, matcher.value))
            found.append(Selector(name, tuple(sorted(equals))))

    promql_parser.walk(expr, pre_visit=visit)
    return found


def unknown_names(expr, extra: set[str]) -> list[str]:
    """Metric names in `expr` that are neither exported, synthetic nor in `extra`."""
    allowed = EXPORTED | SYNTHETIC | extra
    bad = []
    for sel in selectors(expr):
        if sel.name is None:
            bad.append("<selector without a metric name>")
        elif sel.name not in allowed:
            bad.append(sel.name)
    return bad
