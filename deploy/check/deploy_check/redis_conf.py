"""deploy/redis: the settings herald depends on are present in every shipped
config, the ones the standalone, Cluster and Sentinel data nodes share have
the same values, and sentinel.conf is in an order Sentinel accepts.
scripts/check-deploy then runs each file with a real redis-server."""

from __future__ import annotations

import shlex
from pathlib import Path

from .report import Report

DIR = "deploy/redis"
STANDALONE = f"{DIR}/redis.conf"
CLUSTER = f"{DIR}/redis-cluster.conf"
SENTINEL_DATA = f"{DIR}/redis-sentinel-data.conf"
SENTINEL = f"{DIR}/sentinel.conf"

# Settings of redis.conf whose reasons (written there) hold for every data
# node: the other data-node configs must repeat them with the same values.
SHARED = ("maxmemory", "maxmemory-policy", "client-output-buffer-limit pubsub", "appendonly", "appendfsync", "save")


def directives(report: Report, root: Path, rel: str) -> list[list[str]]:
    """The directive lines of a Redis config file, split as Redis does."""
    try:
        text = (root / rel).read_text()
    except OSError as err:
        report.problem(rel, f"cannot read: {err}")
        return []
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            lines.append(shlex.split(line))
        except ValueError as err:
            report.problem(rel, f"line {number}: {err}")
    return lines


def key(words: list[str]) -> str:
    """The name a directive is known by: two words for the ones Redis keys
    by their first argument (client-output-buffer-limit pubsub, sentinel
    monitor)."""
    if words[0] in ("client-output-buffer-limit", "sentinel") and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return words[0]


def settings(lines: list[list[str]]) -> dict[str, list[str]]:
    """Directive name -> its arguments (the last occurrence wins, as in Redis)."""
    found = {}
    for words in lines:
        name = key(words)
        found[name] = words[len(name.split()):]
    return found


def sentinel_monitor(root: Path, report: Report) -> dict | None:
    """The group sentinel.conf monitors: name, host, port, quorum and the
    other per-group settings, or None."""
    lines = directives(report, root, SENTINEL)
    monitors = [w for w in lines if w[:2] == ["sentinel", "monitor"]]
    if not report.check(len(monitors) == 1 and len(monitors[0]) == 6, SENTINEL,
                        "needs exactly one `sentinel monitor <name> <host> <port> <quorum>`"):
        return None
    _, _, name, host, port, quorum = monitors[0]
    per_group = {w[1]: w[3:] for w in lines if w[0] == "sentinel" and len(w) > 3 and w[2] == name and w[1] != "monitor"}
    try:
        return {"name": name, "host": host, "port": int(port), "quorum": int(quorum), "group": per_group, "lines": lines}
    except ValueError:
        report.problem(SENTINEL, f"monitor port {port!r} and quorum {quorum!r} must be numbers")
        return None


def check(root: Path, report: Report) -> None:
    standalone = settings(directives(report, root, STANDALONE))
    cluster = settings(directives(report, root, CLUSTER))
    data = settings(directives(report, root, SENTINEL_DATA))

    for rel, conf in ((STANDALONE, standalone), (CLUSTER, cluster), (SENTINEL_DATA, data)):
        report.check(conf.get("maxmemory-policy") == ["noeviction"], rel,
                     "maxmemory-policy must be noeviction (deploy/redis/redis.conf says why)")
        report.check("maxmemory" in conf, rel, "needs a maxmemory ceiling")
        # The check starts every file with its own --dir; compose uses the image's.
        report.check("dir" not in conf, rel, "must not set dir (the image's working directory, or the check's scratch one)")
        if rel != STANDALONE:
            for name in SHARED:
                report.check(conf.get(name) == standalone.get(name), rel,
                             f"{name} {' '.join(conf.get(name) or ['(unset)'])!s} differs from redis.conf's "
                             f"{' '.join(standalone.get(name) or ['(unset)'])}: same reasons, same value")
            for name in ("min-replicas-to-write", "min-replicas-max-lag"):
                report.check(name in conf, rel, f"set {name} explicitly, with the split-brain reasoning")

    report.check(cluster.get("cluster-enabled") == ["yes"], CLUSTER, "cluster-enabled yes")
    report.check(cluster.get("cluster-require-full-coverage") == ["no"], CLUSTER,
                 "cluster-require-full-coverage no: one shard down must not stop the others")
    report.check(cluster.get("cluster-preferred-endpoint-type") == ["hostname"], CLUSTER,
                 "cluster-preferred-endpoint-type hostname: clients get the announced names, not container IPs")
    timeout = (cluster.get("cluster-node-timeout") or ["?"])[0]
    report.check(timeout.isdigit(), CLUSTER, "set cluster-node-timeout explicitly (milliseconds)")
    report.check("cluster-announce-hostname" not in cluster, CLUSTER,
                 "cluster-announce-hostname differs per node: pass it on each node's command line, not in the shared file")
    report.check("replicaof" not in data and "replica-announce-ip" not in data, SENTINEL_DATA,
                 "replicaof and replica-announce-ip differ per node: pass them on the command line")

    monitor = sentinel_monitor(root, report)
    if monitor:
        lines = monitor["lines"]
        index = {key(w): i for i, w in reversed(list(enumerate(lines)))}
        resolve = index.get("sentinel resolve-hostnames")
        report.check(resolve is not None and lines[resolve][2:] == ["yes"] and resolve < index["sentinel monitor"], SENTINEL,
                     "`sentinel resolve-hostnames yes` must come before `sentinel monitor` (compose names, not IPs)")
        announce = index.get("sentinel announce-hostnames")
        report.check(announce is not None and lines[announce][2:] == ["yes"], SENTINEL,
                     "`sentinel announce-hostnames yes`: tell herald the names, not IPs that change")
        for name in ("down-after-milliseconds", "failover-timeout"):
            report.check(name in monitor["group"], SENTINEL, f"set sentinel {name} {monitor['name']} explicitly")
        report.check(monitor["quorum"] >= 2, SENTINEL, "quorum 1 lets one sentinel's own trouble start a failover")
    report.done(DIR)
