"""Evaluator speed: vectorised per-gene Pearson r against a ``scipy.stats.pearsonr`` loop.

On the same synthetic fold (default 100,000 spots x 1,000 genes, float64) it times

* ``stbench.protocol.metrics.pearson_columns(y_true, y_pred)`` -- the vectorised per-gene PCC;
* ``stbench.protocol.metrics.evaluate(...)`` -- every official metric of one fold (per-slide Pearson,
  Spearman and R2, pooled Pearson, MSE/MAE, top-k subsets) on ``--slides`` test slides;
* a loop ``scipy.stats.pearsonr(y_true[:, j], y_pred[:, j])`` over the genes (the reference),

and checks that the vectorised PCC equals the loop's (max absolute difference) and that
``evaluate``'s ``pcc_pooled`` column equals it too.

    python -m stbench.perf.bench_evaluator                        # 100k x 1k, best of 3
    python -m stbench.perf.bench_evaluator --spots 2000 --genes 50 --repeats 1 --json out.json

Timings are the best of ``--repeats`` interleaved passes (vectorised, full evaluator, loop, in
turn, so load from other processes hits every variant alike), as wall-clock AND process CPU
time. BLAS / OpenMP pools are capped at ``--threads`` (default 1) with ``threadpoolctl``.
Targets (issue #8): the vectorised PCC >= 50x faster than the loop and < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time = work

import numpy as np  # noqa: E402

from stbench.perf._common import peak_rss_mb, timed as _timed, two_column_table as _table

TARGET_SPEEDUP = 50.0
TARGET_SECONDS = 1.0


def make_fold(n_spots: int, n_genes: int, n_slides: int, seed: int = 0, dtype=np.float64):
    """Synthetic log-expression truth, a correlated prediction, slide labels and train stats.

    Per-gene signal strength varies, so the correlations spread over (-0.2, 0.95); every
    column is non-constant.
    """
    rng = np.random.default_rng(seed)
    y_true = rng.gamma(2.0, 0.5, size=(n_spots, n_genes)).astype(dtype, copy=False)
    np.log1p(y_true, out=y_true)
    signal = np.linspace(-0.2, 3.0, n_genes, dtype=dtype)
    mean = y_true.mean(0)
    y_pred = rng.standard_normal((n_spots, n_genes)).astype(dtype, copy=False)
    for s in range(0, n_spots, 4096):  # in row blocks: no full-size temporaries
        y_pred[s:s + 4096] += signal * (y_true[s:s + 4096] - mean)
    slides = np.repeat(np.arange(n_slides), -(-n_spots // n_slides))[:n_spots]
    slide_ids = np.array([f"S{i}" for i in range(n_slides)], dtype=object)[slides]
    mean_train = rng.random(n_genes)
    var_train = rng.random(n_genes)
    return y_true, y_pred, slide_ids, mean_train, var_train


def pearsonr_loop(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The reference: one ``scipy.stats.pearsonr`` call per gene (column)."""
    from scipy import stats

    out = np.empty(y_true.shape[1])
    with warnings.catch_warnings():  # constant columns warn and give NaN, as in the evaluator
        warnings.simplefilter("ignore")
        for j in range(y_true.shape[1]):
            out[j] = stats.pearsonr(y_true[:, j], y_pred[:, j])[0]
    return out


