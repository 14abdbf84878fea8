#!/usr/bin/env python3
"""drift_oracle.py: an independent implementation of Evidently's DataDriftPreset
column tests in numpy/scipy, for checking the SQL in sql/002_stats.sql.

Usage: drift_oracle.py SPEC.json OUT.jsonl

SPEC.json:
  {"options": {"num_stattest": null, "cat_stattest": null,
               "num_threshold": null, "cat_threshold": null},
   "images": {"ref": "ref.u8", "cur": "cur.u8"},        # optional: raw 784-byte images
   "columns": [{"fid": 2000, "cat": true,
                "ref": "file.f64" | [numbers...], "cur": ...}]}
Relative file names are taken from SPEC.json's directory; *.f64 files hold
little-endian float64 values. "images" adds the 784 pixel columns (fid = pixel
index) and the six summary features (fid 1000..1005), computed here from the
raw bytes with numpy.

Writes one JSON object per column: fid, stattest, score, threshold, drifted,
p_value, statistic, n_values; and, when the evidently package imports, the
same column run through evidently's own registry and stattests as ev_stattest,
ev_score, ev_drifted (ev_error when it failed). The last line is a summary
({"summary": ..., "evidently": version or null}).

The formulas follow Evidently 0.4.x (calculations/stattests/*, registry.py)
and scipy; they are written out here rather than imported so that a bug in
the SQL cannot be shared with the oracle.
"""
import json
import math
import os
import sys

import numpy as np
import scipy
from scipy import stats
from scipy.spatial import distance

P_VALUE_TESTS = {"ks", "chisquare", "z"}
SUMMARY = ["mean_intensity", "std_intensity", "nonzero_share", "bright_share", "centroid_row", "centroid_col"]


def summary_features(images):
    """The six per-image features of host/store/fm_pixel_stats.h, from raw
    bytes: exact integer sums, one correctly rounded division (and square
    root), and for std and the centroids rounding to 0.01, ties to even."""
    x = images.astype(np.int64)
    s = x.sum(axis=1)
    q = (x * x).sum(axis=1)
    mean = s / 784.0
    std = np.round(np.sqrt((784 * q - s * s) / 614656.0) * 100.0) / 100.0
    nonzero = (x > 0).sum(axis=1) / 784.0
    bright = (x >= 128).sum(axis=1) / 784.0
    rows = np.repeat(np.arange(28), 28)
    cols = np.tile(np.arange(28), 28)
    srow = (x * rows).sum(axis=1)
    scol = (x * cols).sum(axis=1)
    safe = np.where(s > 0, s, 1)
    crow = np.where(s > 0, np.round(srow / safe * 100.0) / 100.0, 13.5)
    ccol = np.where(s > 0, np.round(scol / safe * 100.0) / 100.0, 13.5)
    return [mean, std, nonzero, bright, crow, ccol]


def default_stattest(ref, cur, is_cat):
    """registry._get_default_stattest."""
    n_values = len(np.unique(np.concatenate([ref, cur])))
    if len(ref) <= 1000:
        if is_cat:
            return "chisquare" if n_values > 2 else "z"
        if n_values <= 2:
            return "z"
        return "chisquare" if n_values <= 5 else "ks"
    if is_cat:
        return "jensenshannon"
    return "jensenshannon" if n_values <= 5 else "wasserstein"


def binned(ref, cur, is_cat, feel_zeroes):
    """utils.get_binned_data."""
    if not is_cat and len(np.unique(ref)) > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        rp = np.histogram(ref, bins)[0] / len(ref)
        cp = np.histogram(cur, bins)[0] / len(cur)
    else:
        keys = np.unique(np.concatenate([ref, cur]))
        rv, rc = np.unique(ref, return_counts=True)
        cv, cc = np.unique(cur, return_counts=True)
        rmap = dict(zip(rv.tolist(), rc.tolist()))
        cmap = dict(zip(cv.tolist(), cc.tolist()))
        rp = np.array([rmap.get(k, 0) / len(ref) for k in keys.tolist()])
        cp = np.array([cmap.get(k, 0) / len(cur) for k in keys.tolist()])
    if feel_zeroes:
        for p in (rp, cp):
            m = p[p != 0].min()
            np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return rp, cp


def run_test(name, ref, cur, is_cat):
    """Returns (score, p_value, statistic)."""
    if name == "ks":
        r = stats.ks_2samp(ref, cur)
        return r.pvalue, r.pvalue, r.statistic
    if name == "wasserstein":
        norm = max(np.std(ref), 0.001)
        w = stats.wasserstein_distance(ref, cur)
        return w / norm, None, w
    if name == "chisquare":
        keys = np.unique(np.concatenate([ref, cur]))
        rv, rc = np.unique(ref, return_counts=True)
        cv, cc = np.unique(cur, return_counts=True)
        rmap = dict(zip(rv.tolist(), rc.tolist()))
        cmap = dict(zip(cv.tolist(), cc.tolist()))
        k_norm = len(cur) / len(ref)
        f_exp = np.array([rmap.get(k, 0) * k_norm for k in keys.tolist()])
        f_obs = np.array([cmap.get(k, 0) for k in keys.tolist()], dtype=float)
        # scipy.stats.chisquare with a zero expected count: the statistic is
        # infinite and p = 0 (numpy warns about the division).
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = (f_obs - f_exp) ** 2 / f_exp
        stat = float(np.sum(terms))
        p = float(stats.chi2.sf(stat, len(keys) - 1))
        return p, p, stat
    if name == "z":
        if len(np.unique(ref)) == 1 and len(np.unique(cur)) == 1 and np.unique(ref)[0] == np.unique(cur)[0]:
            return 1.0, 1.0, 0.0
        key0 = np.unique(np.concatenate([ref, cur]))[0]
        a = np.where(ref == key0, 0, 1)
        b = np.where(cur == key0, 0, 1)
        n1, n2 = len(a), len(b)
        p1 = float(a.sum()) / n1
        p2 = float(b.sum()) / n2
        pp = float(p1 * n1 + p2 * n2) / (n1 + n2)
        z = (p1 - p2) / np.sqrt(pp * (1 - pp) * (1.0 / n1 + 1.0 / n2))
        p = 2 * (1 - stats.norm.cdf(np.abs(z)))
        return float(p), float(p), float(z)
    if name == "jensenshannon":
        rp, cp = binned(ref, cur, is_cat, False)
        js = float(distance.jensenshannon(rp, cp))
        return js, None, js
    if name == "psi":
        rp, cp = binned(ref, cur, is_cat, True)
        psi = float(np.sum((rp - cp) * np.log(rp / cp)))
        return psi, None, psi
    if name == "kl_div":
        rp, cp = binned(ref, cur, is_cat, True)
        kl = float(stats.entropy(rp, cp))
        return kl, None, kl
    raise ValueError(f"unknown test {name}")


