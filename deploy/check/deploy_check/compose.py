"""docker-compose.yml and its Redis Cluster and Sentinel variants: the rules
that make `--scale gateway=N` work, that every file they mount exists, that
the gateways point at Redis services that exist and are started first, and
that the variants differ from docker-compose.yml only in Redis. The schema
itself is checked by check-jsonschema in scripts/check-deploy."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from . import redis_conf
from .herald_config import env_key, known_keys, topologies
from .loading import load_toml_text, load_yaml, parse_duration
from .report import Report

MAIN = "docker-compose.yml"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
# The services every variant has, besides its Redis ones.
COMMON_SERVICES = {"gateway", "lb", "prometheus", "grafana"}
# Services the variants must copy from docker-compose.yml unchanged.
SHARED_SERVICES = ("lb", "prometheus", "grafana")
# File -> the topology key its gateways use.
VARIANTS = {
    MAIN: "redis.url",
    "docker-compose.cluster.yml": "redis.cluster_nodes",
    "docker-compose.sentinel.yml": "redis.sentinel_nodes",
}
# A Redis Cluster needs at least three primaries to elect replacements; the
# compose layout gives each one replica.
CLUSTER_PRIMARIES = 3
CLUSTER_REPLICAS = 1


def image_version(image: str) -> tuple[int, ...] | None:
    """(1, 28) for "nginx:1.28", (7, 4) for "redis:7.4-bookworm"; None if no version."""
    tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
    match = re.match(r"v?(\d+(?:\.\d+)*)", tag)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of every relative bind mount."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if parts[0].startswith("."):
                mounts.append((parts[0], parts[1]))
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    """Service -> the condition it is waited for with."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (dep or {}).get("condition", "service_started") for name, dep in deps.items()}


