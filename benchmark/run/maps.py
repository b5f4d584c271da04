"""Compact per-spot prediction maps kept in a result, for the board's spatial figures.

Each fold records, for one test section (the one with most spots), the measured and predicted
expression of its best and worst evaluated genes (by the fold's per-gene PCC) at every spot,
with the spots' pixel coordinates. Arrays are stored as URL-safe base64 (no ``/``, so never
mistaken for a path) of little-endian ``float32`` (coordinates) and ``float16`` (values:
plotting precision, about 3 significant digits), so a map of 600 spots costs about 3 kB.
When the run is assembled, :func:`keep_extremes` keeps only the maps of the run's overall best
and worst gene (per-gene PCC averaged over folds), so a result carries at most two maps
whatever its number of folds.

Layout of ``folds[i]["maps"]``::

    {"section": "C5", "n_spots": 612, "x": B64_F32, "y": B64_F32,
     "genes": {"ERBB2": {"pcc": 0.61, "measured": B64_F16, "predicted": B64_F16}, ...}}
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["decode", "encode", "fold_maps", "keep_extremes"]


def encode(values: Any, dtype: str) -> str:
    """A 1-D array as URL-safe base64 (no ``/``: never mistaken for a path) of little-endian
    ``dtype``."""
    raw = np.asarray(values, dtype=f"<{dtype}").ravel().tobytes()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode(text: str, dtype: str) -> np.ndarray:
    """The inverse of :func:`encode` (as float64); plain base64 is read too."""
    raw = base64.b64decode(text.replace("-", "+").replace("_", "/"))
    return np.frombuffer(raw, dtype=f"<{dtype}").astype(np.float64)


def fold_maps(sections: Sequence[str], spatial: np.ndarray, y_true: np.ndarray,
              y_pred: np.ndarray, genes: Sequence[str], gene_pcc: Sequence[float],
              n_each: int = 1) -> dict | None:
    """The maps of one fold: best and worst ``n_each`` genes on the largest test section.

    Args:
        sections: Per-spot test section name (length ``n_spots``).
        spatial: (n_spots, 2) pixel coordinates (x, y).
        y_true / y_pred: (n_spots, n_genes) measured and predicted expression.
        genes: The evaluated genes (columns).
        gene_pcc: The fold's per-gene PCC (NaN for constant genes).
        n_each: Genes kept at each end.

    Returns:
        The ``maps`` record, or ``None`` without a finite per-gene PCC.
    """
    pcc = np.asarray(gene_pcc, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(pcc))
    if finite.size == 0:
        return None
    order = finite[np.argsort(-pcc[finite], kind="stable")]
    chosen = list(dict.fromkeys([*order[:n_each], *order[::-1][:n_each]]))
    names, counts = np.unique(np.asarray(sections), return_counts=True)
    section = str(names[int(np.argmax(counts))])
    rows = np.asarray(sections) == section
    xy = np.asarray(spatial, dtype=np.float64)[rows]
    return {"section": section, "n_spots": int(rows.sum()),
            "x": encode(xy[:, 0], "f4"), "y": encode(xy[:, 1], "f4"),
            "genes": {str(genes[j]): {"pcc": float(pcc[j]),
                                      "measured": encode(np.asarray(y_true)[rows, j], "f2"),
                                      "predicted": encode(np.asarray(y_pred)[rows, j], "f2")}
                      for j in chosen}}


def keep_extremes(folds: list[dict]) -> None:
    """Keep only the maps of the run's best and worst gene (per-gene PCC averaged over the
    folds evaluating it) among the genes some fold recorded; drop the other maps in place."""
    acc: dict[str, list[float]] = {}
    for f in folds:
        pg = f.get("per_gene") or {}
        for g, v in zip(pg.get("gene", []), pg.get("pcc", [])):
            if v is not None and math.isfinite(v):
                acc.setdefault(str(g), []).append(float(v))
    mean = {g: float(np.mean(v)) for g, v in acc.items()}
    recorded = [(i, g) for i, f in enumerate(folds) for g in ((f.get("maps") or {}).get("genes")
                                                               or {}) if g in mean]
    keep: set[tuple[int, str]] = set()
    if recorded:
        keep.add(max(recorded, key=lambda ig: mean[ig[1]]))
        keep.add(min(recorded, key=lambda ig: mean[ig[1]]))
    for i, f in enumerate(folds):
        maps = f.get("maps")
        if not maps:
            continue
        genes = {g: v for g, v in maps["genes"].items() if (i, g) in keep}
        if genes:
            f["maps"] = {**maps, "genes": genes}
        else:
            f["maps"] = None
