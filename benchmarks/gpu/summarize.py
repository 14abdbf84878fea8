#!/usr/bin/env python3
"""summarize.py: the Markdown summary of a GPU run (run-on-gpu.sh): device,
driver, date, commit, the GPU tests' outcome, and per model and precision the
cuDNN path next to PyTorch eager and CUDA-graph on the same weights, with
their ratios and the project's goals checked. Standard library only."""
import argparse
import json
import os
import re
import sys


def load(path):
    recs = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return recs


def fmt(x):
    if x is None:
        return "–"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def tests_outcome(path):
    if not path or not os.path.exists(path):
        return "not run", []
    text = open(path, errors="replace").read()
    m = re.findall(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", text)
    failed = re.findall(r"^\s*\d+ - (\S+) \((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception)[^)]*\)", text,
                        re.M)
    skipped = re.findall(r"^\s*\d+ - (\S+) \(Skipped\)", text, re.M)
    if not m:
        return "no CTest summary (see tests.log)", failed
    # One summary per CTest run (the GPU label, then the rest): add them up.
    total = sum(int(t) for _, _, t in m)
    nfail = sum(int(f) for _, f, _ in m)
    line = f"{total} tests, {nfail} failed, {len(skipped)} skipped"
    return line, [f"{n} ({why})" for n, why in failed]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuda", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--tests", default=None)
    ap.add_argument("--device", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--notes", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    cuda, torch = load(a.cuda), load(a.torch)
    tkey = {(r["model"], r["precision"], r["batch"]): r for r in torch}
    lines = ["# GPU run: cuDNN backend vs PyTorch", ""]
    lines.append(f"- date: {a.date}")
    lines.append(f"- commit: {a.commit or (cuda[0].get('commit') if cuda else 'unknown')}")
    lines.append(f"- device: {a.device}")
    if cuda:
        lines.append(f"- fmserve backend: {cuda[0].get('device', '')}")
    if torch:
        t = torch[0]
        lines.append(f"- PyTorch {t.get('torch')} (cuDNN {t.get('cudnn')}) on {t.get('device')}")
    if a.notes:
        lines.append(f"- notes: {a.notes}")
    outcome, failed = tests_outcome(a.tests)
    lines.append(f"- tests (engine-only build, CTest): {outcome}")
    for f in failed:
        lines.append(f"  - FAILED: {f}")
    lines.append("")
    lines.append("Images/s. *compute*: pixels already on the GPU, CUDA events around back-to-back batches "
                 "(fmserve: its captured CUDA graph; PyTorch: eager, and its own CUDA graph). *+copies*: "
                 "with the H2D copy of the pixels from pinned memory and the D2H copies of the results. "
                 "*streams*: fmserve's copies+compute on every stream at once. *p50*: infer() latency.")
    lines.append("")
    goals = []
    models = sorted({r["model"] for r in cuda} | {r["model"] for r in torch})
    for model in models:
        precs = []
        for r in cuda + torch:
            if r["model"] == model and r["precision"] not in precs:
                precs.append(r["precision"])
        for prec in precs:
            rows = sorted([r for r in cuda if r["model"] == model and r["precision"] == prec], key=lambda r: r["batch"])
            batches = sorted({r["batch"] for r in rows} |
                             {k[2] for k in tkey if k[0] == model and k[1] == prec})
            exact = rows[0].get("exact_fp32") if rows else None
            tag = " (exact fp32)" if prec == "fp32" and exact else (" (fp32 with TF32 layers)" if prec == "fp32" else "")
            arch = rows[0]["arch"] if rows else ""
            lines.append(f"## {model} {arch} {prec}{tag}")
            if rows:
                lines.append(f"engines: `{rows[-1].get('engines', '')}`; prepare {rows[-1].get('prepare_ms', 0):.0f} ms")
            lines.append("")
            lines.append("| batch | fmserve compute | torch eager | torch graph | vs eager | vs graph | fmserve +copies "
                         "| torch eager +copies | torch graph +copies | vs eager | vs graph | fmserve streams | p50 ms |")
            lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            crow = {r["batch"]: r for r in rows}
            for b in batches:
                c, t = crow.get(b, {}), tkey.get((model, prec, b), {})
                cc, cp = c.get("device_compute_ips"), c.get("device_copies_ips")
                te, tg = t.get("eager_compute_ips"), t.get("graph_compute_ips")
                tec, tgc = t.get("eager_copies_ips"), t.get("graph_copies_ips")
                lines.append(f"| {b} | {fmt(cc)} | {fmt(te)} | {fmt(tg)} | {ratio(cc, te)} | {ratio(cc, tg)} | "
                             f"{fmt(cp)} | {fmt(tec)} | {fmt(tgc)} | {ratio(cp, tec)} | {ratio(cp, tgc)} | "
                             f"{fmt(c.get('device_streams_ips'))} | "
                             f"{c.get('e2e_p50_ms', 0):.3f} |" if c else
                             f"| {b} | – | {fmt(te)} | {fmt(tg)} | – | – | – | {fmt(tec)} | {fmt(tgc)} | – | – | – | – |")
                if b >= 256 and cc and te:
                    goals.append((f"{model} {prec} batch {b}: fmserve compute beats PyTorch eager", cc > te,
                                  f"{ratio(cc, te)}"))
                if b >= 256 and cp and tec:
                    goals.append((f"{model} {prec} batch {b}: fmserve +copies beats PyTorch eager +copies", cp > tec,
                                  f"{ratio(cp, tec)}"))
            lines.append("")
    # Throughput goals at batch 8192 (the kernel benchmark: device compute).
    for model, arch, target in (("v1", "mlp", 10e6), ("v2", "cnn", 2e6)):
        best = [r for r in cuda if r["model"] == model and r["batch"] == 8192]
        if best:
            top = max(best, key=lambda r: r["device_compute_ips"])
            fp32 = [r for r in best if r["precision"] == "fp32"]
            detail = f"best {fmt(top['device_compute_ips'])} ({top['precision']})"
            if fp32:
                detail += f", fp32 {fmt(fp32[0]['device_compute_ips'])}"
            goals.append((f"{model} ({arch}) >= {fmt(target)} images/s at batch 8192", top["device_compute_ips"] >= target,
                          detail))
    lines.append("## Goals")
    lines.append("")
    if not goals:
        lines.append("No measurements to check.")
    for name, ok, detail in goals:
        lines.append(f"- {'PASS' if ok else 'MISS'}: {name} ({detail})")
    lines.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
