#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/ and prints the facts a test compares with the server.

Usage: check_deploy.py DEPLOY_DIR

Parses every YAML document (PyYAML), checks that the Deployment, Service and Secret fit together
(labels and selectors, ports, the Secret key DATABASE_URL comes from, gRPC probes on the served
port, a termination grace longer than the server's own) and prints JSON:
{"replicas", "args", "env", "container_port", "probe_services", "grace", "server_grace"}.
Exit status 1 with every problem printed when something does not fit.
"""

import json
import pathlib
import sys

import yaml


def main() -> int:
    docs = []
    for path in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    for kind in ("Deployment", "Service", "Secret"):
        need(len(by_kind.get(kind, [])) == 1, f"exactly one {kind}")
    if problems:
        print("\n".join(problems))
        return 1
    dep, svc, sec = by_kind["Deployment"][0], by_kind["Service"][0], by_kind["Secret"][0]
    need(dep.get("apiVersion") == "apps/v1", "Deployment apiVersion apps/v1")
    spec = dep["spec"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    need(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
         "the Deployment's selector matches its pod labels")
    need(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
         "the Service's selector matches the pod labels")
    need(spec.get("replicas", 1) >= 2, "at least two replicas")
    containers = pod["spec"]["containers"]
    need(len(containers) == 1, "one container")
    c = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    need("grpc" in ports, "a container port named grpc")
    port = ports.get("grpc")
    for sp in svc["spec"]["ports"]:
        need(sp.get("targetPort") in ("grpc", port), "the Service targets the grpc port")
        need(sp.get("appProtocol") == "kubernetes.io/h2c", "the Service port says h2c")
    env = {e["name"]: e for e in c.get("env", [])}
    db = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    need(db.get("name") == sec["metadata"]["name"], "DATABASE_URL comes from the Secret")
    need(db.get("key") in (sec.get("stringData") or {}) or db.get("key") in (sec.get("data") or {}),
         "the Secret has the key DATABASE_URL reads")
    probes = {}
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = c.get(name)
        need(probe is not None and "grpc" in probe, f"{name} is a gRPC probe")
        if probe and "grpc" in probe:
            need(probe["grpc"].get("port") == port, f"{name} probes the grpc port")
            probes[name] = probe["grpc"].get("service", "")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    server_grace = int(env.get("JOBTRACK_SHUTDOWN_GRACE_SECS", {}).get("value", "10"))
    need(grace > server_grace, "the pod's grace period is longer than the server's")
    if problems:
        print("\n".join(problems))
        return 1
    print(json.dumps({
        "replicas": spec["replicas"],
        "args": c.get("args", []),
        "env": {k: v.get("value") for k, v in env.items() if "value" in v},
        "container_port": port,
        "probe_services": sorted(set(probes.values())),
        "grace": grace,
        "server_grace": server_grace,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
