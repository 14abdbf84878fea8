#!/usr/bin/env python3
"""test_kustomize_render.py: checks scripts/deploy/kustomize_render.py, the
offline kustomize subset the deployment checks render k8s/ with.

  1. golden cases: kustomize-cases/*/expected.yaml were rendered by real
     kustomize (kubectl kustomize, kustomize v5.5.0); the renderer must
     produce the same resources in the same order;
  2. refusals: every feature outside the subset fails with a message naming
     it, never renders silently;
  3. live cross-check: where `kubectl` is installed, the renderer must match
     `kubectl kustomize` on the golden cases and on k8s/'s kustomizations
     (reported as NOT RUN without kubectl; the golden files still pin the
     behaviour).

Usage: test_kustomize_render.py REPO_ROOT   (exit 0 pass, 1 fail)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "deploy"))
import kustomize_render as kr  # noqa: E402

CASES = os.path.join(ROOT, "tests", "deploy", "kustomize-cases")
# case directory -> the kustomization inside it that expected.yaml renders
GOLDEN = {"smp-merge": ".", "json6902": ".", "images-labels-namespace": ".", "nested": "overlay"}
REPO_KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/gpu", "k8s/overlays/cpu", "k8s/postgres-dev"]

failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures += 1


def load_stream(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def first_difference(mine, other):
    ids = lambda rs: [(r.get("kind"), (r.get("metadata") or {}).get("name")) for r in rs]  # noqa: E731
    if ids(mine) != ids(other):
        return f"resources/order differ: {ids(mine)} vs {ids(other)}"
    for a, b in zip(mine, other):
        if a != b:
            return (f"{a.get('kind')}/{a['metadata'].get('name')} differs:\n--- renderer\n{yaml.safe_dump(a)}"
                    f"--- kustomize\n{yaml.safe_dump(b)}")
    return ""


def golden():
    print("golden cases (rendered by kustomize v5.5.0):")
    for case, sub in GOLDEN.items():
        d = os.path.join(CASES, case, sub)
        try:
            mine = kr.legacy_order(kr.render(d))
        except kr.RenderError as e:
            check(case, False, f"render failed: {e}")
            continue
        with open(os.path.join(CASES, case, "expected.yaml"), encoding="utf-8") as f:
            expected = load_stream(f.read())
        diff = first_difference(mine, expected)
        check(case, not diff, diff)


def write(tmp, files):
    for name, text in files.items():
        path = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  A: '1'\n"
KHEAD = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
REFUSALS = {
    "unsupported field commonLabels": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\ncommonLabels: {a: b}\n", "cm.yaml": CM},
        "commonLabels"),
    "configMapGenerator": (
        {"kustomization.yaml": KHEAD + "configMapGenerator:\n  - name: x\n    literals: [A=1]\n"},
        "configMapGenerator"),
    "missing resource": ({"kustomization.yaml": KHEAD + "resources: [nope.yaml]\n"}, "nope.yaml"),
    "remote resource": (
        {"kustomization.yaml": KHEAD + "resources: ['https://example.com/x.yaml']\n"}, "remote"),
    "patch matching nothing": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\npatches: [{path: p.yaml}]\n", "cm.yaml": CM,
         "p.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata: {B: '2'}\n"},
        "matches no resource"),
    "JSON patch without target": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\npatches: [{path: p.yaml}]\n", "cm.yaml": CM,
         "p.yaml": "- op: add\n  path: /data/B\n  value: '2'\n"}, "needs a target"),
    "JSON patch op move": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\npatches: [{path: p.yaml, target: {kind: ConfigMap}}]\n",
         "cm.yaml": CM, "p.yaml": "- op: move\n  from: /data/A\n  path: /data/B\n"}, "move"),
    "JSON patch replace of a missing path": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\npatches: [{path: p.yaml, target: {kind: ConfigMap}}]\n",
         "cm.yaml": CM, "p.yaml": "- op: replace\n  path: /data/B\n  value: x\n"}, "missing"),
    "$patch directive": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\npatches: [{path: p.yaml}]\n", "cm.yaml": CM,
         "p.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n$patch: delete\n"}, "$patch"),
    "duplicate resource": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml, cm2.yaml]\n", "cm.yaml": CM, "cm2.yaml": CM},
        "twice"),
    "labels includeSelectors true": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\nlabels:\n  - pairs: {a: b}\n    includeSelectors: true\n",
         "cm.yaml": CM}, "includeSelectors"),
    "Namespace renamed by namespace:": (
        {"kustomization.yaml": KHEAD + "namespace: other\nresources: [ns.yaml]\n",
         "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mine\n"}, "Namespace"),
    "unknown images field": (
        {"kustomization.yaml": KHEAD + "resources: [cm.yaml]\nimages: [{name: a, newTagg: b}]\n", "cm.yaml": CM},
        "newTagg"),
    "Component": ({"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"},
                  "Component"),
}


def refusals():
    print("refusals (features outside the subset):")
    for name, (files, needle) in REFUSALS.items():
        tmp = tempfile.mkdtemp(prefix="fm-kr-")
        try:
            write(tmp, files)
            try:
                kr.render(tmp)
                check(name, False, "rendered instead of refusing")
            except kr.RenderError as e:
                check(name, needle in str(e), f"message {str(e)!r} does not mention {needle!r}")
        finally:
            shutil.rmtree(tmp)


def cli():
    print("command line:")
    script = os.path.join(ROOT, "scripts", "deploy", "kustomize_render.py")
    r = subprocess.run([sys.executable, script, os.path.join(ROOT, "k8s", "overlays", "gpu")],
                       capture_output=True, text=True)
    docs = load_stream(r.stdout) if r.returncode == 0 else []
    check("renders k8s/overlays/gpu (exit 0, Namespace first)",
          r.returncode == 0 and docs and docs[0].get("kind") == "Namespace", r.stderr)
    tmp = tempfile.mkdtemp(prefix="fm-kr-")
    try:
        write(tmp, {"kustomization.yaml": KHEAD + "resources: [nope.yaml]\n"})
        r = subprocess.run([sys.executable, script, tmp], capture_output=True, text=True)
        check("exits 1 with the reason on stderr", r.returncode == 1 and "nope.yaml" in r.stderr,
              f"exit {r.returncode}, stderr {r.stderr!r}")
    finally:
        shutil.rmtree(tmp)


def live():
    kubectl = shutil.which("kubectl")
    probe = None
    if kubectl:
        probe = subprocess.run([kubectl, "kustomize", os.path.join(CASES, "nested", "overlay")],
                               capture_output=True, text=True)
    if not kubectl or probe.returncode != 0:
        print("live cross-check with kubectl kustomize: NOT RUN (" +
              ("kubectl not installed" if not kubectl else f"kubectl kustomize failed: {probe.stderr.strip()}") +
              "); the golden cases above still compare against kustomize's output")
        return
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
    kv = next((line.split(":", 1)[1].strip() for line in version.splitlines() if line.startswith("Kustomize")), "?")
    print(f"live cross-check with kubectl kustomize (kustomize {kv}):")
    targets = [os.path.join(CASES, c, s) for c, s in GOLDEN.items()] + [os.path.join(ROOT, d) for d in
                                                                         REPO_KUSTOMIZATIONS]
    for d in targets:
        name = os.path.relpath(d, ROOT)
        r = subprocess.run([kubectl, "kustomize", d], capture_output=True, text=True)
        if r.returncode != 0:
            check(name, False, f"kubectl kustomize failed: {r.stderr.strip()}")
            continue
        try:
            mine = kr.legacy_order(kr.render(d))
        except kr.RenderError as e:
            check(name, False, f"renderer failed: {e}")
            continue
        diff = first_difference(mine, load_stream(r.stdout))
        check(name, not diff, diff)


golden()
refusals()
cli()
live()
print(f"test_kustomize_render: {'FAILED (' + str(failures) + ')' if failures else 'all passed'}")
sys.exit(1 if failures else 0)
