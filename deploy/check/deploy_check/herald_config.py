"""The settings herald knows, as config/herald.toml documents them, so that a
deployment file setting an unknown key (a typo, a renamed setting) fails the
check instead of being silently ignored."""

from __future__ import annotations

import re
from pathlib import Path

from .loading import load_toml_text
from .report import Report


def keys(table: dict, prefix: str = "") -> set[str]:
    """Dotted keys of a TOML table: {"server.bind", ...}."""
    found = set()
    for key, value in table.items():
        if isinstance(value, dict):
            found |= keys(value, f"{prefix}{key}.")
        else:
            found.add(f"{prefix}{key}")
    return found


def documented_keys(root: Path, report: Report) -> set[str]:
    """Every key config/herald.toml documents: the ones it sets, and the ones
    it shows commented out (`# demo = true`) because their default is
    computed."""
    text = (root / "config/herald.toml").read_text()
    found = keys(load_toml_text(report, "config/herald.toml", text) or {})
    section = None
    for line in text.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        commented = re.match(r"^#\s*(\w+)\s*=", line)
        if section and commented:
            found.add(f"{section}.{commented.group(1)}")
    return found


# The keys that choose a Redis topology; herald refuses to start with more
# than one of them set (to a non-empty value).
TOPOLOGY_SELECTORS = ("redis.url", "redis.sentinel_nodes", "redis.cluster_nodes")


def known_keys(root: Path, report: Report) -> set[str]:
    """Every key a deployment file may set."""
    return documented_keys(root, report)


def topologies(settings: dict[str, object]) -> list[str]:
    """The topology keys among dotted `settings` that are set to something
    (an empty string or list leaves the key unset)."""
    return [key for key in TOPOLOGY_SELECTORS if settings.get(key) not in (None, "", [])]


def env_key(name: str) -> str | None:
    """The dotted key an environment variable sets (HERALD__SERVER__BIND:
    server.bind); None for a variable that is not a herald setting."""
    parts = name.split("__")
    if len(parts) == 3 and parts[0] == "HERALD":
        return f"{parts[1].lower()}.{parts[2].lower()}"
    return None
