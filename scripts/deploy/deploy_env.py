#!/usr/bin/env python3
"""deploy_env.py ROOT SOURCE: prints the environment a deployment gives the
fmserve container, one NAME=value per line, so tests/deploy/test_deploy_env.c
can start the real server with exactly that configuration.

SOURCE is one of
  k8s/overlays/gpu, k8s/overlays/cpu   the fmserve container of the rendered Deployment: its
                                       ConfigMap (envFrom) plus literal env values; variables
                                       from Secrets print as NAME=<secret>
  compose, compose-gpu                 the compose service fmserve (docker-compose.yml, plus
                                       docker-compose.gpu.yml), ${VAR:-default} resolved to
                                       the default
  docker/Dockerfile.cpu, docker/Dockerfile.gpu   the final stage's ENV
  healthcheck:docker/Dockerfile.cpu    the final stage's HEALTHCHECK command as one shell
                                       command line (not NAME=value)
"""
import json
import os
import re
import shlex
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_deploy  # noqa: E402
import kustomize_render  # noqa: E402


def k8s_env(root, overlay):
    resources = kustomize_render.render(os.path.join(root, overlay))
    cms = {r["metadata"]["name"]: r.get("data") or {} for r in resources if r.get("kind") == "ConfigMap"}
    dep = next(r for r in resources if r.get("kind") == "Deployment" and r["metadata"]["name"] == "fmserve")
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "fmserve")
    env = {}
    for ef in c.get("envFrom") or []:
        env.update(cms[ef["configMapRef"]["name"]])
    for e in c.get("env") or []:
        env[e["name"]] = e["value"] if "value" in e else "<secret>"
    return env


def _interpolate(value):
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        body = m.group(1) or m.group(2)
        for sep in (":-", "-"):
            if sep in body:
                return body.split(sep, 1)[1]
        return ""
    return re.sub(r"\$\$|\$\{([^}]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, str(value))


def compose_env(root, with_gpu):
    files = ["docker-compose.yml"] + (["docker-compose.gpu.yml"] if with_gpu else [])
    env = {}
    for f in files:
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        svc_env = ((doc.get("services") or {}).get("fmserve") or {}).get("environment") or {}
        if isinstance(svc_env, list):
            svc_env = dict(item.split("=", 1) for item in svc_env)
        env.update({k: _interpolate(v) for k, v in svc_env.items()})
    return env


def _final_stage(path):
    stage = []
    for n, ins, rest in check_deploy.dockerfile_instructions(path):
        if ins == "FROM":
            stage = []
        stage.append((ins, rest))
    return stage


def dockerfile_env(path):
    env = {}
    for ins, rest in _final_stage(path):
        if ins != "ENV":
            continue
        for token in shlex.split(rest):
            if "=" not in token:
                raise SystemExit(f"{path}: ENV {rest!r}: use the NAME=value form")
            k, v = token.split("=", 1)
            env[k] = v
    return env


def healthcheck(path):
    for ins, rest in _final_stage(path):
        if ins == "HEALTHCHECK":
            cmd = rest[rest.index("CMD") + 3:].strip()
            if cmd.startswith("["):
                argv = json.loads(cmd)
                if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3:
                    return argv[2]
                return " ".join(shlex.quote(a) for a in argv)
            return cmd
    raise SystemExit(f"{path}: no HEALTHCHECK")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, source = os.path.abspath(argv[1]), argv[2]
    if source.startswith("healthcheck:"):
        print(healthcheck(os.path.join(root, source.split(":", 1)[1])))
        return 0
    if source.startswith("k8s/"):
        env = k8s_env(root, source)
    elif source in ("compose", "compose-gpu"):
        env = compose_env(root, source == "compose-gpu")
    elif source.startswith("docker/"):
        env = dockerfile_env(os.path.join(root, source))
    else:
        print(f"deploy_env: unknown source {source}", file=sys.stderr)
        return 2
    for k, v in env.items():
        print(f"{k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
