#!/usr/bin/env python3
"""kustomize_render.py: renders a kustomization offline, for the checks in
scripts/lint-deploy.sh, on machines without kustomize (Debian 12 and PyPI
ship none). It implements the subset of kustomize v5 that k8s/ uses and
refuses everything else by name, so a new feature in a kustomization fails
the check instead of being silently ignored:

  resources (files and directories), namespace, labels (pairs,
  includeSelectors: false, includeTemplates), images (name, newName, newTag,
  digest), patches (path or inline patch; strategic merge patches matched by
  kind and name, or RFC 6902 JSON patches with a target).

Strategic merge uses the Kubernetes merge keys of the fields k8s/ patches
(containers and volumes by name, container ports by containerPort, ...);
lists without a merge key are replaced, `null` deletes a key; merged lists hold
the patch's items first, then the other original items. Output order is
kustomize's legacy resource order. tests/deploy/test_kustomize_render.py
compares the result with `kubectl kustomize` wherever kubectl is installed.

Usage: kustomize_render.py DIR   (prints the rendered YAML stream)
"""
import copy
import os
import sys

import yaml


class RenderError(Exception):
    pass


KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}

# Kinds without a namespace (the ones a namespace transformer must skip).
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass", "CSIDriver", "CSINode",
    "VolumeAttachment", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "APIService", "Node", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}
# Kinds whose namespace handling involves more than metadata.namespace
# (subjects, webhooks); the subset implemented here refuses them.
NAMESPACE_UNSUPPORTED = {"RoleBinding", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                         "ValidatingWebhookConfiguration", "APIService", "CustomResourceDefinition"}

# kustomize's legacy output order (api/resid/gvk.go orderFirst / orderLast).
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
    "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

# Strategic-merge keys of the list fields k8s/ patches (from the Kubernetes
# API's patchMergeKey tags). "ports" depends on where it sits.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


def _load_yaml_stream(path):
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: cannot read YAML: {e}") from e
    for d in docs:
        if not isinstance(d, dict):
            raise RenderError(f"{path}: a document is not a mapping")
    return docs


def _find_kustomization(directory):
    for name in KUSTOMIZATION_FILES:
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    raise RenderError(f"{directory}: no kustomization.yaml")


def _gvk(res):
    api = res.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    return group, version, res.get("kind", "")


def _res_id(res):
    md = res.get("metadata") or {}
    return f"{res.get('kind')}/{md.get('name')}" + (f" (namespace {md['namespace']})" if md.get("namespace") else "")


# ---- transformers ---------------------------------------------------------

def _set_namespace(resources, namespace, where):
    for res in resources:
        kind = res.get("kind")
        if kind in NAMESPACE_UNSUPPORTED:
            raise RenderError(f"{where}: namespace on {kind} is not supported by this renderer")
        if kind in CLUSTER_SCOPED:
            if kind == "Namespace" and res["metadata"].get("name") != namespace:
                raise RenderError(f"{where}: Namespace {res['metadata'].get('name')} differs from "
                                  f"namespace: {namespace} (kustomize would rename it; not supported)")
            continue
        res.setdefault("metadata", {})["namespace"] = namespace


def _template_label_paths(res):
    """The pod-template metadata maps of a workload (for includeTemplates)."""
    spec = res.get("spec") or {}
    kind = res.get("kind")
    out = []
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"):
        if "template" in spec:
            out.append(spec["template"].setdefault("metadata", {}))
    elif kind == "CronJob":
        jt = spec.get("jobTemplate") or {}
        out.append(jt.setdefault("metadata", {}))
        tmpl = (jt.get("spec") or {}).get("template")
        if tmpl is not None:
            out.append(tmpl.setdefault("metadata", {}))
    return out


def _apply_labels(resources, entries, where):
    for entry in entries:
        unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown:
            raise RenderError(f"{where}: labels field(s) {sorted(unknown)} not supported")
        if entry.get("includeSelectors", False):
            raise RenderError(f"{where}: labels.includeSelectors: true is not supported (and changes "
                              f"immutable selectors); use false")
        pairs = entry.get("pairs") or {}
        for res in resources:
            targets = [res.setdefault("metadata", {})]
            if entry.get("includeTemplates", False):
                targets += _template_label_paths(res)
            for md in targets:
                labels = md.get("labels") or {}
                labels.update({str(k): str(v) for k, v in pairs.items()})
                md["labels"] = labels