def bench(args: argparse.Namespace) -> dict:
    from stbench.protocol.metrics import evaluate, pearson_columns

    t0 = time.perf_counter()
    dtype = np.float32 if args.dtype == "float32" else np.float64
    y_true, y_pred, slide_ids, mean_train, var_train = make_fold(
        args.spots, args.genes, args.slides, args.seed, dtype)
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    genes = [f"G{j}" for j in range(args.genes)]

    runs: dict[str, list[tuple[float, float]]] = {"vectorised": [], "evaluate": [], "loop": []}
    rss: dict[str, float] = {}
    vec = full = ref = None
    for rep in range(args.repeats):  # interleaved, so contention hits every variant alike
        (vec, _undef), *t = _timed(lambda: pearson_columns(y_true, y_pred))
        runs["vectorised"].append(tuple(t))
        rss.setdefault("vectorised", peak_rss_mb())
        if not args.skip_evaluate and rep < args.evaluate_repeats:
            full, *t = _timed(lambda: evaluate(y_true, y_pred, slide_ids, genes,
                                               gene_mean_train=mean_train,
                                               gene_var_train=var_train))
            runs["evaluate"].append(tuple(t))
            rss.setdefault("evaluate", peak_rss_mb())
        ref, *t = _timed(lambda: pearsonr_loop(y_true, y_pred))
        runs["loop"].append(tuple(t))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items() if v}

    diff = float(np.nanmax(np.abs(vec - ref)))
    res: dict = {
        "spots": args.spots, "genes": args.genes, "slides": args.slides, "dtype": args.dtype,
        "repeats": args.repeats, "evaluate_repeats": args.evaluate_repeats,
        "threads": args.threads, "loadavg": list(os.getloadavg()),
        "cpus": os.cpu_count(), "data_gen_s": gen_s, "data_mb": 2 * y_true.nbytes / 2**20,
        "rss_after_data_mb": rss_data, "max_abs_diff_vectorised_vs_loop": diff,
        "pcc_mean": float(np.nanmean(vec)),
    }
    if full is not None:
        pooled = full.per_gene["pcc_pooled"].to_numpy()
        res["max_abs_diff_evaluate_pooled_vs_loop"] = float(np.max(np.abs(pooled - ref)))
        res["evaluate_pcc_mean"] = full.metrics["pcc_mean"]
    for key, (wall, cpu) in best.items():
        res[f"{key}_wall_s"], res[f"{key}_cpu_s"] = wall, cpu
    for key in ("vectorised", "evaluate"):
        if key in best:
            res[f"speedup_{key}_wall"] = best["loop"][0] / best[key][0]
            res[f"speedup_{key}_cpu"] = best["loop"][1] / best[key][1]
    res["peak_rss_after_vectorised_mb"] = rss.get("vectorised")
    res["peak_rss_after_evaluate_mb"] = rss.get("evaluate")
    res["peak_rss_mb"] = peak_rss_mb()
    res["target_speedup"], res["target_seconds"] = TARGET_SPEEDUP, TARGET_SECONDS
    res["pass_speedup"] = bool(res["speedup_vectorised_cpu"] >= TARGET_SPEEDUP
                               and res["speedup_vectorised_wall"] >= TARGET_SPEEDUP)
    res["pass_seconds"] = bool(res["vectorised_wall_s"] < TARGET_SECONDS)
    res["pass_seconds_cpu"] = bool(res["vectorised_cpu_s"] < TARGET_SECONDS)
    return res


def _fmt(r: dict, key: str) -> str:
    return f"wall {r[key + '_wall_s']:.3f} s, CPU {r[key + '_cpu_s']:.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=1_000)
    parser.add_argument("--slides", type=int, default=4, help="test slides in the fold (evaluate)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evaluate-repeats", type=int, default=1,
                        help="time evaluate in the first N repeats only (it is slow: ranks)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-evaluate", action="store_true", help="time pearson_columns only")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        r = bench(args)
    rows = [
        ("load average (1, 5, 15 min)", "%.1f, %.1f, %.1f on %d CPUs" % (*r["loadavg"], r["cpus"] or 0)),
        ("fold", f"{r['spots']:,} spots x {r['genes']:,} genes, {r['slides']} slides, {r['dtype']} "
                 f"({r['data_mb']:.0f} MiB for truth + prediction), {r['threads']} thread(s), "
                 f"best of {r['repeats']}"),
        ("stbench.protocol.metrics.pearson_columns", _fmt(r, "vectorised")),
        ("scipy.stats.pearsonr loop over genes", _fmt(r, "loop")),
    ]
    if "evaluate_wall_s" in r:
        rows.append(("evaluate (all metrics, per slide + pooled)",
                     _fmt(r, "evaluate") + f" (best of {min(r['repeats'], r['evaluate_repeats'])})"))
    rows += [
        (f"speed-up vectorised / loop (target >= {TARGET_SPEEDUP:.0f}x)",
         f"{r['speedup_vectorised_wall']:.1f}x wall, {r['speedup_vectorised_cpu']:.1f}x CPU time "
         f"-> {'PASS' if r['pass_speedup'] else 'FAIL'}"),
        (f"vectorised PCC time (target < {TARGET_SECONDS:.0f} s)",
         f"{r['vectorised_wall_s']:.3f} s wall -> {'PASS' if r['pass_seconds'] else 'FAIL'} "
         f"({r['vectorised_cpu_s']:.3f} s CPU -> {'PASS' if r['pass_seconds_cpu'] else 'FAIL'})"),
    ]
    if "evaluate_wall_s" in r:
        rows.append(("speed-up evaluate / loop", f"{r['speedup_evaluate_wall']:.1f}x wall, "
                                                 f"{r['speedup_evaluate_cpu']:.1f}x CPU time"))
    rows.append(("max |vectorised - loop|", f"{r['max_abs_diff_vectorised_vs_loop']:.2e}"))
    if "max_abs_diff_evaluate_pooled_vs_loop" in r:
        rows.append(("max |evaluate pcc_pooled - loop|", f"{r['max_abs_diff_evaluate_pooled_vs_loop']:.2e}"))
    rows.append(("peak RSS", f"{r['peak_rss_mb']:.0f} MiB (after data {r['rss_after_data_mb']:.0f} MiB, "
                             f"after pearson_columns {r['peak_rss_after_vectorised_mb']:.0f} MiB)"))
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
