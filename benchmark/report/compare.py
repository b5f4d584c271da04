"""Paired comparison of two recorded runs (``stbench compare RUN_A RUN_B``).

Two result JSONs are comparable when they share the protocol
(:func:`stbench.report.runs.protocol_of`: dataset and version, split, gene split, panel,
evaluated genes, preprocessing) and the same folds (:func:`stbench.report.runs.instance_of`:
per fold the same train / validation / test slides and seen / unseen genes). Runs recorded with
different seeds usually draw different validation slides or unseen genes; they are refused
unless their folds happen to coincide.

Reported (per-gene PCC is ``per_gene.pcc``: Pearson per gene within each test slide, averaged
over the fold's test slides):

* per fold: both runs' ``pcc_mean``, their difference, a two-sided paired Wilcoxon signed-rank
  test over the fold's common evaluated genes, Holm-corrected across folds, and the winner;
* overall: Wilcoxon over genes of the per-gene PCC averaged over folds (aligned by gene),
  Wilcoxon over folds of ``pcc_mean``, and the means over folds of every metric (lower is
  better for ``mse`` / ``mae``).

The winner is the run with the higher mean ``pcc_mean``; the verdict says whether the gene-level
test supports it at p < 0.05.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from stbench.errors import UserError

__all__ = ["compare_files", "compare_runs", "format_comparison"]

ALPHA = 0.05


def _wilcoxon(a: list[float], b: list[float]) -> tuple[float | None, float | None]:
    """(statistic, p) or (None, None) with fewer than 2 pairs."""
    from stbench.protocol.metrics import paired_wilcoxon

    if len(a) < 2:
        return None, None
    stat, p = paired_wilcoxon(a, b)
    return float(stat), float(p)


def check_comparable(a, b) -> None:
    """Raise :class:`UserError` naming both files and the first difference."""
    from stbench.report.runs import describe_difference, instance_of, protocol_of

    pa, pb = protocol_of(a.data), protocol_of(b.data)
    if pa != pb:
        raise UserError(f"incompatible runs: {a.name} and {b.name} differ in "
                        f"{describe_difference(pa, pb)}",
                        fix="compare runs of the same dataset version, split, gene split, panel "
                            "and preprocessing")
    ia, ib = instance_of(a.data), instance_of(b.data)
    if ia != ib:
        seeds = (f"seeds {a.seed} and {b.seed} drew different folds or genes"
                 if a.seed != b.seed else f"same seed {a.seed} but different folds or genes")
        raise UserError(f"incompatible runs: {a.name} and {b.name}: {seeds}: "
                        f"{describe_difference({'folds': ia}, {'folds': ib})}",
                        fix="compare runs recorded with the same seed (and the same stbench and "
                            "data), e.g. `stbench run ... seed=" f"{a.seed}`")


def compare_runs(a, b) -> dict[str, Any]:
    """The paired comparison of two loaded runs (:class:`stbench.report.runs.Run`).

    Raises:
        UserError: The runs are not comparable.
    """
    from stbench.report.board import LOWER_IS_BETTER, metric_order
    from stbench.protocol.metrics import holm

    check_comparable(a, b)
    ua = {u.fold: u for u in a.units()}
    ub = {u.fold: u for u in b.units()}
    folds = []
    for f in sorted(set(ua) & set(ub)):
        x, y = ua[f], ub[f]
        genes = sorted(set(x.gene_pcc) & set(y.gene_pcc))
        va = [x.gene_pcc[g] for g in genes]
        vb = [y.gene_pcc[g] for g in genes]
        stat, p = _wilcoxon(va, vb)
        ma, mb = x.metrics.get("pcc_mean", math.nan), y.metrics.get("pcc_mean", math.nan)
        folds.append({"fold": f, "test": list(x.test), "n_genes": len(genes),
                      "pcc_mean_a": ma, "pcc_mean_b": mb, "diff": ma - mb,
                      "gene_pcc_diff": float(np.mean(np.subtract(va, vb))) if genes else math.nan,
                      "wilcoxon_w": stat, "p": p, "p_holm": None,
                      "winner": "a" if ma > mb else "b" if mb > ma else "tie"})
    tested = [f for f in folds if f["p"] is not None]
    if tested:
        for f, adj in zip(tested, holm([f["p"] for f in tested])):
            f["p_holm"] = float(adj)

    def per_gene(units: dict) -> dict[str, float]:
        acc: dict[str, list[float]] = {}
        for f in folds:
            for g, v in units[f["fold"]].gene_pcc.items():
                acc.setdefault(g, []).append(v)
        return {g: float(np.mean(v)) for g, v in acc.items()}

    ga, gb = per_gene(ua), per_gene(ub)
    genes = sorted(set(ga) & set(gb))
    stat_g, p_g = _wilcoxon([ga[g] for g in genes], [gb[g] for g in genes])
    fa = [f["pcc_mean_a"] for f in folds]
    fb = [f["pcc_mean_b"] for f in folds]
    stat_f, p_f = _wilcoxon(fa, fb)

    names = metric_order(set().union(*(u.metrics for u in ua.values()))
                         & set().union(*(u.metrics for u in ub.values())))
    metrics = []
    for m in names:
        xa = float(np.mean([ua[f["fold"]].metrics[m] for f in folds if m in ua[f["fold"]].metrics]))
        xb = float(np.mean([ub[f["fold"]].metrics[m] for f in folds if m in ub[f["fold"]].metrics]))
        lower = m in LOWER_IS_BETTER
        better = ("a" if (xa < xb) == lower else "b") if xa != xb else "tie"
        metrics.append({"metric": m, "a": xa, "b": xb, "diff": xa - xb,
                        "better": better, "lower_is_better": lower})
    mean_a, mean_b = float(np.mean(fa)), float(np.mean(fb))
    winner = "a" if mean_a > mean_b else "b" if mean_b > mean_a else "tie"
    significant = p_g is not None and p_g < ALPHA
    return {
        "a": {"file": a.name, "method": a.method, "kind": a.kind, "seed": a.seed},
        "b": {"file": b.name, "method": b.method, "kind": b.kind, "seed": b.seed},
        "dataset": a.data["dataset"], "split": a.data["split"]["name"],
        "evaluated_on": a.data["genes"].get("evaluated_on"),
        "folds": folds,
        "overall": {"n_genes": len(genes), "gene_wilcoxon_w": stat_g, "gene_p": p_g,
                    "gene_pcc_diff": float(np.mean([ga[g] - gb[g] for g in genes])) if genes
                    else math.nan,
                    "n_folds": len(folds), "fold_wilcoxon_w": stat_f, "fold_p": p_f,
                    "pcc_mean_a": mean_a, "pcc_mean_b": mean_b,
                    "folds_won_a": sum(f["winner"] == "a" for f in folds),
                    "folds_won_b": sum(f["winner"] == "b" for f in folds)},
        "metrics": metrics,
        "winner": winner,
        "significant": significant,
    }


def compare_files(path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """Load two result JSONs and compare them (see :func:`compare_runs`)."""
    from stbench.report.runs import load_run

    return compare_runs(load_run(path_a), load_run(path_b))


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2e}" if x < 1e-3 else f"{x:.4f}"


def verdict(c: dict) -> str:
    a, b, o = c["a"], c["b"], c["overall"]
    if c["winner"] == "tie":
        return "tie: both runs have the same mean pcc_mean"
    w, loser = (a, b) if c["winner"] == "a" else (b, a)
    diff = abs(o["pcc_mean_a"] - o["pcc_mean_b"])
    won = o["folds_won_a"] if c["winner"] == "a" else o["folds_won_b"]
    support = (f"significant over genes (Wilcoxon p={_p(o['gene_p'])} < {ALPHA})"
               if c["significant"] else
               f"not significant over genes (Wilcoxon p={_p(o['gene_p'])})")
    return (f"{w['method']} (seed {w['seed']}) beats {loser['method']} (seed {loser['seed']}) by "
            f"{diff:.4f} mean pcc_mean, winning {won}/{o['n_folds']} folds; {support}")


def format_comparison(c: dict, console=None) -> None:
    """Print the comparison with rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    a, b = c["a"], c["b"]
    console.print(f"A: {a['method']} ({a['kind']}, seed {a['seed']})  {a['file']}")
    console.print(f"B: {b['method']} ({b['kind']}, seed {b['seed']})  {b['file']}")
    console.print(f"dataset {c['dataset']}, split {c['split']}, evaluated on {c['evaluated_on']}")
    t = Table(title="per fold (Wilcoxon over the fold's common genes, Holm across folds)")
    for col in ("fold", "test slides", "genes", "pcc_mean A", "pcc_mean B", "A - B", "p",
                "p (Holm)", "winner"):
        t.add_column(col, justify="left" if col in ("test slides", "winner") else "right")
    for f in c["folds"]:
        win = {"a": "A", "b": "B"}.get(f["winner"], "tie")
        t.add_row(str(f["fold"]), ",".join(f["test"]), str(f["n_genes"]), _f(f["pcc_mean_a"]),
                  _f(f["pcc_mean_b"]), _f(f["diff"]), _p(f["p"]), _p(f["p_holm"]), win)
    console.print(t)
    m = Table(title="means over folds")
    for col in ("metric", "A", "B", "A - B", "better"):
        m.add_column(col, justify="left" if col in ("metric", "better") else "right")
    for row in c["metrics"]:
        better = {"a": "A", "b": "B"}.get(row["better"], "tie")
        m.add_row(row["metric"] + (" (lower is better)" if row["lower_is_better"] else ""),
                  _f(row["a"]), _f(row["b"]), _f(row["diff"]), better)
    console.print(m)
    o = c["overall"]
    console.print(f"overall, over genes: n={o['n_genes']}, mean per-gene PCC A - B = "
                  f"{_f(o['gene_pcc_diff'])}, Wilcoxon W={_f(o['gene_wilcoxon_w'], 1)}, "
                  f"p={_p(o['gene_p'])}")
    console.print(f"overall, over folds: n={o['n_folds']}, "
                  f"Wilcoxon W={_f(o['fold_wilcoxon_w'], 1)}, "
                  f"p={_p(o['fold_p'])}")
    console.print(f"verdict: {verdict(c)}")