def _split_image(image):
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def _walk_containers(node, fn):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        fn(c)
            _walk_containers(value, fn)
    elif isinstance(node, list):
        for item in node:
            _walk_containers(item, fn)


def _apply_images(resources, entries, where):
    for entry in entries:
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise RenderError(f"{where}: images field(s) {sorted(unknown)} not supported")
        if "name" not in entry:
            raise RenderError(f"{where}: an images entry has no name")

        def fix(container, entry=entry):
            name, tag, digest = _split_image(container["image"])
            if name != entry["name"]:
                return
            name = entry.get("newName", name)
            if "newTag" in entry:
                tag, digest = str(entry["newTag"]), None
            if "digest" in entry:
                tag, digest = None, entry["digest"]
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")

        for res in resources:
            _walk_containers(res, fix)


def _merge_key(field, items):
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(dst, patch, field=None):
    """Returns dst with the strategic merge patch applied (dst is modified)."""
    if isinstance(patch, dict):
        if "$patch" in patch or any(str(k).startswith("$") for k in patch):
            raise RenderError(f"strategic merge directives ($patch, $setElementOrder...) are not supported "
                              f"(field {field})")
        if not isinstance(dst, dict):
            return {k: v for k, v in patch.items() if v is not None}
        for key, value in patch.items():
            if value is None:
                dst.pop(key, None)
            elif key in dst:
                dst[key] = strategic_merge(dst[key], value, key)
            else:
                dst[key] = strategic_merge(None, value, key) if isinstance(value, dict) else copy.deepcopy(value)
        return dst
    if isinstance(patch, list) and isinstance(dst, list):
        key = _merge_key(field, patch + dst)
        if key is None:
            return copy.deepcopy(patch)
        # kustomize (kyaml merge2) puts the patch's items first, in patch
        # order, each merged into its original, then the original's other
        # items in their original order.
        merged, patched_keys = [], set()
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(f"list {field}: an item has no merge key {key}")
            patched_keys.add(item[key])
            match = next((d for d in dst if isinstance(d, dict) and d.get(key) == item[key]), None)
            merged.append(copy.deepcopy(item) if match is None else strategic_merge(match, item, None))
        merged += [d for d in dst if not (isinstance(d, dict) and d.get(key) in patched_keys)]
        return merged
    return copy.deepcopy(patch)


def _json_pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"JSON patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops, where):
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise RenderError(f"{where}: a JSON patch operation needs op and path")
        kind = op["op"]
        if kind not in ("add", "replace", "remove"):
            raise RenderError(f"{where}: JSON patch op {kind!r} is not supported (add, replace, remove)")
        parts = _json_pointer(op["path"])
        if not parts:
            raise RenderError(f"{where}: JSON patch on the document root is not supported")
        parent = doc
        for p in parts[:-1]:
            try:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise RenderError(f"{where}: JSON patch path {op['path']} does not exist") from e
        last = parts[-1]
        if isinstance(parent, list):
            if last == "-" and kind == "add":
                parent.append(copy.deepcopy(op.get("value")))
                continue
            try:
                idx = int(last)
            except ValueError as e:
                raise RenderError(f"{where}: bad list index in {op['path']}") from e
            if not 0 <= idx < len(parent) + (1 if kind == "add" else 0):
                raise RenderError(f"{where}: index out of range in {op['path']}")
            if kind == "add":
                parent.insert(idx, copy.deepcopy(op.get("value")))
            elif kind == "replace":
                parent[idx] = copy.deepcopy(op.get("value"))
            else:
                del parent[idx]
        elif isinstance(parent, dict):
            if kind in ("replace", "remove") and last not in parent:
                raise RenderError(f"{where}: JSON patch {kind} of missing {op['path']}")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op.get("value"))
        else:
            raise RenderError(f"{where}: JSON patch path {op['path']} does not exist")


def _matches(res, target):
    group, version, kind = _gvk(res)
    md = res.get("metadata") or {}
    checks = {"group": group, "version": version, "kind": kind, "name": md.get("name"),
              "namespace": md.get("namespace")}
    for key, value in target.items():
        if key not in checks:
            raise RenderError(f"patch target field {key!r} is not supported")
        if checks[key] != value:
            return False
    return True


