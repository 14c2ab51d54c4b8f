"""docker-compose.yml: the rules that make `--scale gateway=N` work, and that
every file it mounts exists. The schema itself is checked by check-jsonschema
in scripts/check-deploy."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .herald_config import documented_keys, env_key
from .loading import load_toml_text, load_yaml, parse_duration
from .report import Report

AREA = "docker-compose.yml"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
REQUIRED_SERVICES = {"redis", "gateway", "lb", "prometheus", "grafana"}


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


def drain_timeout(root: Path, report: Report, gateway: dict) -> float:
    env = gateway.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    value = env.get("HERALD__SERVER__DRAIN_TIMEOUT")
    if value is None:
        shipped = load_toml_text(report, "config/herald.toml", (root / "config/herald.toml").read_text())
        value = (shipped or {}).get("server", {}).get("drain_timeout", "10s")
    parsed = parse_duration(value)
    report.check(parsed is not None, AREA, f"gateway drain timeout {value!r} is not a duration")
    return parsed.total_seconds() if parsed else 10.0


def check(root: Path, report: Report) -> dict | None:
    schema = root / "deploy/schemas/compose-spec.json"
    digest = hashlib.sha256(schema.read_bytes()).hexdigest() if schema.exists() else None
    report.check(
        digest == SCHEMA_SHA256,
        "deploy/schemas/compose-spec.json",
        "missing or changed; update its version and hash in deploy/schemas/README.md and compose.py together",
    )

    compose = load_yaml(report, root / "docker-compose.yml")
    if not isinstance(compose, dict):
        return None
    services = compose.get("services") or {}
    missing = REQUIRED_SERVICES - set(services)
    report.check(not missing, AREA, f"services missing: {sorted(missing)}")

    publishing = sorted(name for name, svc in services.items() if svc.get("ports"))
    report.check(publishing == ["lb"], AREA, f"only lb may publish ports; publishing: {publishing}")
    for name, svc in services.items():
        report.check("container_name" not in svc, AREA, f"{name}: container_name prevents scaling and clashes between projects")

    gateway = services.get("gateway") or {}
    build = gateway.get("build") or {}
    report.check(
        isinstance(build, dict) and build.get("context") == "." and build.get("dockerfile") == "deploy/Dockerfile",
        AREA, "gateway must build deploy/Dockerfile with context '.'",
    )
    redis_dep = (gateway.get("depends_on") or {}).get("redis") if isinstance(gateway.get("depends_on"), dict) else None
    report.check(
        isinstance(redis_dep, dict) and redis_dep.get("condition") == "service_healthy",
        AREA, "gateway must depend on redis with condition service_healthy",
    )
    env = gateway.get("environment") or {}
    report.check(str(env.get("HERALD__REDIS__URL", "")).startswith("redis://redis:"), AREA,
                 "gateway HERALD__REDIS__URL must point at the redis service")
    report.check(env.get("HERALD__LOG__FORMAT") == "json", AREA, "gateway should log json")
    report.check(env.get("HERALD__SERVER__BIND") == "0.0.0.0:8080", AREA, "gateway must bind 0.0.0.0:8080")
    known = documented_keys(root, report)
    for name in env:
        key = env_key(name)
        report.check(key is None or key in known, AREA, f"gateway sets {name}, but config/herald.toml has no {key}")
    nofile = ((gateway.get("ulimits") or {}).get("nofile") or {})
    hard = nofile.get("hard", nofile) if isinstance(nofile, dict) else nofile
    report.check(isinstance(hard, int) and hard >= 65536, AREA, "gateway needs a high nofile ulimit (>= 65536)")
    report.check("healthcheck" in gateway, AREA, "gateway needs a healthcheck")

    drain = drain_timeout(root, report, gateway)
    grace = parse_duration(gateway.get("stop_grace_period", "10s"))
    report.check(
        grace is not None and grace.total_seconds() > drain,
        AREA, f"gateway stop_grace_period must exceed the drain timeout ({drain:g}s), or the drain is cut by SIGKILL",
    )

    lb = services.get("lb") or {}
    version = image_version(lb.get("image", ""))
    report.check(
        version is not None and (version[:2] > (1, 27) or (version[:2] == (1, 27) and (len(version) < 3 or version[2] >= 3))),
        AREA, f"lb image {lb.get('image')!r}: `server ... resolve` needs nginx >= 1.27.3",
    )
    command = " ".join(lb.get("command") or [])
    mounts = dict((target, source) for source, target in bind_mounts(lb))
    conf = re.search(r"-c\s+(\S+)", command)
    conf_dir = str(Path(conf.group(1)).parent) if conf else None
    report.check(
        conf is not None and mounts.get(conf_dir) == "./deploy/nginx" and conf.group(1).endswith("/nginx.conf"),
        AREA, "lb must run nginx -c <dir>/nginx.conf with ./deploy/nginx mounted at <dir> (includes are relative)",
    )

    redis = services.get("redis") or {}
    version = image_version(redis.get("image", ""))
    report.check(version is not None and version[0] >= 7, AREA, "redis must be Redis 7 or newer (herald's #!lua publish script needs it)")
    report.check("healthcheck" in redis, AREA, "redis needs a healthcheck (gateway waits for it)")

    for name, svc in services.items():
        for source, _ in bind_mounts(svc):
            report.check((root / source).exists(), AREA, f"{name}: mounted path {source} does not exist")

    report.done(AREA)
    return compose
