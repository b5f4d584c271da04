"""Interpretability plots for a fitted :class:`~stbench.methods.alignst.AlignST`.

:func:`explain` writes, for one gene:

* ``<gene>_expression.png``: per slide, spatial maps (spot coordinates) of the measured
  expression (only where the bundle carries it, e.g. a validation bundle or a bundle the user
  built for analysis) and of the prediction, optionally over an H&E thumbnail;
* ``<gene>_attention.png``: the nuclei attention of the spots with the highest predicted
  expression (head-averaged weight per nucleus slot), the spatial map of the nuclei gate
  (how much the nuclei summary changed each spot), and the gene-interaction attention of the
  gene over its context genes. Panels of stages that are off say so.

Figures are drawn with matplotlib's object API on the Agg canvas (no global backend change).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stbench.method import Bundle

    from .method import AlignST


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "gene"


def _spatial(ax, fig, xy: np.ndarray, values: np.ndarray, title: str,
             thumbnail: np.ndarray | None, scale: float) -> None:
    pts = np.asarray(xy, np.float64) * (scale if thumbnail is not None else 1.0)
    if thumbnail is not None:
        ax.imshow(thumbnail)
    size = max(4.0, 3000.0 / max(1, len(values)))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=values, s=size, cmap="viridis",
                    alpha=0.85 if thumbnail is not None else 1.0, linewidths=0)
    if thumbnail is None:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)


def _off(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, transform=ax.transAxes)


def explain(method: AlignST, bundle: Bundle, gene: str, out_dir: str | Path, *,
            context: list[str] | None = None,
            thumbnails: dict[str, np.ndarray] | np.ndarray | None = None,
            thumbnail_scale: float = 1.0, top_spots: int = 8, top_genes: int = 15,
            max_slides: int = 4) -> list[Path]:
    """Write the interpretability PNGs for ``gene``; return their paths.

    Args:
        method: A fitted AlignST.
        bundle: Slides to explain (expression is read only for the "measured" maps, and only
            if present for ``gene``).
        gene: The gene to explain (seen or unseen; it needs a description).
        out_dir: Output folder (created).
        context: Other genes to predict together with ``gene`` (the gene-interaction set);
            default: the bundle's genes. With ``test_context='seen+unseen'`` the training
            genes are added, as in ``predict``.
        thumbnails: H&E thumbnail(s): one array (used for the first slide) or
            ``{slide name: array}``; spot pixel coordinates are multiplied by
            ``thumbnail_scale`` to land on it.
        top_spots: Spots shown in the nuclei-attention heatmap.
        top_genes: Context genes shown in the gene-interaction bar chart.
        max_slides: Slides drawn in the expression maps.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    genes = [gene] + [g for g in (context if context is not None else bundle.genes) if g != gene]
    slides = bundle.slides[:max_slides]
    if not slides:
        raise ValueError("explain needs a bundle with at least one slide")
    if isinstance(thumbnails, np.ndarray):
        thumbnails = {slides[0].name: thumbnails}
    thumbnails = thumbnails or {}

    results: list[tuple[Any, np.ndarray, dict, list[str]]] = []
    for view in slides:
        pred, aux, ctx_genes = method.forward_slide(view, genes)
        results.append((view, pred[:, 0], aux, ctx_genes))

    has_measured = gene in bundle.genes
    ncol = 2 if has_measured else 1
    fig = _figure(4.2 * ncol, 3.6 * len(slides))
    axes = np.atleast_2d(fig.subplots(len(slides), ncol, squeeze=False))
    for row, (view, pred, _, _) in enumerate(results):
        thumb = thumbnails.get(view.name)
        col = 0
        if has_measured:
            if view.expression is not None:
                measured = np.asarray(view.expression)[:, bundle.genes.index(gene)]
                _spatial(axes[row, 0], fig, view.spatial, measured, f"{view.name}: measured {gene}",
                         thumb, thumbnail_scale)
            else:
                _off(axes[row, 0], "expression not available")
            col = 1
        _spatial(axes[row, col], fig, view.spatial, pred, f"{view.name}: predicted {gene}",
                 thumb, thumbnail_scale)
    fig.tight_layout()
    path_expr = out / f"{_safe(gene)}_expression.png"
    fig.savefig(path_expr)

    view, pred, aux, ctx_genes = results[0]
    fig = _figure(14, 4.2)
    ax_nuc, ax_gate, ax_gene = fig.subplots(1, 3)
    if "nuclei_attn" in aux:
        attn = aux["nuclei_attn"].mean(1)  # (n, M), head average
        mask = np.asarray(method._nuclei_arrays(view)[1], bool)
        top = np.argsort(-pred, kind="stable")[:top_spots]
        shown = np.where(mask[top], attn[top], np.nan)
        used = max(1, int(mask[top].sum(1).max(initial=1)))
        im = ax_nuc.imshow(shown[:, :used], aspect="auto", cmap="magma", interpolation="nearest")
        ax_nuc.set_yticks(range(len(top)))
        ax_nuc.set_yticklabels([f"spot {i}" for i in top], fontsize=7)
        ax_nuc.set_xlabel("nucleus slot")
        ax_nuc.set_title(f"nuclei attention, top-{len(top)} spots for {gene}", fontsize=9)
        fig.colorbar(im, ax=ax_nuc, fraction=0.046, pad=0.02)
        gate = aux["nuclei_gate"].mean(1)
        _spatial(ax_gate, fig, view.spatial, gate, "nuclei gate (mean over channels)", None, 1.0)
    else:
        _off(ax_nuc, "nuclei stage off / no nuclei features")
        _off(ax_gate, "nuclei stage off / no nuclei features")
    if "interaction_attn" in aux and len(ctx_genes) > 1:
        row = aux["interaction_attn"].mean(0)[0]  # attention of `gene` over the gene set
        order = [i for i in np.argsort(-row, kind="stable") if i != 0][:top_genes]
        ax_gene.barh([ctx_genes[i] for i in order][::-1], row[order][::-1], color="#4c72b0")
        ax_gene.set_xlabel("attention weight (head average)")
        ax_gene.set_title(f"gene interaction: {gene} attends to", fontsize=9)
        ax_gene.tick_params(axis="y", labelsize=7)
    else:
        _off(ax_gene, "gene interaction off or single-gene context")
    fig.tight_layout()
    path_attn = out / f"{_safe(gene)}_attention.png"
    fig.savefig(path_attn)
    return [path_expr, path_attn]
