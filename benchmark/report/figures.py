"""The board's figures: per-method bars with confidence intervals, and predicted vs measured
spatial maps of the reference row's best and worst unseen genes.

Each function returns a base64 PNG (embedded in the static HTML page) or ``None`` when the board
holds nothing to draw.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stbench.report.board import Board, Row

__all__ = ["GeneMap", "plot_bars", "plot_maps", "reference_maps"]

#: Bar and box colours per method kind (the board page uses the same).
KIND_COLOURS = {"zero_shot": "#4477aa", "control": "#999933", "supervised": "#aa7744"}


def png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_bars(board: Board) -> str | None:
    """One bar per row: mean per-gene PCC with its 95 % bootstrap CI over genes."""
    from matplotlib.figure import Figure

    rows = [r for r in board.rows if r.gene_pcc()]
    if not rows:
        return None
    means = [float(np.mean(list(r.gene_pcc().values()))) for r in rows]
    lo = [m - (r.ci_gene[0] if r.ci_gene else m) for m, r in zip(means, rows)]
    hi = [(r.ci_gene[1] if r.ci_gene else m) - m for m, r in zip(means, rows)]
    fig = Figure(figsize=(7.5, 0.38 * len(rows) + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, means, xerr=[lo, hi], capsize=3,
            color=[KIND_COLOURS.get(r.kind, "#777777") for r in rows],
            edgecolor=["k" if r.is_reference else "none" for r in rows])
    ax.set_yticks(y, [r.label for r in rows], fontsize=8)
    ax.axvline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("mean per-gene PCC (95 % bootstrap CI over genes)")
    ax.set_title(f"{board.dataset}: methods (colour: kind; outlined: reference)", fontsize=10)
    return png(fig)


@dataclass
class GeneMap:
    """Measured and predicted values of one gene at the spots of one section."""

    gene: str
    section: str
    seed: int
    fold: int
    pcc_row: float
    x: np.ndarray
    y: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray


def _maps_of(row: Row) -> list[GeneMap]:
    """Every map recorded by the row's runs (see :mod:`stbench.run.maps`)."""
    from stbench.run.maps import decode

    overall = row.gene_pcc()
    out = []
    for run in row.runs:
        for f in run.data.get("folds") or []:
            maps = f.get("maps") or {}
            for gene, m in (maps.get("genes") or {}).items():
                if gene not in overall:
                    continue
                out.append(GeneMap(gene, str(maps["section"]), run.seed, int(f["fold"]),
                                   overall[gene], decode(maps["x"], "f4"), decode(maps["y"], "f4"),
                                   decode(m["measured"], "f2"), decode(m["predicted"], "f2")))
    return out


def reference_maps(board: Board) -> tuple[GeneMap, GeneMap] | None:
    """The best and the worst unseen gene of the reference row (by its per-gene PCC averaged
    over folds × seeds) among the genes whose maps its runs recorded."""
    ref = board.reference
    maps = _maps_of(ref) if ref is not None else []
    if not maps:
        return None
    best = max(maps, key=lambda m: (m.pcc_row, -m.seed))
    worst = min(maps, key=lambda m: (m.pcc_row, m.seed))
    return best, worst


def _marker_size(fig: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Scatter marker area (points²) that makes neighbouring spots about touch in a panel of
    a 2 x 2 grid with equal aspect."""
    from scipy.spatial import cKDTree

    if len(x) < 2:
        return 40.0
    xy = np.column_stack([x, y])
    dist, _ = cKDTree(xy).query(xy, k=2)
    spacing = float(np.median(dist[:, 1]))
    span_x, span_y = max(np.ptp(x), spacing), max(np.ptp(y), spacing)
    axis_w, axis_h = fig.get_figwidth() * 72 * 0.34, fig.get_figheight() * 72 * 0.34
    per_unit = min(axis_w / span_x, axis_h / span_y)
    return float(np.clip((0.9 * spacing * per_unit) ** 2, 2.0, 400.0))


def _panel(fig: Any, pos: int, m: GeneMap, values: np.ndarray, title: str) -> None:
    ax = fig.add_subplot(2, 2, pos)
    size = _marker_size(fig, m.x, m.y)
    sc = ax.scatter(m.x, m.y, c=values, s=size, cmap="viridis", marker="h", linewidths=0)
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(sc, ax=ax, shrink=0.75)


def plot_maps(board: Board) -> str | None:
    """Measured vs predicted maps of the reference row's best and worst recorded gene."""
    from matplotlib.figure import Figure

    pair = reference_maps(board)
    if pair is None:
        return None
    fig = Figure(figsize=(8.0, 7.2))
    for i, (m, what) in enumerate(zip(pair, ("best", "worst"))):
        r = _slide_r(m)
        _panel(fig, 2 * i + 1, m, m.measured, f"{m.gene} measured ({what} gene)\n"
                                              f"section {m.section}, seed {m.seed}")
        _panel(fig, 2 * i + 2, m, m.predicted, f"{m.gene} predicted by {board.reference.label}\n"
                                               f"PCC here {r}, row mean {m.pcc_row:.3f}")
    fig.tight_layout()
    return png(fig)


def _slide_r(m: GeneMap) -> str:
    """The PCC of the drawn map itself (as text; "n/a" for a constant map)."""
    if np.std(m.measured) == 0 or np.std(m.predicted) == 0:
        return "n/a"
    r = float(np.corrcoef(m.measured, m.predicted)[0, 1])
    return "n/a" if not math.isfinite(r) else f"{r:.3f}"
