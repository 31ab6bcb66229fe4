"""Time every fedpoison aggregation rule and pre-aggregator against references.

For each size (n clients, d parameters) and each rule, three contenders run on
the same float32 matrix (standard normal rows, f = n // 5 assumed Byzantine):

- ``fedpoison``: the registered rule, called as the round loop calls it;
- ``reference``: a straightforward implementation written here (strided sorts
  along the client axis, ``torch.cdist``, explicit differences, Python loops
  where the algorithm reads that way);
- ``byzfl``: ByzFL's implementation, where ByzFL has the rule and ``byzfl``
  imports (install it only in the benchmark's own venv, see README).

Contenders are interleaved within each repeat (so machine noise hits them
alike) and the median of the repeats is reported. ``gram`` is the cost of the
one ``X @ X.T`` product that Krum-like rules need.

Usage::

    python benchmarks/aggregators/bench_aggregators.py --n 50 200 --d 100000 1000000 --repeats 3 \
        --json benchmarks/aggregators/results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedpoison.audit import AUDITORS
from fedpoison.defenses import PRE_AGGREGATORS, RULES, ParamSlice, RoundContext

try:  # only in the benchmark venv
    import byzfl  # type: ignore[import-not-found]
except Exception:  # any import failure means: no ByzFL column
    byzfl = None

Fn = Callable[[], Any]
GM_ITERS, GM_NU, CC_TAU = 3, 0.1, 100.0  # ByzFL's defaults, used by every contender


# ---- straightforward references ------------------------------------------------------------
def ref_median(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    s = torch.sort(x, dim=0).values
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def ref_trimmed_mean(x: torch.Tensor, f: int) -> torch.Tensor:
    return torch.sort(x, dim=0).values[f : x.shape[0] - f].mean(dim=0)


def ref_krum_scores(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    d2 = torch.cdist(x, x) ** 2
    return torch.sort(d2, dim=1).values[:, 1 : n - f - 1].sum(dim=1)


def ref_krum(x: torch.Tensor, f: int, m: int) -> torch.Tensor:
    idx = torch.argsort(ref_krum_scores(x, f))[:m]
    return x[idx].mean(dim=0)


def ref_bulyan(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    d2 = torch.cdist(x, x) ** 2
    remaining = list(range(n))
    picks = []
    for _ in range(n - 2 * f):
        sub = d2[remaining][:, remaining]
        k = max(len(remaining) - f - 2, 1)
        scores = torch.sort(sub, dim=1).values[:, 1 : k + 1].sum(dim=1)
        best = remaining[int(torch.argmin(scores))]
        picks.append(best)
        remaining.remove(best)
    sel = x[picks]
    med = ref_median(sel)
    beta = n - 4 * f
    idx = torch.argsort((sel - med).abs(), dim=0)[:beta]
    return torch.gather(sel, 0, idx).mean(dim=0)


def ref_geometric_median(x: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(x.shape[1])
    for _ in range(GM_ITERS):
        beta = 1.0 / (x - z).norm(dim=1).clamp_min(GM_NU)
        z = (beta[:, None] * x).sum(dim=0) / beta.sum()
    return z


def ref_centered_clipping(x: torch.Tensor) -> torch.Tensor:
    v = torch.zeros(x.shape[1])
    diff = x - v
    scale = (CC_TAU / diff.norm(dim=1)).clamp(max=1.0)
    return v + (diff * scale[:, None]).mean(dim=0)


def ref_fltrust(x: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(x, root[None, :], dim=1)
    ts = torch.relu(cos)
    scaled = x * (root.norm() / x.norm(dim=1))[:, None]
    return (ts[:, None] * scaled).sum(dim=0) / ts.sum()


def ref_cosine(x: torch.Tensor) -> torch.Tensor:
    xn = x / x.norm(dim=1, keepdim=True)
    return xn @ xn.T


def ref_foolsgold(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    cs = ref_cosine(x).numpy().astype(np.float64) - np.eye(n)
    v = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and v[i] < v[j]:
                cs[i, j] *= v[i] / v[j]
    a = np.clip(1 - cs.max(axis=1), 0, 1)
    a = a / a.max()
    a[a == 1] = 0.99
    a = np.clip(np.nan_to_num(np.log(a / (1 - a)) + 0.5, neginf=0.0), 0, 1)
    w = torch.from_numpy(a).float()
    return (w[:, None] * x).sum(dim=0) / w.sum()


def ref_flame(x: torch.Tensor) -> torch.Tensor:
    from sklearn.cluster import HDBSCAN

    n = x.shape[0]
    dist = (1 - ref_cosine(x)).double().numpy().clip(0)
    labels = HDBSCAN(metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1,
                     allow_single_cluster=True, copy=True).fit(dist).labels_
    keep = torch.from_numpy(labels == np.bincount(labels[labels >= 0]).argmax())
    norms = x.norm(dim=1)
    s = norms.median()
    clipped = x[keep] * (s / norms[keep]).clamp(max=1.0)[:, None]
    return clipped.mean(dim=0) + 0.001 * s * torch.randn(x.shape[1])


def ref_dnc(x: torch.Tensor, f: int, g: torch.Generator) -> torch.Tensor:
    n, d = x.shape
    good = set(range(n))
    for _ in range(5):
        dims = torch.randperm(d, generator=g)[: min(10_000, d)]
        sub = x[:, dims]
        c = sub - sub.mean(dim=0)
        v = torch.linalg.svd(c, full_matrices=False).Vh[0]
        s = (c @ v) ** 2
        good &= set(torch.argsort(s)[: n - f].tolist())
    return x[sorted(good)].mean(dim=0)


def ref_signguard(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    from sklearn.cluster import MeanShift, estimate_bandwidth

    n, d = x.shape
    norms = x.norm(dim=1)
    med = norms.median()
    ok = (norms / med >= 0.1) & (norms / med <= 3.0)
    dims = torch.randperm(d, generator=g)[: math.ceil(0.1 * d)]
    sub = x[:, dims]
    feats = torch.stack([(sub > 0).float().mean(1), (sub == 0).float().mean(1), (sub < 0).float().mean(1)], 1).numpy()
    bw = estimate_bandwidth(feats, quantile=0.5)
    labels = MeanShift(bandwidth=bw).fit(feats).labels_ if bw > 0 else np.zeros(n, int)
    keep = ok & torch.from_numpy(labels == np.bincount(labels).argmax())
    return (x[keep] * (med / norms[keep]).clamp(max=1.0)[:, None]).mean(dim=0)


def ref_norm_bound(x: torch.Tensor) -> torch.Tensor:
    norms = x.norm(dim=1)
    return (x * (norms.median() / norms).clamp(max=1.0)[:, None]).mean(dim=0)


def ref_clip(x: torch.Tensor) -> torch.Tensor:
    norms = x.norm(dim=1)
    return x * (norms.median() / norms).clamp(max=1.0)[:, None]


def ref_bucketing(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(x.shape[0], generator=g)
    return torch.stack([x[perm[i : i + 2]].mean(dim=0) for i in range(0, x.shape[0], 2)])


def ref_nnm(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    idx = torch.topk(torch.cdist(x, x), n - f, dim=1, largest=False).indices
    return torch.stack([x[idx[i]].mean(dim=0) for i in range(n)])


def ref_rlr(x: torch.Tensor, theta: int) -> torch.Tensor:
    votes = torch.stack([torch.sign(r) for r in x]).sum(dim=0).abs()
    return torch.where(votes >= theta, 1.0, -1.0) * x.mean(dim=0)


def ref_multi_metrics(x: torch.Tensor, keep: float) -> torch.Tensor:
    n = x.shape[0]
    norms = torch.stack([torch.norm(r) for r in x])
    feats = []
    for i in range(n):  # one row against all others, explicit differences
        cos = (x @ x[i]) / (norms * norms[i])
        man = (x - x[i]).abs().sum(dim=1)
        feats.append(torch.stack([((1 - cos) ** 2).sum() - (1 - cos[i]) ** 2, man.sum(),
                                  (norms - norms[i]).abs().sum()]))
    t = torch.stack(feats).double()
    s = ((t @ torch.linalg.pinv(torch.cov(t.T))) * t).sum(dim=1)
    idx = torch.argsort(s)[: max(1, int(keep * n))]
    return x[idx].mean(dim=0)


def ref_alignins(x: torch.Tensor, ref: torch.Tensor, sparsity: float = 0.3) -> torch.Tensor:
    d = x.shape[1]
    major = torch.sign(torch.sign(x).sum(dim=0))
    tda, mpsa = [], []
    for r in x:  # the authors' per-row top-k and cosine
        idx = torch.topk(r.abs(), int(d * sparsity)).indices
        mpsa.append((torch.sign(r[idx]) == major[idx]).float().mean())
        tda.append(torch.nn.functional.cosine_similarity(r, ref, dim=0))

    def mz(v: torch.Tensor) -> torch.Tensor:
        return (v - v.median()).abs() / v.std(correction=0)

    kept = (mz(torch.stack(mpsa)) < 1.0) & (mz(torch.stack(tda)) < 1.0)
    rows = x[kept]
    norms = rows.norm(dim=1)
    return (rows * torch.clamp(norms.median() / norms, max=1.0)[:, None]).mean(dim=0)


def ref_lasa(x: torch.Tensor, sparsity: float = 0.3) -> torch.Tensor:
    n, d = x.shape
    norms = x.norm(dim=1)
    y = x * torch.clamp(norms.median() / norms, max=1.0)[:, None]
    out = torch.zeros_like(y)
    k = int(d * (1 - sparsity))
    for i in range(n):  # the authors' per-row top-k (one layer: the benchmark has no slices)
        idx = torch.topk(y[i].abs(), k).indices
        out[i, idx] = y[i, idx]

    def mz(v: torch.Tensor) -> torch.Tensor:
        return (v - v.median()).abs() / v.std(correction=0)

    sg = torch.sign(out)
    pdp = 0.5 * (1 + sg.sum(dim=1) / sg.abs().sum(dim=1))
    benign = (mz(out.norm(dim=1)) < 2.0) & (mz(pdp) < 1.0)
    return out[benign].mean(dim=0)


def ref_foundation_fl(x: torch.Tensor) -> torch.Tensor:
    hi, lo = x.max(dim=0).values, x.min(dim=0).values
    s = torch.minimum(torch.norm(x - hi, dim=1), torch.norm(x - lo, dim=1))
    return torch.cat([x, x[int(torch.argmax(s))].repeat(x.shape[0], 1)])


# ---- contenders per rule ---------------------------------------------------------------------
#: Rules whose cost is dominated by one Gram product: the Gram is timed alongside them.
GRAM_RULES = {"krum", "multi_krum", "bulyan", "nnm"}

PARAMS: dict[str, dict[str, Any]] = {
    "geometric_median": {"max_iter": GM_ITERS, "smoothing": GM_NU, "tol": 0.0},
    "centered_clipping": {"tau": CC_TAU},
}


def layout(d: int, classes: int = 10, hidden: int = 100) -> tuple[ParamSlice, ...]:
    """A parameter layout for ``d`` entries: one body matrix, then a ``classes x hidden`` output layer and its bias."""
    body = d - classes * hidden - classes
    return (ParamSlice("body.weight", 0, body, (body, 1)),
            ParamSlice("fc.weight", body, body + classes * hidden, (classes, hidden)),
            ParamSlice("fc.bias", body + classes * hidden, d, (classes,)))


def fedpoison_fn(name: str, family: str, x: torch.Tensor, f: int, root: torch.Tensor) -> Fn:
    registry = {"pre": PRE_AGGREGATORS, "rule": RULES, "auditor": AUDITORS}[family]
    entry = registry.get(name)
    params = entry.params(**PARAMS.get(name, {}))
    n = x.shape[0]
    w = torch.ones(n)

    slices = layout(x.shape[1])

    def call() -> Any:
        # The global model is the root update's direction (alignins' TDA reference), not zero; the layout
        # has an output layer (DeepSight) and weight matrices (LASA). No model: DeepSight skips its DDifs.
        ctx = RoundContext(0, torch.arange(n), torch.Generator().manual_seed(0), root, slices, lambda p: root)
        if family == "auditor":  # a fresh auditor screening one round
            return entry.obj(params, num_clients=n).screen(x, w, ctx)
        return entry.obj(params, f=f)(x, w, ctx)  # a fresh instance: stateful rules start clean

    return call


def reference_fn(name: str, x: torch.Tensor, f: int, root: torch.Tensor) -> Fn | None:
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)
    table: dict[str, Fn] = {
        "mean": lambda: x.mean(dim=0),
        "median": lambda: ref_median(x),
        "trimmed_mean": lambda: ref_trimmed_mean(x, f),
        "krum": lambda: ref_krum(x, f, 1),
        "multi_krum": lambda: ref_krum(x, f, n - f),
        "bulyan": lambda: ref_bulyan(x, f),
        "geometric_median": lambda: ref_geometric_median(x),
        "centered_clipping": lambda: ref_centered_clipping(x),
        "fltrust": lambda: ref_fltrust(x, root),
        "foolsgold": lambda: ref_foolsgold(x),
        "flame": lambda: ref_flame(x),
        "dnc": lambda: ref_dnc(x, f, g),
        "signguard": lambda: ref_signguard(x, g),
        "norm_bound": lambda: ref_norm_bound(x),
        "clip": lambda: ref_clip(x),
        "bucketing": lambda: ref_bucketing(x, g),
        "nnm": lambda: ref_nnm(x, f),
        "rlr": lambda: ref_rlr(x, f + 1),
        "multi_metrics": lambda: ref_multi_metrics(x, 0.3),
        "alignins": lambda: ref_alignins(x, root),
        "lasa": lambda: ref_lasa(x),
        "foundation_fl": lambda: ref_foundation_fl(x),
    }
    return table.get(name)


def byzfl_fn(name: str, x: torch.Tensor, f: int) -> Fn | None:
    if byzfl is None:
        return None
    n, d = x.shape
    table: dict[str, Callable[[], Any]] = {
        "mean": lambda: byzfl.Average(),
        "median": lambda: byzfl.Median(),
        "trimmed_mean": lambda: byzfl.TrMean(f=f),
        "krum": lambda: byzfl.Krum(f=f),
        "multi_krum": lambda: byzfl.MultiKrum(f=f),
        "geometric_median": lambda: byzfl.GeometricMedian(nu=GM_NU, T=GM_ITERS),
        "centered_clipping": lambda: byzfl.CenteredClipping(tau=CC_TAU, L=1),
        "bucketing": lambda: byzfl.Bucketing(s=2),
        "nnm": lambda: byzfl.NNM(f=f),
    }
    if name == "nnm" and n * (n - f) * d * 4 > 8e9:
        return None  # ByzFL gathers an (n, n - f, d) tensor: over 8 GB here
    make = table.get(name)
    if make is None:
        return None
    return lambda: make()(x)


# ---- timing ----------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_bytes(fn: Fn, interval: float = 0.002) -> int:
    """Peak resident memory above the level before the call, sampled every ``interval`` seconds.

    Large tensors are mmapped and given back on free, so the level before the
    call is the matrix and what the process already held. Sampling misses
    peaks shorter than ``interval``: a lower bound, close for calls of seconds.
    """
    import threading

    gc.collect()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = fn()
    peak[0] = max(peak[0], _rss_bytes())
    stop.set()
    t.join()
    del out
    return max(peak[0] - base, 0)


def median_times(fns: dict[str, Fn], repeats: int, warmup: int = 1) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds of each contender over ``repeats`` interleaved calls, and its peak extra memory.

    The memory is sampled during the timed calls themselves (a thread reading
    the RSS every 2 ms, :func:`peak_extra_bytes`), so it costs no extra call.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    mem: dict[str, int] = {k: 0 for k in fns}
    for _ in range(warmup):  # warm-up (lazy imports, thread pools, allocator)
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            extra = peak_extra_bytes(fn)
            times[k].append(time.perf_counter() - t0)
            mem[k] = max(mem[k], extra)
    return {k: statistics.median(v) for k, v in times.items()}, mem


def bench_size(n: int, d: int, names: list[tuple[str, str]], repeats: int, env: dict[str, Any],
               json_path: str | None, warmup: int = 1) -> None:
    """Time every rule in ``names`` on one ``(n, d)`` matrix; print a row per rule."""
    f = n // 5
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    root = x.mean(dim=0) + 0.1 * torch.randn(d, generator=torch.Generator().manual_seed(2))

    def gram_fn() -> Any:
        return x @ x.T

    gram_alone = median_times({"gram": gram_fn}, repeats, warmup)[0]["gram"]
    for name, family in names:
        fns: dict[str, Fn] = {"fedpoison": fedpoison_fn(name, family, x, f, root)}
        ref = reference_fn(name, x, f, root)
        if ref is not None:
            fns["reference"] = ref
        bz = byzfl_fn(name, x, f)
        if bz is not None:
            fns["byzfl"] = bz
        if name in GRAM_RULES:  # timed in the same rounds, for the fp/gram ratio
            fns["gram"] = gram_fn
        t, peaks = median_times(fns, repeats, warmup)
        mem = {f"{k}_mem_bytes": float(v) for k, v in peaks.items() if k in ("fedpoison", "reference")}
        fp, gram = t["fedpoison"], t.get("gram", gram_alone)
        ratios = {k: t[k] / fp for k in ("reference", "byzfl") if k in t}
        cells = [f"{ratios[k]:7.2f}" if k in ratios else f"{'-':>7}" for k in ("reference", "byzfl")]
        copies = mem["fedpoison_mem_bytes"] / (n * d * 4)
        print(f"{n:>4} {d:>8} {name:<18} {fp:>10.4f} {t.get('reference', float('nan')):>10.4f} "
              f"{t.get('byzfl', float('nan')):>10.4f} {gram:>8.4f} {cells[0]} {cells[1]:>8} {fp / gram:7.2f}"
              f" {copies:7.2f}", flush=True)
        if json_path:
            with open(json_path, "a") as fh:
                fh.write(json.dumps({"n": n, "d": d, "f": f, "rule": name, "family": family, **t, **mem,
                                     "gram": gram, **env}) + "\n")


def markdown(json_path: str) -> str:
    """A markdown table of the JSON lines in ``json_path`` (the last measurement of each cell wins)."""
    rows: dict[tuple[int, int, str], dict[str, Any]] = {}
    with open(json_path) as fh:
        for line in fh:
            r = json.loads(line)
            rows[(r["n"], r["d"], r["rule"])] = r
    out = ["| n | d | rule | fedpoison (s) | reference (s) | ByzFL (s) | Gram (s) | reference / fedpoison "
           "| ByzFL / fedpoison | fedpoison / Gram | fedpoison peak extra memory (n x d copies) "
           "| reference peak extra memory (n x d copies) |",
           "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (n, d, rule), r in sorted(rows.items()):
        fp = r["fedpoison"]

        def cell(k: str, r: dict[str, Any] = r) -> str:
            return f"{r[k]:.3f}" if k in r else "-"

        def ratio(k: str, r: dict[str, Any] = r, fp: float = fp) -> str:
            return f"{r[k] / fp:.2f}x" if k in r else "-"

        def mem(k: str, r: dict[str, Any] = r, nd: float = n * d * 4.0) -> str:
            return f"{r[k] / 2**20:.0f} MiB ({r[k] / nd:.2f})" if k in r else "-"

        out.append(f"| {n} | {d:.0e} | {rule} | {fp:.3f} | {cell('reference')} | {cell('byzfl')} | "
                   f"{r['gram']:.3f} | {ratio('reference')} | {ratio('byzfl')} | {fp / r['gram']:.2f}x | "
                   f"{mem('fedpoison_mem_bytes')} | {mem('reference_mem_bytes')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--d", type=float, nargs="+", default=[1e5, 1e6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls of each contender first")
    ap.add_argument("--rules", nargs="*", default=None, help="rule/pre-aggregator names (default: all)")
    ap.add_argument("--json", default=None, help="append one JSON line per measurement here")
    ap.add_argument("--markdown", default=None, help="print the markdown table of this JSON file and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0

    # Every registered rule, pre-aggregator and auditor, so new ones join by registering. Auditors that
    # probe models with the server's data (backdoor_indicator) cost model passes, not matrix work: left out.
    names = [(r, "rule") for r in RULES.names()] + [(p, "pre") for p in PRE_AGGREGATORS.names()] + \
        [(a, "auditor") for a in AUDITORS.names() if not AUDITORS.get(a).has("needs_root_data")]
    if args.rules:
        names = [(r, p) for r, p in names if r in args.rules]
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "threads": torch.get_num_threads(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "byzfl_version": None,
    }
    if byzfl is not None:
        from importlib.metadata import version

        env["byzfl_version"] = version("byzfl")
    print(json.dumps(env), flush=True)
    print(f"{'n':>4} {'d':>8} {'rule':<18} {'fedpoison':>10} {'reference':>10} {'byzfl':>10} {'gram':>8}"
          f" {'ref/fp':>7} {'byzfl/fp':>8} {'fp/gram':>7} {'copies':>7}", flush=True)
    for n in args.n:
        for d in (int(v) for v in args.d):
            bench_size(n, d, names, args.repeats, env, args.json, args.warmup)
            gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
