"""deploy/Dockerfile and its ignore file, read with BuildKit's own parser.

Without a Docker engine the image cannot be built here, so this checks what
a build would trip over: a workspace member not copied, a source file the
ignore file drops, a Cargo.lock that `--locked` rejects, a toolchain older
than the locked dependencies need, and the runtime settings the contract
asks for.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import dockerfile

from .report import Report

AREA = "deploy/Dockerfile"


def ignore_patterns(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per line of a .dockerignore, in order."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negated, re.compile(f"^{regex}$")))
    return patterns


def ignored(patterns, path: str) -> bool:
    """Docker's rule: a path is excluded if a pattern matches it or a parent
    directory; later patterns (and `!` exceptions) win."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            result = not negated
    return result


EMBED = re.compile(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)')


def embedded_files(root: Path) -> list[str]:
    """Repository paths of files that tracked Rust sources embed at compile time."""
    sources = subprocess.run(["git", "ls-files", "--", "*.rs"], cwd=root,
                             capture_output=True, text=True, check=False).stdout.split()
    found = set()
    for source in sources:
        try:
            text = (root / source).read_text()
        except OSError:
            continue
        for target in EMBED.findall(text):
            resolved = ((root / source).parent / target).resolve()
            try:
                found.add(str(resolved.relative_to(root.resolve())))
            except ValueError:
                found.add(str(resolved))
    return sorted(found)


def stages(commands) -> list[list]:
    result: list[list] = []
    for command in commands:
        if command.cmd.upper() == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def locked_metadata(root: Path, report: Report) -> dict | None:
    try:
        run = subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1"],
            cwd=root, capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        report.problem(AREA, f"cannot run cargo metadata: {err}")
        return None
    if run.returncode != 0:
        report.problem(AREA, "the image runs `cargo build --locked`, and cargo rejects the lock: "
                       + run.stderr.strip().splitlines()[-1])
        return None
    return json.loads(run.stdout)