def command_words(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def option(words: list[str], name: str, count: int = 1) -> list[str] | None:
    """The `count` values after --name on a redis-server command line."""
    if f"--{name}" in words:
        i = words.index(f"--{name}")
        return words[i + 1:i + 1 + count]
    return None


def redis_config(service: dict) -> str | None:
    """The repository file a `redis-server <file> ...` service runs, through
    its bind mount; None if it runs something else."""
    words = command_words(service)
    if len(words) < 2 or words[0] != "redis-server":
        return None
    mounts = {target: source for source, target in bind_mounts(service)}
    source = mounts.get(words[1])
    return str(Path(source)) if source else "(not mounted)"


def urls(value: str) -> list[tuple[str | None, int | None]]:
    """(host, port) of each URL in a comma-separated list."""
    found = []
    for item in value.split(","):
        parts = urlsplit(item.strip())
        try:
            port = parts.port
        except ValueError:
            port = None
        found.append((parts.hostname if parts.scheme in ("redis", "rediss") else None, port))
    return found


def drain_timeout(root: Path, report: Report, area: str, gateway: dict) -> float:
    value = environment(gateway).get("HERALD__SERVER__DRAIN_TIMEOUT")
    if value is None:
        shipped = load_toml_text(report, "config/herald.toml", (root / "config/herald.toml").read_text())
        value = (shipped or {}).get("server", {}).get("drain_timeout", "10s")
    parsed = parse_duration(value)
    report.check(parsed is not None, area, f"gateway drain timeout {value!r} is not a duration")
    return parsed.total_seconds() if parsed else 10.0


def check_common(root: Path, report: Report, area: str, compose: dict) -> None:
    """The rules every variant follows: scalable gateways, lb the only port,
    known settings, a drain that fits, mounts that exist."""
    services = compose.get("services") or {}
    missing = COMMON_SERVICES - set(services)
    report.check(not missing, area, f"services missing: {sorted(missing)}")

    publishing = sorted(name for name, svc in services.items() if svc.get("ports"))
    report.check(publishing == ["lb"], area, f"only lb may publish ports; publishing: {publishing}")
    for name, svc in services.items():
        report.check("container_name" not in svc, area, f"{name}: container_name prevents scaling and clashes between projects")

    gateway = services.get("gateway") or {}
    build = gateway.get("build") or {}
    report.check(
        isinstance(build, dict) and build.get("context") == "." and build.get("dockerfile") == "deploy/Dockerfile",
        area, "gateway must build deploy/Dockerfile with context '.'",
    )
    env = environment(gateway)
    report.check(env.get("HERALD__LOG__FORMAT") == "json", area, "gateway should log json")
    report.check(env.get("HERALD__SERVER__BIND") == "0.0.0.0:8080", area, "gateway must bind 0.0.0.0:8080")
    known = known_keys(root, report)
    for name in env:
        key = env_key(name)
        report.check(key is None or key in known, area, f"gateway sets {name}, but config/herald.toml has no {key}")
    nofile = ((gateway.get("ulimits") or {}).get("nofile") or {})
    hard = nofile.get("hard", nofile) if isinstance(nofile, dict) else nofile
    report.check(isinstance(hard, int) and hard >= 65536, area, "gateway needs a high nofile ulimit (>= 65536)")
    report.check("healthcheck" in gateway, area, "gateway needs a healthcheck")

    drain = drain_timeout(root, report, area, gateway)
    grace = parse_duration(gateway.get("stop_grace_period", "10s"))
    report.check(
        grace is not None and grace.total_seconds() > drain,
        area, f"gateway stop_grace_period must exceed the drain timeout ({drain:g}s), or the drain is cut by SIGKILL",
    )

    lb = services.get("lb") or {}
    version = image_version(lb.get("image", ""))
    report.check(
        version is not None and (version[:2] > (1, 27) or (version[:2] == (1, 27) and (len(version) < 3 or version[2] >= 3))),
        area, f"lb image {lb.get('image')!r}: `server ... resolve` needs nginx >= 1.27.3",
    )
    command = " ".join(lb.get("command") or [])
    mounts = dict((target, source) for source, target in bind_mounts(lb))
    conf = re.search(r"-c\s+(\S+)", command)
    conf_dir = str(Path(conf.group(1)).parent) if conf else None
    report.check(
        conf is not None and mounts.get(conf_dir) == "./deploy/nginx" and conf.group(1).endswith("/nginx.conf"),
        area, "lb must run nginx -c <dir>/nginx.conf with ./deploy/nginx mounted at <dir> (includes are relative)",
    )

    for name, svc in services.items():
        if str(svc.get("image", "")).startswith("redis:"):
            version = image_version(svc["image"])
            report.check(version is not None and version[0] >= 7, area,
                         f"{name}: Redis 7 or newer (herald's #!lua scripts, sharded pub/sub)")
            one_shot = svc.get("restart") == "no"
            report.check(one_shot or "healthcheck" in svc, area, f"{name} needs a healthcheck (what depends on it waits for it)")
        for source, _ in bind_mounts(svc):
            report.check((root / source).exists(), area, f"{name}: mounted path {source} does not exist")
    named = {v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])
             if isinstance(v, str) and ":" in v and not v.startswith((".", "/"))}
    declared = set(compose.get("volumes") or {})
    report.check(named <= declared, area, f"named volumes not declared at the top level: {sorted(named - declared)}")


