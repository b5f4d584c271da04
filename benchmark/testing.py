"""Conformance kit for method plugins: ``check_method(MyMethod)`` in your own test suite.

It runs the method on a tiny generated problem through the same bundle rules as the harness
(zero-shot methods see seen genes only; test bundles carry no expression) and checks the
contract: metadata, config, search space, output shape and finiteness, determinism under a
seed, and that prediction never reads expression.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stbench.method import Bundle, FitContext, Method, MethodMeta, SlideView
from stbench.features.gene_text import build_gene_text

_WORDS = ["immune response", "cell cycle", "extracellular matrix", "keratinization",
          "angiogenesis", "lipid metabolism"]


def tiny_problem(seed: int = 0, n_slides: int = 3, n_spots: int = 40, n_genes: int = 24,
                 dim: int = 16) -> dict[str, Any]:
    """A small linear problem whose gene loadings follow the gene descriptions.

    Returns:
        ``slides`` (list of SlideView with expression of all genes), ``genes``, ``descriptions``.
    """
    rng = np.random.default_rng(seed)
    k = len(_WORDS)
    genes = [f"GENE{i}" for i in range(n_genes)]
    topic = np.arange(n_genes) % k
    descriptions = {g: f"{g}: gene {i}. Biological process: {_WORDS[topic[i]]}."
                    for i, g in enumerate(genes)}
    loadings = np.eye(k)[topic]  # (genes, k)
    proj = rng.normal(size=(k, dim))
    slides = []
    for s in range(n_slides):
        programmes = rng.gamma(2.0, 1.0, size=(n_spots, k))
        feats = (programmes @ proj + 0.1 * rng.normal(size=(n_spots, dim))).astype(np.float32)
        expr = np.log1p(programmes @ loadings.T + 0.1 * rng.random((n_spots, n_genes))).astype(np.float32)
        cols, rows = np.meshgrid(np.arange(8), np.arange(n_spots // 8 + 1))
        grid = np.stack([cols.ravel(), rows.ravel()], 1)[:n_spots]
        slides.append(SlideView(f"S{s}", f"P{s % 2}", {"image": feats}, grid * 100.0, grid,
                                expr, 1.0))
    return {"slides": slides, "genes": genes, "descriptions": descriptions}


def subset(views: list[SlideView], all_genes: list[str], genes: list[str] | None) -> list[SlideView]:
    """``views`` whose expression holds the columns of ``genes`` only (none when ``None``)."""
    out = []
    for v in views:
        expr = None
        if genes is not None:
            cols = [all_genes.index(g) for g in genes]
            expr = np.asarray(v.expression)[:, cols]
        out.append(dataclasses.replace(v, expression=expr))
    return out


_subset = subset  # the former private name, still imported by some test modules


def _fit_predict(method_cls: type[Method], problem: dict[str, Any], seed: int) -> tuple[np.ndarray, list[str]]:
    genes = problem["genes"]
    unseen, seen = genes[::4], [g for g in genes if g not in set(genes[::4])]
    val_genes = seen[::5]
    fit_genes = [g for g in seen if g not in set(val_genes)]
    meta = method_cls.meta
    if meta.trained_on == "all":
        fit_genes, val_genes = list(genes), list(genes)
    views = problem["slides"]
    train = Bundle(subset(views[:-2], genes, fit_genes), fit_genes)
    val = Bundle(subset(views[-2:-1], genes, val_genes), val_genes)
    test = Bundle(subset(views[-1:], genes, None), [])
    ctx = FitContext(seed=seed, gene_text=build_gene_text(problem["descriptions"]), val_genes=val_genes)
    method = method_cls(method_cls.Config())
    method.fit(train, val, ctx)
    return np.asarray(method.predict(test, unseen)), unseen


def check_method(method_cls: type[Method], seed: int = 0) -> None:
    """Assert that ``method_cls`` honours the stbench method contract.

    Raises:
        AssertionError: Naming the first broken rule.
    """
    assert isinstance(getattr(method_cls, "meta", None), MethodMeta), "meta must be a MethodMeta"
    meta = method_cls.meta
    assert dataclasses.is_dataclass(method_cls.Config), "Config must be a dataclass"
    config = method_cls.Config()
    fields = {f.name for f in dataclasses.fields(config)}

    class _Trial:
        def suggest_float(self, name, low, high, log=False, **_):
            return float(np.sqrt(low * high) if log else (low + high) / 2)

        def suggest_int(self, name, low, high, **_):
            return int((low + high) // 2)

        def suggest_categorical(self, name, choices):
            return choices[0]

    space = method_cls.search_space(_Trial())
    assert isinstance(space, dict), "search_space must return a dict"
    unknown = set(space) - fields
    assert not unknown, f"search_space sets keys {sorted(unknown)} that Config does not have"

    problem = tiny_problem(seed)
    pred, unseen = _fit_predict(method_cls, problem, seed)
    test_spots = problem["slides"][-1].n_spots
    assert pred.shape == (test_spots, len(unseen)), f"predict returned shape {pred.shape}"
    assert np.isfinite(pred).all(), "predictions must be finite"
    again, _ = _fit_predict(method_cls, tiny_problem(seed), seed)
    assert np.allclose(pred, again, atol=1e-5), "same seed must give the same predictions"
    assert meta.kind in ("zero_shot", "supervised", "control")


TINY_GENES = ["ERBB2", "ESR1", "KRT5", "KRT14", "CD3E", "CD8A", "PTPRC", "MS4A1", "MKI67",
              "TOP2A", "CCNB1", "COL1A1", "COL3A1", "FN1", "ACTA2", "VIM", "EPCAM", "CDH1",
              "GAPDH", "ACTB", "PECAM1", "VWF", "LYZ", "CD68"]


def tiny_dataset_class():
    """A small generated dataset plugin (3 sections, 2 patients) for harness tests."""
    import anndata as ad

    from stbench.data import ArrayImage, Dataset, DatasetCard, DatasetConfig, Slide

    class TinyDataset(Dataset):
        """Random H&E-coloured tiles with expression tied to image brightness."""

        card = DatasetCard(name="tiny", version="1", url="(generated)", licence="CC0-1.0",
                           citation="stbench test data", platform="synthetic", n_patients=2,
                           default_split="loso", panel="all")
        Config = DatasetConfig

        def load(self) -> list[Slide]:
            rng = np.random.default_rng(0)
            slides = []
            for i, (name, patient) in enumerate([("T1", "A"), ("T2", "A"), ("T3", "B")]):
                cols, rows = np.meshgrid(np.arange(8), np.arange(6))
                grid = np.stack([cols.ravel(), rows.ravel()], 1)
                spatial = grid * 40.0 + 40.0
                img = np.full((6 * 40 + 80, 8 * 40 + 80, 3), 230, np.uint8)
                level = rng.random(len(grid))
                for (x, y), v in zip(spatial.astype(int), level):
                    img[y - 12 : y + 12, x - 12 : x + 12] = (np.array([120, 60, 160]) * v + 60).astype(np.uint8)
                rate = np.exp(np.outer(level, rng.normal(size=len(TINY_GENES))) + 1.0)
                counts = rng.poisson(rate).astype(np.int64)
                obs = [f"{c}x{r}" for c, r in grid]
                adata = ad.AnnData(counts)
                adata.obs_names = obs
                adata.var_names = TINY_GENES
                adata.obsm["spatial"] = spatial
                adata.obsm["grid"] = grid
                slides.append(Slide(name, patient, adata, ArrayImage(img), microns_per_pixel=3.0))
            return slides

    return TinyDataset
