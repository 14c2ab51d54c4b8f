"""deploy/k8s: beyond the schema (kubernetes-validate, in scripts/check-deploy),
the manifests must agree with each other, with the image and with herald's
shutdown: selectors that select, a grace period longer than the drain."""

from __future__ import annotations

import re
from pathlib import Path

from .herald_config import env_key, keys, known_keys, topologies
from .loading import load_toml_text, load_yaml, parse_duration
from .report import Report

DIR = "deploy/k8s"


def check(root: Path, report: Report, image_facts: dict) -> None:
    base = root / DIR
    kustomization = load_yaml(report, base / "kustomization.yaml") or {}
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    report.check(listed == present, f"{DIR}/kustomization.yaml",
                 f"resources {sorted(listed)} must list exactly the manifests {sorted(present)}")

    objects = {}
    for name in sorted(present):
        doc = load_yaml(report, base / name)
        for obj in doc if isinstance(doc, list) else [doc]:
            if isinstance(obj, dict):
                objects[obj.get("kind")] = obj
    for kind in ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        report.check(kind in objects, DIR, f"no {kind}")
    deployment = objects.get("Deployment")
    if not deployment:
        return
    area = f"{DIR}/deployment.yaml"
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    containers = pod["spec"]["containers"]
    container = containers[0]

    def selects(selector: dict) -> bool:
        return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())

    report.check(selects(deployment["spec"]["selector"].get("matchLabels", {})), area, "selector does not match pod labels")
    if "Service" in objects:
        service = objects["Service"]
        report.check(selects(service["spec"].get("selector", {})), f"{DIR}/service.yaml", "selector does not match the pods")
        port_names = {p.get("name") for p in container.get("ports", [])}
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            report.check(target in port_names or target == 8080, f"{DIR}/service.yaml", f"targetPort {target} is not a container port")
    if "PodDisruptionBudget" in objects:
        report.check(selects(objects["PodDisruptionBudget"]["spec"]["selector"].get("matchLabels", {})),
                     f"{DIR}/pdb.yaml", "selector does not match the pods")
    if "HorizontalPodAutoscaler" in objects:
        ref = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
        report.check(ref.get("kind") == "Deployment" and ref.get("name") == name, f"{DIR}/hpa.yaml", "must target the Deployment")
        report.check("cpu" in (container.get("resources", {}).get("requests") or {}), area,
                     "the HPA's CPU utilization needs a CPU request")

    # Probes: readiness on /readyz, liveness on /healthz (README.md, "Health and lifecycle").
    report.check((container.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/readyz", area,
                 "readinessProbe must GET /readyz")
    report.check((container.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/healthz", area,
                 "livenessProbe must GET /healthz (not /readyz: a Redis outage must not restart every pod)")

    # Config: the ConfigMap replaces the image's config/herald.toml, with keys herald knows.
    config_map = objects.get("ConfigMap", {})
    toml_text = (config_map.get("data") or {}).get("herald.toml")
    settings = {}
    if report.check(toml_text is not None, f"{DIR}/configmap.yaml", "no herald.toml key"):
        settings = load_toml_text(report, f"{DIR}/configmap.yaml herald.toml", toml_text) or {}
        unknown = keys(settings) - known_keys(root, report)
        report.check(not unknown, f"{DIR}/configmap.yaml", f"keys not in config/herald.toml: {sorted(unknown)}")
        report.check(settings.get("server", {}).get("bind", "").startswith("0.0.0.0:"), f"{DIR}/configmap.yaml",
                     "server.bind must listen on all interfaces in a pod")
    known = known_keys(root, report)
    for env in container.get("env", []):
        key = env_key(env.get("name", ""))
        report.check(key is None or key in known, area, f"sets {env.get('name')}, but config/herald.toml has no {key}")
    # At most one Redis topology, between the ConfigMap and the environment
    # (a value from a Secret counts as set).
    redis_settings = {f"redis.{k}": v for k, v in (settings.get("redis") or {}).items()}
    for env in container.get("env", []):
        key = env_key(env.get("name", ""))
        if key:
            redis_settings[key] = env.get("value") if "valueFrom" not in env else "<from a Secret or ConfigMap>"
    chosen = topologies(redis_settings)
    report.check(len(chosen) <= 1, area, f"sets more than one Redis topology {chosen} (ConfigMap and env together); herald refuses to start")
    mount = next((m for m in container.get("volumeMounts", []) if m.get("name") == "config"), None)
    workdir = image_facts.get("workdir", "/app").rstrip("/")
    report.check(mount is not None and mount.get("mountPath") == f"{workdir}/config", area,
                 f"the ConfigMap must be mounted at {workdir}/config (herald reads config/herald.toml from its working directory)")

    # Shutdown: preStop sleep + drain must fit in the grace period.
    drain = parse_duration(settings.get("server", {}).get("drain_timeout", "10s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = " ".join(pre_stop.get("exec", {}).get("command", []))
    sleep = re.search(r"sleep\s+(\d+)", command)
    sleep_s = int(sleep.group(1)) if sleep else pre_stop.get("sleep", {}).get("seconds", 0)
    report.check(sleep_s > 0, area, "preStop should sleep a few seconds so endpoints are removed before the drain")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    report.check(drain is not None and grace > sleep_s + drain.total_seconds(), area,
                 f"terminationGracePeriodSeconds {grace} must exceed preStop {sleep_s}s + drain_timeout {drain}")

    # Hardening and resources.
    security = pod["spec"].get("securityContext", {})
    report.check(security.get("runAsNonRoot") is True, area, "runAsNonRoot must be true")
    if image_facts.get("uid"):
        report.check(security.get("runAsUser") == image_facts["uid"], area,
                     f"runAsUser must be the image's uid {image_facts['uid']}")
    csc = container.get("securityContext", {})
    report.check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False, area,
                 "container must have readOnlyRootFilesystem and no privilege escalation")
    resources = container.get("resources", {})
    report.check(bool(resources.get("requests")) and bool(resources.get("limits")), area, "requests and limits required")
    report.done(DIR)