def _apply_patches(resources, entries, base_dir, where):
    for entry in entries:
        unknown = set(entry) - {"path", "patch", "target"}
        if unknown:
            raise RenderError(f"{where}: patches field(s) {sorted(unknown)} not supported")
        if ("path" in entry) == ("patch" in entry):
            raise RenderError(f"{where}: a patch needs exactly one of path and patch")
        if "path" in entry:
            src = os.path.join(base_dir, entry["path"])
            try:
                with open(src, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise RenderError(f"{where}: patch {entry['path']}: {e}") from e
        else:
            src, text = f"{where} (inline patch)", entry["patch"]
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            raise RenderError(f"{src}: cannot parse patch: {e}") from e
        if len(docs) != 1:
            raise RenderError(f"{src}: a patch must hold exactly one document")
        body = docs[0]
        target = entry.get("target")
        if isinstance(body, list):
            if not target:
                raise RenderError(f"{src}: a JSON patch needs a target")
            hits = [r for r in resources if _matches(r, target)]
            if not hits:
                raise RenderError(f"{src}: JSON patch target {target} matches no resource")
            for r in hits:
                json_patch(r, body, src)
        elif isinstance(body, dict):
            if not target:
                group, version, kind = _gvk(body)
                target = {"kind": kind, "name": (body.get("metadata") or {}).get("name")}
                if version:
                    target["version"] = version
                    target["group"] = group
            hits = [r for r in resources if _matches(r, target)]
            if not hits:
                raise RenderError(f"{src}: patch target {target} matches no resource")
            for r in hits:
                patch = copy.deepcopy(body)
                # Identity fields select the target; they are not merged.
                for k in ("apiVersion", "kind"):
                    patch.pop(k, None)
                md = patch.get("metadata")
                if isinstance(md, dict):
                    md.pop("name", None)
                    md.pop("namespace", None)
                    if not md:
                        patch.pop("metadata")
                strategic_merge(r, patch)
        else:
            raise RenderError(f"{src}: a patch must be a mapping or a list of operations")


# ---- driver ---------------------------------------------------------------

def render(directory, _stack=()):
    directory = os.path.abspath(directory)
    if directory in _stack:
        raise RenderError(f"{directory}: kustomization cycle")
    kfile = _find_kustomization(directory)
    docs = _load_yaml_stream(kfile)
    if len(docs) != 1:
        raise RenderError(f"{kfile}: must hold one document")
    k = docs[0]
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: field(s) {sorted(unknown)} not supported by this renderer "
                          f"(supported: {sorted(SUPPORTED_FIELDS)})")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kfile}: kind {k.get('kind')} not supported (Components are not)")

    resources = []
    for entry in k.get("resources") or []:
        if "://" in entry or entry.startswith("github.com/"):
            raise RenderError(f"{kfile}: remote resource {entry} not supported")
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            resources += render(path, _stack + (directory,))
        elif os.path.isfile(path):
            resources += _load_yaml_stream(path)
        else:
            raise RenderError(f"{kfile}: resource {entry} does not exist")

    seen = set()
    for r in resources:
        key = (_gvk(r), (r.get("metadata") or {}).get("namespace"), (r.get("metadata") or {}).get("name"))
        if key in seen:
            raise RenderError(f"{kfile}: resource {_res_id(r)} appears twice")
        seen.add(key)

    # kustomize's builtin transformer order: patches, namespace, labels, images.
    _apply_patches(resources, k.get("patches") or [], directory, kfile)
    if k.get("namespace"):
        _set_namespace(resources, k["namespace"], kfile)
    _apply_labels(resources, k.get("labels") or [], kfile)
    _apply_images(resources, k.get("images") or [], kfile)
    return resources


def legacy_order(resources):
    def key(res):
        group, version, kind = _gvk(res)
        md = res.get("metadata") or {}
        if kind in ORDER_FIRST:
            rank = ORDER_FIRST.index(kind)
        elif kind in ORDER_LAST:
            rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
        else:
            rank = len(ORDER_FIRST)
        return (rank, f"{group}_{version}_{kind}", md.get("namespace") or "", md.get("name") or "")
    return sorted(resources, key=key)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        out = legacy_order(render(argv[1]))
    except RenderError as e:
        print(f"kustomize_render: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=True, default_flow_style=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
