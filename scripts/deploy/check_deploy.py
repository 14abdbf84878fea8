#!/usr/bin/env python3
"""check_deploy.py: the deployment checks no off-the-shelf linter makes.
Run by scripts/lint-deploy.sh with the test venv's Python; each check prints
its findings and the exit code is the verdict (0 clean, 1 findings, 2 usage).

  check_deploy.py ROOT dockerfiles     every COPY/ADD source exists in the repository and survives
                                       .dockerignore; COPY --from names a stage; the final stage runs
                                       as a numeric non-root USER with a HEALTHCHECK; copied scripts
                                       are executable
  check_deploy.py ROOT compose         compose references: depends_on, named volumes, build contexts,
                                       stop_grace_period longer than the drain timeout
  check_deploy.py ROOT k8s-schema      every manifest under k8s/ and every rendered kustomization
                                       validates (kubernetes-validate, strict) against the oldest and
                                       newest Kubernetes versions below; unknown kinds fail unless they
                                       are the documented CRDs (checked structurally)
  check_deploy.py ROOT k8s-policy      security context, probes, resources, grace period vs drain,
                                       Service/PDB/HPA/NetworkPolicy wiring, Secret keys documented
  check_deploy.py ROOT workflows       action pins, timeouts, permissions, push-only image job
"""
import fnmatch
import glob
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kustomize_render  # noqa: E402

K8S_VERSIONS = ("1.29.0", "1.37.0")
# Custom resources: no schema ships with kubernetes-validate; these kinds get
# the structural checks in _check_crd instead.
KNOWN_CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
RENDERED = ("k8s/overlays/gpu", "k8s/overlays/cpu", "k8s/postgres-dev")


class Findings:
    def __init__(self, check):
        self.check = check
        self.items = []

    def add(self, where, msg):
        self.items.append(f"{where}: {msg}")

    def finish(self, what):
        for item in self.items:
            print(f"  {self.check}: {item}")
        if self.items:
            print(f"{self.check}: {len(self.items)} problem(s)")
            return 1
        print(f"{self.check}: ok ({what})")
        return 0


def tracked_files(root):
    """Files a commit of the working tree would hold: git's tracked files plus
    untracked ones .gitignore does not exclude; without git, everything."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True)
        files = [f for f in out.stdout.decode().split("\0") if f]
        if files:
            return {f for f in files if os.path.lexists(os.path.join(root, f))}
    except (OSError, subprocess.CalledProcessError):
        pass
    found = set()
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git" and not x.startswith("build")]
        for n in names:
            found.add(os.path.relpath(os.path.join(d, n), root))
    return found


def load_yaml(path, f):
    try:
        with open(path, encoding="utf-8") as fh:
            return [d for d in yaml.safe_load_all(fh) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        f.add(path, f"cannot read YAML: {e}")
        return []


# ---- .dockerignore (moby/patternmatcher semantics) --------------------------

def _pattern_regex(pattern):
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
                if i + 1 < len(pattern) and pattern[i + 1] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".+()|{}$":
            out += "\\" + ch
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += ch
        i += 1
    return re.compile(out + "$")


def read_dockerignore(path):
    patterns = []
    if not os.path.isfile(path):
        return patterns
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = os.path.normpath(line).replace(os.sep, "/")
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            patterns.append((exclusion, line, _pattern_regex(line)))
    return patterns


def ignored(patterns, path):
    """True when `path` (relative, /-separated) is left out of the context."""
    parts = path.split("/")
    result = False
    for exclusion, pat, rx in patterns:
        match = bool(rx.match(path))
        ndirs = len(pat.split("/"))
        if not match and len(parts) > 1 and ndirs <= len(parts) - 1:
            match = bool(rx.match("/".join(parts[:ndirs])))
        if match:
            result = not exclusion
    return result


# ---- Dockerfiles -------------------------------------------------------------

def dockerfile_instructions(path):
    """(line number, INSTRUCTION, argument text) with continuations joined."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            buf = ""
    return out