def check_topology(root: Path, report: Report, area: str, compose: dict, expected: str) -> None:
    """The gateway selects exactly the topology this file is for, and every
    Redis endpoint it names is a service of the right kind, started first."""
    services = compose.get("services") or {}
    gateway = services.get("gateway") or {}
    env = environment(gateway)
    chosen = topologies({env_key(k): v for k, v in env.items() if env_key(k)})
    if not report.check(len(chosen) <= 1, area, f"gateway sets more than one Redis topology: {chosen} (herald refuses to start)"):
        return
    if not report.check(chosen == [expected], area, f"gateway must use {expected} in this file; it sets {chosen or 'none'}"):
        return
    deps = depends_on(gateway)
    value = env[f"HERALD__{expected.replace('.', '__').upper()}"]
    endpoints = urls(value)
    for host, port in endpoints:
        report.check(host in services, area, f"{expected} names {host!r}, which is not a service of this file")

    def runs(name: str, rel: str) -> bool:
        return redis_config(services.get(name) or {}) == rel

    if expected == "redis.url":
        (host, port), = endpoints[:1] or [(None, None)]
        report.check(host is not None and runs(host, redis_conf.STANDALONE) and port == 6379, area,
                     f"gateway HERALD__REDIS__URL must point at port 6379 of a service running {redis_conf.STANDALONE}")
        report.check(deps.get(host) == "service_healthy", area, f"gateway must depend on {host} with condition service_healthy")

    elif expected == "redis.cluster_nodes":
        nodes = sorted(name for name in services if runs(name, redis_conf.CLUSTER))
        wanted = CLUSTER_PRIMARIES * (1 + CLUSTER_REPLICAS)
        report.check(len(nodes) == wanted, area,
                     f"{len(nodes)} services run {redis_conf.CLUSTER}; the layout is {CLUSTER_PRIMARIES} primaries with {CLUSTER_REPLICAS} replica each")
        for name in nodes:
            report.check(option(command_words(services[name]), "cluster-announce-hostname") == [name], area,
                         f"{name} must announce its service name: --cluster-announce-hostname {name}")
        report.check(all(host in nodes and port == 6379 for host, port in endpoints), area,
                     f"every seed in {expected} must be port 6379 of a cluster node")
        conf = redis_conf.settings(redis_conf.directives(report, root, redis_conf.CLUSTER))
        needed = int((conf.get("min-replicas-to-write") or ["0"])[0])
        report.check(CLUSTER_REPLICAS > needed, area,
                     f"{CLUSTER_REPLICAS} replica per primary with min-replicas-to-write {needed}: one lost replica, "
                     "or any failover, would stop writes to that shard")
        inits = [name for name, svc in services.items()
                 if "--cluster" in " ".join(command_words(svc)) and "create" in " ".join(command_words(svc))]
        if report.check(len(inits) == 1, area, "one one-shot service must run `redis-cli --cluster create`"):
            init = services[inits[0]]
            script = " ".join(command_words(init))
            report.check(init.get("restart") == "no", area, f"{inits[0]}: a one-shot service needs restart: \"no\"")
            report.check(f"--cluster-replicas {CLUSTER_REPLICAS}" in script and "--cluster-yes" in script, area,
                         f"{inits[0]}: needs --cluster-replicas {CLUSTER_REPLICAS} --cluster-yes")
            listed = re.search(r'nodes="([^"]*)"', script)
            report.check(listed is not None and sorted(listed.group(1).split()) == nodes, area,
                         f"{inits[0]}: its nodes=\"...\" must list every cluster node {nodes}")
            init_deps = depends_on(init)
            report.check(all(init_deps.get(n) == "service_healthy" for n in nodes), area,
                         f"{inits[0]} must depend on every cluster node with condition service_healthy")
            report.check(deps.get(inits[0]) == "service_completed_successfully", area,
                         f"gateway must depend on {inits[0]} with condition service_completed_successfully")

    elif expected == "redis.sentinel_nodes":
        monitor = redis_conf.sentinel_monitor(root, report)
        sentinels = sorted(name for name, svc in services.items()
                           if re.search(r"\bredis-server\s.*--sentinel\b", " ".join(command_words(svc))))
        for name in sentinels:
            # Sentinels rewrite their config file: they must run a writable
            # copy of the read-only mount, not the mount itself.
            mounted = {source: target for source, target in bind_mounts(services[name])}.get(f"./{redis_conf.SENTINEL}")
            script = " ".join(command_words(services[name]))
            copy_to = re.search(rf"\bcp\s+{re.escape(mounted or '?')}\s+(\S+)", script)
            runs_copy = copy_to is not None and re.search(rf"redis-server\s+{re.escape(copy_to.group(1))}\s", script)
            report.check(mounted is not None and runs_copy is not None, area,
                         f"{name} must mount ./{redis_conf.SENTINEL} and run `redis-server <copy> --sentinel` from a copy "
                         "of it (sentinels rewrite their config file)")
        report.check(sorted(host for host, _ in endpoints) == sentinels and all(port == 26379 for _, port in endpoints), area,
                     f"{expected} must list port 26379 of every sentinel service {sentinels}")
        for name in sentinels:
            report.check(deps.get(name) == "service_healthy", area, f"gateway must depend on {name} with condition service_healthy")
        data = sorted(name for name in services if runs(name, redis_conf.SENTINEL_DATA))
        for name in data:
            report.check(option(command_words(services[name]), "replica-announce-ip") == [name], area,
                         f"{name} must announce its service name: --replica-announce-ip {name}")
        if monitor:
            report.check(env.get("HERALD__REDIS__SENTINEL_MASTER") == monitor["name"], area,
                         f"HERALD__REDIS__SENTINEL_MASTER must be {monitor['name']!r}, the group sentinel.conf monitors")
            report.check(len(sentinels) >= 3 and len(sentinels) // 2 < monitor["quorum"] <= len(sentinels), area,
                         f"quorum {monitor['quorum']} must be a majority of the {len(sentinels)} sentinels (at least 3)")
            primary = monitor["host"]
            report.check(primary in data and monitor["port"] == 6379
                         and option(command_words(services[primary]), "replicaof") is None, area,
                         f"sentinel.conf monitors {primary}:{monitor['port']}, which must be the data service started as primary")
            replicas = [name for name in data if name != primary]
            for name in replicas:
                report.check(option(command_words(services[name]), "replicaof", 2) == [primary, "6379"], area,
                             f"{name} must start as a replica: --replicaof {primary} 6379")
            conf = redis_conf.settings(redis_conf.directives(report, root, redis_conf.SENTINEL_DATA))
            needed = int((conf.get("min-replicas-to-write") or ["0"])[0])
            report.check(len(replicas) > needed, area,
                         f"{len(replicas)} replicas with min-replicas-to-write {needed}: one lost replica, or any failover, "
                         "would stop writes; run more replicas than min-replicas-to-write")


