"""Fit and predict time of the closed-form methods ``bilinear`` and ``ridge``.

A synthetic linear problem of the issue's size (default 10,000 training spots x 1,000 genes
over 10 slides; 1,280-d image features as efficientnet_lite0 gives; 384-d gene text
embeddings as all-MiniLM-L6-v2 gives) is fitted by ``stbench.methods.bilinear.Bilinear`` and
``stbench.methods.ridge.Ridge`` with their default configs:

* ``fit``: no validation bundle (``bilinear`` uses ``lam``, ``ridge`` uses ``alpha``);
* ``fit+val``: with a validation bundle (``--val-spots`` spots; ``--val-genes`` held-out genes
  for ``bilinear``, all genes for ``ridge``), so the ``lam_grid`` / ``alpha_grid`` search runs;
* ``predict``: the training spots' expression of all 1,000 genes (``bilinear`` predicts the
  same genes from their text embeddings, as it would unseen ones).

The stage ``PCA SVD`` times the thin SVD of the standardised (spots x 1,280) feature matrix
both methods start with, and ``Gram eigh`` the same top components from an eigendecomposition
of ``X^T X`` (a possible cheaper route; see ``docs/performance.md``).

    python -m stbench.perf.bench_linear_fits                      # 10k x 1k, best of 3
    python -m stbench.perf.bench_linear_fits --spots 500 --genes 40 --repeats 1 --json out.json

Timings are the best of ``--repeats`` interleaved passes, as wall-clock AND process CPU time;
BLAS threads are capped at ``--threads`` (default 1) with ``threadpoolctl``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time = work

import numpy as np  # noqa: E402

from stbench.perf._common import peak_rss_mb, timed as _timed, two_column_table as _table


def make_problem(n_spots: int, n_genes: int, n_slides: int, d_img: int, d_text: int,
                 n_val_spots: int, n_val_genes: int, seed: int = 0, rank: int = 16) -> dict:
    """A low-rank linear problem: latent programmes drive image features and expression, and
    a gene's loadings are readable from its text embedding (so zero-shot works)."""
    from stbench.method import GeneText, SlideView

    rng = np.random.default_rng(seed)
    n_all_genes = n_genes + n_val_genes
    genes = [f"G{i}" for i in range(n_all_genes)]
    loadings = rng.normal(size=(n_all_genes, rank))
    text = loadings @ rng.normal(size=(rank, d_text)) + 0.5 * rng.normal(size=(n_all_genes, d_text))
    text = text.astype(np.float32)
    lift = rng.normal(size=(rank, d_img)) / np.sqrt(rank)
    index = {g: i for i, g in enumerate(genes)}
    gene_text = GeneText({g: f"{g}: synthetic gene" for g in genes},
                         embed=lambda names: text[[index[n] for n in names]])

    def slides(n: int, count: int, offset: int) -> list:
        views = []
        for s, part in enumerate(np.array_split(np.arange(n), count)):
            m = len(part)
            z = rng.gamma(2.0, 1.0, size=(m, rank))
            img = (z @ lift + rng.normal(size=(m, d_img))).astype(np.float32)
            expr = np.log1p(np.maximum(z @ loadings.T / rank + 0.3 * rng.normal(size=(m, n_all_genes)), 0))
            side = int(np.ceil(np.sqrt(m)))
            grid = np.stack([np.arange(m) % side, np.arange(m) // side], 1).astype(np.float64)
            views.append(SlideView(f"S{offset + s}", f"P{offset + s}", {"image": img}, grid * 100.0,
                                   grid, expr.astype(np.float32), 1.0))
        return views

    train_views = slides(n_spots, n_slides, 0)
    val_views = slides(n_val_spots, 2, n_slides) if n_val_spots else []
    return {"genes": genes, "fit_genes": genes[:n_genes], "val_genes": genes[n_genes:],
            "train": train_views, "val": val_views, "gene_text": gene_text}


def _bundles(prob: dict, method: str, with_val: bool):
    """``(train, val)`` bundles of the shape the harness would give ``method``."""
    import dataclasses

    from stbench.method import Bundle

    genes = prob["genes"]
    fit_genes = prob["fit_genes"]
    cols = [genes.index(g) for g in fit_genes]
    train = Bundle([dataclasses.replace(v, expression=v.expression[:, cols]) for v in prob["train"]],
                   list(fit_genes))
    if not with_val or not prob["val"]:
        return train, None
    val_genes = list(prob["val_genes"]) if method == "bilinear" else list(fit_genes)
    vcols = [genes.index(g) for g in val_genes]
    val = Bundle([dataclasses.replace(v, expression=v.expression[:, vcols]) for v in prob["val"]],
                 val_genes)
    return train, val


def bench(args: argparse.Namespace) -> dict:
    from stbench.method import FitContext
    from stbench.methods.bilinear import Bilinear
    from stbench.methods.ridge import Ridge

    t0 = time.perf_counter()
    prob = make_problem(args.spots, args.genes, args.slides, args.d_img, args.d_text,
                        args.val_spots if args.val else 0, args.val_genes, args.seed)
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    ctx = FitContext(seed=args.seed, gene_text=prob["gene_text"])
    classes = {"bilinear": Bilinear, "ridge": Ridge}
    runs: dict[str, list[tuple[float, float]]] = {}
    preds: dict[str, np.ndarray] = {}
    fitted: dict[str, object] = {}
    train_x = None
    for _ in range(args.repeats):  # interleaved, so contention hits every variant alike
        for name in args.methods:
            cls = classes[name]
            variants = [("fit", False)] + ([("fit+val", True)] if args.val else [])
            for label, with_val in variants:
                train, val = _bundles(prob, name, with_val)
                method = cls(cls.Config())
                _, *t = _timed(lambda: method.fit(train, val, ctx))
                runs.setdefault(f"{name}_{label}", []).append(tuple(t))
                fitted[f"{name}_{label}"] = method
            train, _ = _bundles(prob, name, False)
            pred, *t = _timed(lambda: fitted[f"{name}_fit"].predict(train, list(train.genes)))
            runs.setdefault(f"{name}_predict", []).append(tuple(t))
            preds[name] = pred
            train_x = train
        # the shared first stage: thin SVD of the standardised features, and the Gram route
        x = train_x.stack("image").astype(np.float64)
        xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
        (_, _, vt), *t = _timed(lambda: np.linalg.svd(xs, full_matrices=False))
        runs.setdefault("stage_pca_svd", []).append(tuple(t))
        (evals, evecs), *t = _timed(lambda: np.linalg.eigh(xs.T @ xs))
        runs.setdefault("stage_gram_eigh", []).append(tuple(t))
        del x, xs
    k = min(256, vt.shape[0])
    top = evecs[:, ::-1][:, :k]
    # principal angles between the two 256-d subspaces: 1 = identical
    subspace_cos = float(np.linalg.svd(vt[:k] @ top, compute_uv=False).min())

    best = {key: (min(w for w, _ in v), min(c for _, c in v)) for key, v in runs.items()}
    res: dict = {
        "spots": args.spots, "genes": args.genes, "slides": args.slides, "d_img": args.d_img,
        "d_text": args.d_text, "val": bool(args.val), "val_spots": args.val_spots if args.val else 0,
        "val_genes_bilinear": args.val_genes, "repeats": args.repeats, "threads": args.threads,
        "loadavg": list(os.getloadavg()), "cpus": os.cpu_count(), "data_gen_s": gen_s,
        "rss_after_data_mb": rss_data, "peak_rss_mb": peak_rss_mb(),
        "pca_subspace_min_cos_svd_vs_gram": subspace_cos,
    }
    for key, (wall, cpu) in best.items():
        res[f"{key}_wall_s"], res[f"{key}_cpu_s"] = wall, cpu
    for name, pred in preds.items():
        y = np.concatenate([v.expression[:, : args.genes] for v in prob["train"]])
        res[f"{name}_predict_shape"] = list(pred.shape)
        res[f"{name}_train_pcc_mean"] = _mean_pcc(y, pred)
    res["bilinear_lam"] = float(getattr(fitted.get("bilinear_fit+val", fitted.get("bilinear_fit")),
                                        "lam_", float("nan"))) if "bilinear" in preds else None
    res["ridge_alpha"] = float(getattr(fitted.get("ridge_fit+val", fitted.get("ridge_fit")),
                                       "alpha_", float("nan"))) if "ridge" in preds else None
    return res


def _mean_pcc(y: np.ndarray, p: np.ndarray) -> float:
    from stbench.protocol.metrics import pearson_columns

    r, _ = pearson_columns(y, p)
    return float(np.nanmean(r))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, default=10_000, help="training spots")
    parser.add_argument("--genes", type=int, default=1_000, help="training genes")
    parser.add_argument("--slides", type=int, default=10, help="training slides")
    parser.add_argument("--d-img", type=int, default=1280)
    parser.add_argument("--d-text", type=int, default=384)
    parser.add_argument("--val", action=argparse.BooleanOptionalAction, default=True,
                        help="also time fit with a validation bundle (grid search)")
    parser.add_argument("--val-spots", type=int, default=2_000)
    parser.add_argument("--val-genes", type=int, default=250, help="bilinear's held-out val genes")
    parser.add_argument("--methods", nargs="+", default=["bilinear", "ridge"],
                        choices=["bilinear", "ridge"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        r = bench(args)

    def cell(key: str) -> str:
        return f"wall {r[key + '_wall_s']:.2f} s, CPU {r[key + '_cpu_s']:.2f} s"

    rows = [
        ("load average (1, 5, 15 min)", "%.1f, %.1f, %.1f on %d CPUs" % (*r["loadavg"], r["cpus"] or 0)),
        ("problem", f"{r['spots']:,} training spots ({r['slides']} slides) x {r['genes']:,} genes, "
                    f"image {r['d_img']}-d, text {r['d_text']}-d, {r['threads']} BLAS thread(s), "
                    f"best of {r['repeats']}"),
    ]
    for name in args.methods:
        rows.append((f"{name} fit (no validation)", cell(f"{name}_fit")))
        if r["val"]:
            extra = (f"{r['val_genes_bilinear']} held-out genes" if name == "bilinear"
                     else "all genes")
            rows.append((f"{name} fit + validation grid", cell(f"{name}_fit+val") +
                         f" ({r['val_spots']:,} val spots, {extra})"))
        rows.append((f"{name} predict ({r['spots']:,} x {r['genes']:,})", cell(f"{name}_predict")))
        rows.append((f"{name} mean train PCC (sanity)", f"{r[f'{name}_train_pcc_mean']:.3f}"))
    rows += [
        ("stage: PCA thin SVD (spots x d_img)", cell("stage_pca_svd")),
        ("stage: Gram X^T X + eigh (alternative)", cell("stage_gram_eigh") +
         f" (top-256 subspace min cos {r['pca_subspace_min_cos_svd_vs_gram']:.6f})"),
        ("peak RSS", f"{r['peak_rss_mb']:.0f} MiB (after data {r['rss_after_data_mb']:.0f} MiB)"),
    ]
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
