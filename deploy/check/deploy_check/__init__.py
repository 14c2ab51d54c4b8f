"""Project checks for herald's deployment files, run by scripts/check-deploy.

Schema validation (Compose, Kubernetes), linting (hadolint, shellcheck) and
`nginx -t` are done by those tools in the script itself. This package checks
what no generic tool knows: that the files agree with each other and with
herald's contract (its metrics, probes and settings, as README.md and
config/herald.toml describe them), e.g. that the gateway service can be
scaled, that every PromQL expression names a metric herald exports, that the
Dockerfile copies every workspace member.
"""