def version_tuple(text: str) -> tuple[int, int, int]:
    """(1, 89, 0) for "1.89": a toolchain named by minor version is its .0."""
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def check(root: Path, report: Report) -> dict:
    """Returns facts other checks compare against (uid, workdir)."""
    facts: dict = {}
    path = root / "deploy/Dockerfile"
    try:
        commands = dockerfile.parse_file(str(path))
    except (OSError, dockerfile.GoParseError) as err:
        report.problem(AREA, f"does not parse: {err}")
        return facts
    all_stages = stages(commands)
    report.check(len(all_stages) >= 2, AREA, "must be a multi-stage build")
    if len(all_stages) < 2:
        return facts
    builder, runtime = all_stages[0], all_stages[-1]

    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
            for c in commands if c.cmd.upper() == "ARG" and "=" in c.value[0]}
    builder_image = builder[0].value[0].replace("${RUST_VERSION}", args.get("RUST_VERSION", "?"))
    runtime_image = runtime[0].value[0]
    suite = re.search(r"-(bookworm|bullseye|trixie)$", builder_image)
    report.check(
        suite is not None and suite.group(1) in runtime_image,
        AREA, f"builder {builder_image} and runtime {runtime_image} must be the same Debian release (glibc)",
    )
    report.check("slim" in runtime_image or "distroless" in runtime_image, AREA,
                 f"runtime image {runtime_image} should be slim or distroless")

    # Every workspace member must be in the build context copy.
    copies = [c for c in builder if c.cmd.upper() == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    copied = [src.rstrip("/") for c in copies for src in c.value[:-1]]
    copied_extra: list[str] = []
    workspace = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]
    for member in workspace.get("members", []):
        report.check(any(member == src or member.startswith(src + "/") for src in copied), AREA,
                     f"workspace member {member} is not copied into the builder; cargo cannot load the workspace")

    # Files the Rust code embeds at compile time (include_str!, include_bytes!)
    # can sit outside the copied directories (openapi.yaml at the root).
    for embedded in embedded_files(root):
        report.check(any(embedded == src or embedded.startswith(src + "/") for src in copied), AREA,
                     f"{embedded} is embedded by include_str!/include_bytes! but not copied into the builder")
        copied_extra.append(embedded)

    # Nothing the build copies may be dropped by the ignore file.
    ignore_file = root / "deploy/Dockerfile.dockerignore"
    if report.check(ignore_file.exists(), AREA, "deploy/Dockerfile.dockerignore is missing (target/ would be sent)"):
        patterns = ignore_patterns(ignore_file)
        report.check(ignored(patterns, "target/debug/herald"), "deploy/Dockerfile.dockerignore", "must exclude target/")
        runtime_copies = [src for c in runtime if c.cmd.upper() == "COPY"
                          and not any(f.startswith("--from") for f in c.flags) for src in c.value[:-1]]
        sources = copied + runtime_copies + copied_extra
        tracked = subprocess.run(["git", "ls-files", "--", *sources], cwd=root,
                                 capture_output=True, text=True, check=False).stdout.split()
        for src in sources:
            report.check((root / src).exists(), AREA, f"COPY source {src} does not exist")
        dropped = [f for f in tracked if ignored(patterns, f)]
        report.check(not dropped, "deploy/Dockerfile.dockerignore",
                     f"excludes files the build copies: {dropped[:5]}")

    # The toolchain must be new enough for the locked dependencies.
    meta = locked_metadata(root, report)
    if meta is not None and "RUST_VERSION" in args:
        needed = max((version_tuple(p["rust_version"]), p["name"]) for p in meta["packages"] if p.get("rust_version"))
        report.check(version_tuple(args["RUST_VERSION"]) >= needed[0], AREA,
                     f"RUST_VERSION {args['RUST_VERSION']} is older than {needed[1]} needs "
                     f"({'.'.join(map(str, needed[0]))})")
    build_runs = " ".join(" ".join(c.value) for c in builder if c.cmd.upper() == "RUN")
    report.check("--locked" in build_runs and "-p herald" in build_runs, AREA,
                 "builder must run cargo build --locked -p herald")

    # Runtime contract.
    by_cmd: dict[str, list] = {}
    for c in runtime:
        by_cmd.setdefault(c.cmd.upper(), []).append(c)
    user = by_cmd.get("USER", [None])[-1]
    uid = user.value[0].split(":")[0] if user else "0"
    report.check(uid.isdigit() and int(uid) > 0, AREA, "runtime must run as a numeric non-root USER (runAsNonRoot checks it)")
    facts["uid"] = int(uid) if uid.isdigit() else None
    workdir = by_cmd.get("WORKDIR", [None])[-1]
    facts["workdir"] = workdir.value[0] if workdir else "/"
    report.check(any(c.value[-1] == f"{facts['workdir'].rstrip('/')}/config/herald.toml" and "config/herald.toml" in c.value[:-1]
                     for c in by_cmd.get("COPY", [])), AREA, "config/herald.toml must be copied to <WORKDIR>/config/herald.toml")
    env = " ".join(" ".join(c.value) for c in by_cmd.get("ENV", []))
    report.check("HERALD__SERVER__BIND" in env and "0.0.0.0:8080" in env, AREA, "runtime must set HERALD__SERVER__BIND=0.0.0.0:8080")
    report.check(any("8080" in c.value[0] for c in by_cmd.get("EXPOSE", [])), AREA, "EXPOSE 8080 missing")
    report.check(any(c.value[0] == "SIGTERM" for c in by_cmd.get("STOPSIGNAL", [])), AREA, "STOPSIGNAL SIGTERM missing")
    health = " ".join(" ".join(c.value) for c in by_cmd.get("HEALTHCHECK", []))
    report.check("/healthz" in health, AREA, "HEALTHCHECK must probe /healthz")
    probe = next((word for word in ("curl", "wget") if word in health), None)
    installs = " ".join(" ".join(c.value) for c in by_cmd.get("RUN", []))
    report.check(probe is not None and probe in installs, AREA, "the HEALTHCHECK's client must be installed in the runtime image")
    entry = " ".join(" ".join(c.value) for c in by_cmd.get("ENTRYPOINT", []) + by_cmd.get("CMD", []))
    report.check("herald" in entry and "serve" in entry, AREA, "the image must start `herald serve`")

    report.done(AREA)
    return facts