def _copy_args(rest):
    """Flags and paths of a COPY/ADD (shell or JSON form)."""
    flags, words = {}, []
    if rest.startswith("["):
        import json
        try:
            words = json.loads(rest)
        except ValueError:
            return None, None
    else:
        tokens = rest.split()
        while tokens and tokens[0].startswith("--"):
            k, _, v = tokens.pop(0)[2:].partition("=")
            flags[k] = v
        words = tokens
    return flags, words


def build_contexts(root, f):
    """(context dir, Dockerfile) pairs declared by the compose files."""
    pairs = []
    for cf in sorted(glob.glob(os.path.join(root, "docker-compose*.yml"))):
        for doc in load_yaml(cf, f):
            for name, svc in (doc.get("services") or {}).items():
                b = (svc or {}).get("build")
                if b is None:
                    continue
                if isinstance(b, str):
                    b = {"context": b}
                ctx = os.path.normpath(os.path.join(root, b.get("context", ".")))
                df = os.path.normpath(os.path.join(ctx, b.get("dockerfile", "Dockerfile")))
                if (ctx, df) not in pairs:
                    pairs.append((ctx, df))
    return pairs


def check_dockerfiles(root):
    f = Findings("dockerfiles")
    tracked = tracked_files(root)
    modes = {}
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-s"], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            meta, _, name = line.partition("\t")
            modes[name] = meta.split()[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    pairs = build_contexts(root, f)
    declared = {df for _, df in pairs}
    all_dockerfiles = {os.path.normpath(p) for p in glob.glob(os.path.join(root, "docker", "**", "Dockerfile*"),
                                                              recursive=True)}
    for df in sorted(all_dockerfiles - declared):
        f.add(os.path.relpath(df, root), "no compose service builds it, so its build context is unknown")
    copies = 0
    for ctx, df in pairs:
        rel_df = os.path.relpath(df, root)
        if not os.path.isfile(df):
            f.add(rel_df, "Dockerfile does not exist")
            continue
        # BuildKit prefers <Dockerfile>.dockerignore next to the Dockerfile.
        ign = df + ".dockerignore" if os.path.isfile(df + ".dockerignore") else os.path.join(ctx, ".dockerignore")
        patterns = read_dockerignore(ign)
        ctx_rel = os.path.relpath(ctx, root)
        in_ctx = {os.path.relpath(os.path.join(root, t), ctx).replace(os.sep, "/") for t in tracked
                  if ctx_rel == "." or t.startswith(ctx_rel + "/")}
        stages, last_stage = [], None
        for n, ins, rest in dockerfile_instructions(df):
            where = f"{rel_df}:{n}"
            if ins == "FROM":
                m = re.search(r"\s+AS\s+(\S+)", rest, re.IGNORECASE)
                stages.append(m.group(1).lower() if m else str(len(stages)))
                last_stage = {"user": None, "healthcheck": False}
            elif ins == "USER" and last_stage is not None:
                last_stage["user"] = rest.strip()
            elif ins == "HEALTHCHECK" and last_stage is not None:
                last_stage["healthcheck"] = not rest.strip().upper().startswith("NONE")
            elif ins in ("COPY", "ADD"):
                flags, words = _copy_args(rest)
                if words is None or len(words) < 2:
                    f.add(where, f"cannot parse {ins} {rest}")
                    continue
                if "from" in flags:
                    if flags["from"].lower() not in stages:
                        f.add(where, f"{ins} --from={flags['from']} names no earlier stage ({', '.join(stages)})")
                    continue
                for src in words[:-1]:
                    copies += 1
                    if "://" in src:
                        f.add(where, f"{ins} of a URL ({src}); fetch it in a RUN step with a checksum")
                        continue
                    s = os.path.normpath(src).lstrip("/").replace(os.sep, "/")
                    if s == ".":
                        hits = sorted(in_ctx)
                    else:
                        hits = sorted(p for p in in_ctx if fnmatch.fnmatchcase(p, s) or p.startswith(s + "/")
                                      or any(fnmatch.fnmatchcase("/".join(p.split("/")[:k]), s)
                                             for k in range(1, p.count("/") + 1)))
                    if not hits:
                        f.add(where, f"{ins} source {src} is not in the repository, or only in ignored files "
                                     f"(context {ctx_rel})")
                        continue
                    kept = [p for p in hits if not ignored(patterns, p)]
                    if not kept:
                        f.add(where, f"{ins} source {src} is excluded by {os.path.relpath(ign, root)}")
                        continue
                    # Scripts copied one by one are run in the image; scripts inside a
                    # copied directory may be sourced libraries, so only the former count.
                    for p in (kept if kept == [s] else []):
                        repo_path = os.path.normpath(os.path.join(ctx_rel, p)).replace(os.sep, "/")
                        on_disk = os.access(os.path.join(root, repo_path), os.X_OK)
                        if p.endswith(".sh") and (not on_disk or modes.get(repo_path, "100755") != "100755"):
                            f.add(where, f"{repo_path} is copied into the image but not executable in git "
                                         f"(git update-index --chmod=+x)")
        if last_stage is None:
            f.add(rel_df, "no FROM")
            continue
        user = last_stage["user"]
        uid = (user or "").split(":")[0]
        if not uid.isdigit() or uid == "0":
            f.add(rel_df, f"final stage must run as a numeric non-root USER (found {user!r}) so Kubernetes' "
                          f"runAsNonRoot can verify it")
        if not last_stage["healthcheck"]:
            f.add(rel_df, "final stage has no HEALTHCHECK")
    return f.finish(f"{len(pairs)} Dockerfiles, {copies} COPY/ADD sources")


# ---- compose -----------------------------------------------------------------

def drain_seconds(env):
    """The server's drain timeout in seconds from an environment mapping
    (fmserve's FM_DRAIN_TIMEOUT_MS); None if unset."""
    if env.get("FM_DRAIN_TIMEOUT_MS") is not None:
        return int(env["FM_DRAIN_TIMEOUT_MS"]) / 1000.0
    return None


def _duration_s(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(text).strip())
    if not m or not any(m.groups()):
        return None
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def check_compose(root):
    f = Findings("compose")
    files = sorted(glob.glob(os.path.join(root, "docker-compose*.yml")))
    if not files:
        f.add(root, "no docker-compose*.yml")
        return f.finish("")
    base = os.path.join(root, "docker-compose.yml")
    services, volumes = {}, set()
    for cf in files:
        for doc in load_yaml(cf, f):
            for name, svc in (doc.get("services") or {}).items():
                services.setdefault(name, {}).update(svc or {})
            volumes |= set((doc.get("volumes") or {}).keys())
    for cf in files:
        rel = os.path.relpath(cf, root)
        for doc in load_yaml(cf, f):
            for name, svc in (doc.get("services") or {}).items():
                svc = svc or {}
                if cf != base and name not in (load_yaml(base, f)[0].get("services") or {}):
                    f.add(rel, f"override defines service {name} that docker-compose.yml does not have")
                deps = svc.get("depends_on") or {}
                for dep in (deps if isinstance(deps, list) else deps.keys()):
                    if dep not in services:
                        f.add(rel, f"{name}.depends_on names unknown service {dep}")
                    elif isinstance(deps, dict):
                        cond = (deps[dep] or {}).get("condition")
                        if cond == "service_healthy" and (services[dep].get("healthcheck") or {}).get("disable"):
                            f.add(rel, f"{name} waits for {dep} to be healthy but {dep}'s healthcheck is disabled")
                for v in svc.get("volumes") or []:
                    src = v.split(":")[0] if isinstance(v, str) else (v or {}).get("source")
                    if src and not src.startswith((".", "/", "~", "$")) and src not in volumes:
                        f.add(rel, f"{name} mounts undeclared named volume {src}")
                b = svc.get("build")
                if b is not None:
                    b = {"context": b} if isinstance(b, str) else b
                    ctx = os.path.join(root, b.get("context", "."))
                    if not os.path.isdir(ctx):
                        f.add(rel, f"{name}.build.context {b.get('context')} does not exist")
                    elif not os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
                        f.add(rel, f"{name}.build.dockerfile {b.get('dockerfile', 'Dockerfile')} does not exist")
    fm = services.get("fmserve")
    if not fm:
        f.add("docker-compose.yml", "no fmserve service")
    else:
        env = fm.get("environment") or {}
        drain = drain_seconds(env) if isinstance(env, dict) else None
        grace = _duration_s(fm.get("stop_grace_period", "10s"))
        if drain is None:
            f.add("docker-compose.yml", "fmserve sets no FM_DRAIN_TIMEOUT_MS, so its drain time is the server's "
                                        "default and stop_grace_period cannot be checked against it")
        elif grace is None or grace < drain + 5:
            f.add("docker-compose.yml", f"fmserve.stop_grace_period ({fm.get('stop_grace_period', '10s')}) "
                                        f"must exceed the drain timeout ({drain:g} s) by 5 s or more")
        if not fm.get("read_only"):
            f.add("docker-compose.yml", "fmserve should run with read_only: true")
    return f.finish(f"{len(files)} files, {len(services)} services")


# ---- Kubernetes: schemas -----------------------------------------------------

def _manifest_files(root):
    """Every YAML under k8s/ except kustomization files and patch files."""
    patches = set()
    for kfile in glob.glob(os.path.join(root, "k8s", "**", "kustomization.yaml"), recursive=True):
        with open(kfile, encoding="utf-8") as fh:
            k = yaml.safe_load(fh) or {}
        for p in k.get("patches") or []:
            if "path" in p:
                patches.add(os.path.normpath(os.path.join(os.path.dirname(kfile), p["path"])))
    out = []
    for p in sorted(glob.glob(os.path.join(root, "k8s", "**", "*.yaml"), recursive=True)):
        p = os.path.normpath(p)
        if os.path.basename(p) == "kustomization.yaml" or p in patches:
            continue
        out.append(p)
    return out


def _check_crd(res, where, f):
    if res.get("kind") == "ServiceMonitor":
        spec = res.get("spec") or {}
        if not (spec.get("selector") or {}).get("matchLabels"):
            f.add(where, "ServiceMonitor needs spec.selector.matchLabels")
        eps = spec.get("endpoints") or []
        if not eps or not all(isinstance(e, dict) and e.get("port") for e in eps):
            f.add(where, "ServiceMonitor endpoints need a named port")


def check_k8s_schema(root):
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
    f = Findings("k8s-schema")
    docs = []
    for p in _manifest_files(root):
        for i, d in enumerate(load_yaml(p, f)):
            docs.append((f"{os.path.relpath(p, root)}#{i}", d))
    for d in RENDERED:
        try:
            for r in kustomize_render.render(os.path.join(root, d)):
                docs.append((f"kustomize {d}: {r.get('kind')}/{(r.get('metadata') or {}).get('name')}", r))
        except kustomize_render.RenderError as e:
            f.add(d, f"does not render: {e}")
    for where, res in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(res, version, strict=True)
            except kv_utils.SchemaNotFoundError:
                if (res.get("apiVersion"), res.get("kind")) in KNOWN_CRDS:
                    if version == K8S_VERSIONS[0]:
                        _check_crd(res, where, f)
                else:
                    f.add(where, f"no schema for {res.get('apiVersion')} {res.get('kind')} in Kubernetes {version}")
            except kv_utils.ValidationError as e:
                # kubernetes-validate copies the jsonschema error's fields onto its own.
                path = ".".join(str(x) for x in getattr(e, "absolute_path", []) or [])
                f.add(where, f"Kubernetes {version}: {path + ': ' if path else ''}{getattr(e, 'message', e)}")
            except Exception as e:  # noqa: BLE001 - any other validator failure is a finding too
                f.add(where, f"Kubernetes {version}: {type(e).__name__}: {e}")
    return f.finish(f"{len(docs)} resources x Kubernetes {', '.join(K8S_VERSIONS)}")


# ---- Kubernetes: policy ------------------------------------------------------

def _pod_spec(res):
    kind, spec = res.get("kind"), res.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return (spec.get("template") or {}).get("spec"), (spec.get("template") or {}).get("metadata") or {}
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return t.get("spec"), t.get("metadata") or {}
    return None, {}


def _selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _secret_keys(root):
    keys = set()
    p = os.path.join(root, "k8s", "extras", "secret.example.yaml")
    if os.path.isfile(p):
        with open(p, encoding="utf-8") as fh:
            for d in yaml.safe_load_all(fh):
                if d and d.get("kind") == "Secret":
                    keys |= set((d.get("stringData") or {}).keys()) | set((d.get("data") or {}).keys())
    return keys


def _policy_one(name, resources, root, f):
    by_kind = {}
    for r in resources:
        by_kind.setdefault(r.get("kind"), []).append(r)
    configmaps = {r["metadata"]["name"]: r.get("data") or {} for r in by_kind.get("ConfigMap", [])}
    secret_keys = _secret_keys(root)
    workloads = [r for r in resources if _pod_spec(r)[0] is not None]
    for r in workloads:
        where = f"{name} {r['kind']}/{r['metadata']['name']}"
        spec, tmeta = _pod_spec(r)
        if r["kind"] in ("Deployment", "StatefulSet"):
            sel = ((r.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not _selects(sel, tmeta.get("labels") or {}):
                f.add(where, "selector does not match the pod template's labels")
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            f.add(where, "pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            f.add(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            f.add(where, "automountServiceAccountToken should be false (no pod here talks to the API server)")
        volumes = {v["name"] for v in spec.get("volumes") or []}
        claim_names = {c["metadata"]["name"] for c in (r.get("spec") or {}).get("volumeClaimTemplates") or []}
        tolerated = {t.get("key") for t in spec.get("tolerations") or []}
        for c in spec.get("containers") or []:
            cw = f"{where} container {c.get('name')}"
            image = c.get("image", "")
            if name.startswith("k8s/overlays/") and "/" not in image.split(":")[0]:
                f.add(cw, f"image {image!r} is still a placeholder (no registry); set it with images:")
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                f.add(cw, "allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                f.add(cw, "readOnlyRootFilesystem must be true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                f.add(cw, "capabilities.drop must include ALL")
            if sc.get("privileged"):
                f.add(cw, "must not be privileged")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in (res.get(kind) or {}):
                        f.add(cw, f"resources.{kind}.{what} is not set")
            mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
            for path, vol in mounts.items():
                if vol not in volumes and vol not in claim_names:
                    f.add(cw, f"volumeMount {path} uses undefined volume {vol}")
            if sc.get("readOnlyRootFilesystem") and "/tmp" not in mounts:
                f.add(cw, "read-only root filesystem but no writable /tmp mount")
            if "nvidia.com/gpu" in (res.get("limits") or {}):
                if "nvidia.com/gpu" not in tolerated:
                    f.add(where, "requests a GPU but does not tolerate the nvidia.com/gpu taint")
                if not spec.get("nodeSelector") and not spec.get("affinity"):
                    f.add(where, "requests a GPU but has no nodeSelector/affinity for the GPU node pool")
            for ef in c.get("envFrom") or []:
                cm = (ef.get("configMapRef") or {}).get("name")
                if cm and cm not in configmaps:
                    f.add(cw, f"envFrom names ConfigMap {cm} that this kustomization does not define")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("key") not in secret_keys:
                    f.add(cw, f"secret key {ref.get('key')} is not documented in k8s/extras/secret.example.yaml")
        if r["kind"] == "CronJob":
            names = {c.get("name") for c in spec.get("containers") or []}
            pfp = ((r["spec"].get("jobTemplate") or {}).get("spec") or {}).get("podFailurePolicy") or {}
            for rule in pfp.get("rules") or []:
                cn = (rule.get("onExitCodes") or {}).get("containerName")
                if cn and cn not in names:
                    f.add(where, f"podFailurePolicy names container {cn}, which does not exist")
    servers = [r for r in by_kind.get("Deployment", []) if r["metadata"]["name"] == "fmserve"]
    for d in servers:
        where = f"{name} Deployment/fmserve"
        spec, tmeta = _pod_spec(d)
        labels = tmeta.get("labels") or {}
        c = next((c for c in spec.get("containers") or [] if c.get("name") == "fmserve"), None)
        if c is None:
            f.add(where, "no container named fmserve")
            continue
        port_names = {p.get("name") for p in c.get("ports") or []}
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", None)):
            pr = c.get(probe)
            if not pr:
                f.add(where, f"{probe} is missing")
                continue
            hg = pr.get("httpGet") or {}
            if path and hg.get("path") != path:
                f.add(where, f"{probe} must GET {path} (found {hg.get('path')})")
            if isinstance(hg.get("port"), str) and hg["port"] not in port_names:
                f.add(where, f"{probe} uses port {hg['port']}, not a container port name")
        env = {}
        for ef in c.get("envFrom") or []:
            env.update(configmaps.get((ef.get("configMapRef") or {}).get("name"), {}))
        env.update({e["name"]: e["value"] for e in c.get("env") or [] if "value" in e})
        drain = drain_seconds(env)
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" and str(pre[1]).isdigit() else 0
        if not pre:
            f.add(where, "no preStop hook (endpoint removal races the shutdown)")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if drain is None:
            f.add(where, "FM_DRAIN_TIMEOUT_MS is not set (ConfigMap or env), so the grace period cannot be checked")
        elif grace < pre_s + drain + 5:
            f.add(where, f"terminationGracePeriodSeconds {grace} must be at least preStop {pre_s} s + "
                         f"drain timeout {drain:g} s + 5 s margin")
        for s in by_kind.get("Service", []):
            if _selects(s["spec"].get("selector") or {}, labels):
                for p in s["spec"].get("ports") or []:
                    tp = p.get("targetPort")
                    if isinstance(tp, str) and tp not in port_names:
                        f.add(f"{name} Service/{s['metadata']['name']}", f"targetPort {tp} is not a port of fmserve")
        if not any(_selects(s["spec"].get("selector") or {}, labels) and s["spec"].get("type") == "LoadBalancer"
                   for s in by_kind.get("Service", [])):
            f.add(where, "no LoadBalancer Service selects the server pods")
        if not any(_selects((p["spec"].get("selector") or {}).get("matchLabels") or {}, labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            f.add(where, "no PodDisruptionBudget selects the server pods")
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", [])
                if (h["spec"].get("scaleTargetRef") or {}).get("name") == "fmserve"]
        if not hpas:
            f.add(where, "no HorizontalPodAutoscaler targets it")
        for h in hpas:
            if h["spec"].get("minReplicas", 1) > h["spec"].get("maxReplicas", 0):
                f.add(f"{name} HPA/{h['metadata']['name']}", "minReplicas exceeds maxReplicas")
        rpc = next((p.get("containerPort") for p in c.get("ports") or [] if p.get("name") == "rpc"), None)
        allowed = False
        for np_ in by_kind.get("NetworkPolicy", []):
            sel = (np_["spec"].get("podSelector") or {}).get("matchLabels") or {}
            if sel and not _selects(sel, labels):
                continue
            for rule in np_["spec"].get("ingress") or []:
                if any(p.get("port") in (rpc, "rpc") for p in rule.get("ports") or []):
                    allowed = True
        if by_kind.get("NetworkPolicy") and not allowed:
            f.add(where, "no NetworkPolicy admits clients to the rpc port")


def check_k8s_policy(root):
    f = Findings("k8s-policy")
    count = 0
    for d in RENDERED:
        try:
            resources = kustomize_render.render(os.path.join(root, d))
        except kustomize_render.RenderError as e:
            f.add(d, f"does not render: {e}")
            continue
        count += len(resources)
        _policy_one(d, resources, root, f)
    for d in ("k8s/overlays/gpu", "k8s/overlays/cpu"):
        try:
            res = kustomize_render.render(os.path.join(root, d))
        except kustomize_render.RenderError:
            continue
        if not any(r.get("kind") == "Deployment" and r["metadata"]["name"] == "fmserve" for r in res):
            f.add(d, "renders no Deployment fmserve")
    return f.finish(f"{count} rendered resources in {', '.join(RENDERED)}")


# ---- GitHub Actions ----------------------------------------------------------

def check_workflows(root):
    f = Findings("workflows")
    files = sorted(glob.glob(os.path.join(root, ".github", "workflows", "*.y*ml")))
    if not files:
        f.add(".github/workflows", "no workflows")
    pins = 0
    for wf in files:
        rel = os.path.relpath(wf, root)
        with open(wf, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for n, line in enumerate(lines, 1):
            m = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not m:
                continue
            ref, rest = m.group(1), m.group(2)
            if ref.startswith("./") or ref.startswith("docker://"):
                continue
            pins += 1
            _, _, version = ref.partition("@")
            if re.fullmatch(r"[0-9a-f]{40}", version):
                if not re.search(r"#\s*v\d+\.\d+\.\d+", rest):
                    f.add(f"{rel}:{n}", f"{ref} is pinned by SHA but has no '# vX.Y.Z' comment")
            elif not re.fullmatch(r"v\d+\.\d+\.\d+", version):
                f.add(f"{rel}:{n}", f"{ref} must be pinned to a full commit SHA or an exact vX.Y.Z tag")
        docs = load_yaml(wf, f)
        if not docs:
            continue
        w = docs[0]
        perms = w.get("permissions")
        if perms is None:
            f.add(rel, "no top-level permissions (the default token is read-write)")
        elif isinstance(perms, dict) and any(v != "read" for v in perms.values()):
            f.add(rel, f"top-level permissions must be read-only, found {perms}")
        if "concurrency" not in w:
            f.add(rel, "no concurrency group")
        for jname, job in (w.get("jobs") or {}).items():
            if "timeout-minutes" not in job:
                f.add(rel, f"job {jname} has no timeout-minutes")
            jp = job.get("permissions") or {}
            steps_text = yaml.safe_dump(job.get("steps") or [])
            pushes = "docker/build-push-action" in steps_text and "push: true" in steps_text
            if isinstance(jp, dict) and jp.get("packages") == "write":
                if not pushes:
                    f.add(rel, f"job {jname} has packages: write but pushes no image")
                cond = str(job.get("if", ""))
                if "github.event_name == 'push'" not in cond or "refs/heads/main" not in cond:
                    f.add(rel, f"job {jname} pushes images but does not run only on pushes to main")
                if not job.get("needs"):
                    f.add(rel, f"job {jname} pushes images without waiting for the test jobs (needs:)")
            elif pushes:
                f.add(rel, f"job {jname} pushes images without its own packages: write permission")
    return f.finish(f"{len(files)} workflow files, {pins} action references")


CHECKS = {
    "dockerfiles": check_dockerfiles,
    "compose": check_compose,
    "k8s-schema": check_k8s_schema,
    "k8s-policy": check_k8s_policy,
    "workflows": check_workflows,
}


def main(argv):
    if len(argv) != 3 or argv[2] not in CHECKS:
        print(f"usage: check_deploy.py ROOT {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    return CHECKS[argv[2]](os.path.abspath(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