def check_same_as_main(report: Report, area: str, compose: dict, main: dict) -> None:
    """A variant's non-Redis services are docker-compose.yml's, so the
    variants cannot drift from the file the rest of deploy/ is checked
    against (nginx, Prometheus and Grafana mounts, the gateway's settings)."""
    services = compose.get("services") or {}
    main_services = main.get("services") or {}
    for name in SHARED_SERVICES:
        report.check(services.get(name) == main_services.get(name), area,
                     f"{name} differs from docker-compose.yml's; keep them identical")

    def without_redis(gateway: dict) -> dict:
        gateway = copy.deepcopy(gateway or {})
        gateway.pop("depends_on", None)
        gateway["environment"] = {k: v for k, v in environment(gateway).items() if not k.startswith("HERALD__REDIS__")}
        return gateway

    report.check(without_redis(services.get("gateway")) == without_redis(main_services.get("gateway")), area,
                 "gateway differs from docker-compose.yml's in more than its HERALD__REDIS__* settings and depends_on")


def check(root: Path, report: Report) -> dict | None:
    """Checks every compose file; returns docker-compose.yml's content, which
    the nginx, Prometheus and Grafana checks compare their files with."""
    schema = root / "deploy/schemas/compose-spec.json"
    digest = hashlib.sha256(schema.read_bytes()).hexdigest() if schema.exists() else None
    report.check(
        digest == SCHEMA_SHA256,
        "deploy/schemas/compose-spec.json",
        "missing or changed; update its version and hash in deploy/schemas/README.md and compose.py together",
    )
    redis_conf.check(root, report)

    main = None
    for rel, topology in VARIANTS.items():
        compose = load_yaml(report, root / rel)
        if not isinstance(compose, dict):
            continue
        check_common(root, report, rel, compose)
        check_topology(root, report, rel, compose, topology)
        if rel == MAIN:
            main = compose
        elif main is not None:
            check_same_as_main(report, rel, compose, main)
        report.done(rel)
    return main