def drifted(name, score, threshold):
    if name == "ks":
        return bool(score <= threshold)
    if name in ("chisquare", "z"):
        return bool(score < threshold)
    return bool(score >= threshold)


def evidently_column(ref, cur, is_cat, opts):
    """The same column through evidently's own registry and stattests."""
    import pandas as pd
    from evidently.calculations.stattests.registry import get_stattest
    from evidently.core import ColumnType

    ftype = ColumnType.Categorical if is_cat else ColumnType.Numerical
    forced = opts.get("cat_stattest") if is_cat else opts.get("num_stattest")
    thr = opts.get("cat_threshold") if is_cat else opts.get("num_threshold")
    rs = pd.Series(ref)
    cs = pd.Series(cur)
    st = get_stattest(rs, cs, ftype, forced)
    res = st(rs, cs, ftype, thr)
    return st.name, float(res.drift_score), bool(res.drifted)


def finite_or_text(rec):
    """JSON has no NaN or infinity: write those as null and "inf"/"-inf"."""
    out = {}
    for k, v in rec.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        out[k] = v
    return out


def load_values(spec_dir, v):
    if isinstance(v, str):
        return np.fromfile(os.path.join(spec_dir, v), dtype="<f8")
    return np.asarray(v, dtype=np.float64)


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec_dir = os.path.dirname(os.path.abspath(spec_path))
    with open(spec_path) as f:
        spec = json.load(f)
    opts = spec.get("options", {})
    columns = []
    if "images" in spec:
        ref = np.fromfile(os.path.join(spec_dir, spec["images"]["ref"]), dtype=np.uint8).reshape(-1, 784)
        cur = np.fromfile(os.path.join(spec_dir, spec["images"]["cur"]), dtype=np.uint8).reshape(-1, 784)
        # int64, not uint8: evidently >= 0.7 silently drops uint8 columns, and
        # pandas concatenates int64 pixels as Evidently's users would have them.
        for p in range(784):
            columns.append((p, False, ref[:, p].astype(np.int64), cur[:, p].astype(np.int64)))
        for k, (fr, fc) in enumerate(zip(summary_features(ref), summary_features(cur))):
            columns.append((1000 + k, False, fr, fc))
    for c in spec.get("columns", []):
        columns.append((c["fid"], bool(c["cat"]), load_values(spec_dir, c["ref"]), load_values(spec_dir, c["cur"])))

    ev_version = None
    ev_error = None
    try:
        import evidently

        ev_version = getattr(evidently, "__version__", "unknown")
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        ev_error = f"{type(e).__name__}: {e}"

    ndrift = 0
    with open(out_path, "w") as out:
        for fid, is_cat, ref, cur in columns:
            forced = opts.get("cat_stattest") if is_cat else opts.get("num_stattest")
            name = forced or default_stattest(ref, cur, is_cat)
            thr = opts.get("cat_threshold") if is_cat else opts.get("num_threshold")
            if thr is None:
                thr = 0.05 if name in P_VALUE_TESTS else 0.1
            score, p_value, statistic = run_test(name, ref, cur, is_cat)
            d = drifted(name, score, thr)
            ndrift += d
            rec = {"fid": fid, "stattest": name, "score": score, "threshold": thr, "drifted": d,
                   "p_value": p_value, "statistic": statistic,
                   "n_values": int(len(np.unique(np.concatenate([ref, cur])))),
                   "n_ref": int(len(ref)), "n_cur": int(len(cur))}
            if ev_version is not None:
                try:
                    rec["ev_stattest"], rec["ev_score"], rec["ev_drifted"] = evidently_column(ref, cur, is_cat, opts)
                except Exception as e:  # noqa: BLE001 - reported per column, compared by the test
                    rec["ev_error"] = f"{type(e).__name__}: {e}"
            out.write(json.dumps(finite_or_text(rec), allow_nan=False) + "\n")
        n = len(columns)
        share = ndrift / n if n else 0.0
        out.write(json.dumps({"summary": {"features": n, "drifted": ndrift, "share": share,
                                          "dataset_drift": bool(share >= 0.5)},
                              "evidently": ev_version, "evidently_error": ev_error,
                              "numpy": np.__version__, "scipy": scipy.__version__}) + "\n")


if __name__ == "__main__":
    main()
