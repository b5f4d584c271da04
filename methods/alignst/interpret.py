"""Interpretability plots for a fitted :class:`~stbench.methods.alignst.AlignST`.

:func:`explain` writes, for one gene:

* ``<gene>_expression.png``: per slide, spatial maps (spot coordinates) of the measured
  expression (only where the bundle carries it, e.g. a validation bundle or a bundle the user
  built for analysis) and of the prediction, optionally over an H&E thumbnail;
* ``<gene>_attention.png``: for the spots with the highest predicted expression, the H&E
  patch the model saw with its segmented nuclei drawn on it (each nucleus as the ellipse of
  its segmented region: centroid, axes and orientation from the nuclei features), coloured by
  the head-averaged attention the spot gives it; the spatial map of the nuclei gate (how much
  the nuclei summary changed each spot); and the gene-interaction attention of the gene over
  the context genes it is predicted with at test time (``context``: the runner passes the
  fold's evaluated genes, so the panel shows the set actually used), with their weights.
  Panels of stages that are off say so.

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
            thumbnail_scale: float = 1.0, top_spots: int = 4, top_genes: int = 15,
            max_slides: int = 4, images: dict[str, np.ndarray] | None = None,
            patch_um: float = 112.0) -> list[Path]:
    """Write the interpretability PNGs for ``gene``; return their paths.

    Args:
        method: A fitted AlignST.
        bundle: Slides to explain (expression is read only for the "measured" maps, and only
            if present for ``gene``).
        gene: The gene to explain (seen or unseen; it needs a description).
        out_dir: Output folder (created).
        context: Other genes to predict together with ``gene`` (the gene-interaction set);
            default: the genes of the method's last ``predict`` (the set used at test time),
            else the bundle's genes. With ``test_context='seen+unseen'`` the training
            genes are added, as in ``predict``.
        thumbnails: H&E thumbnail(s): one array (used for the first slide) or
            ``{slide name: array}``; spot pixel coordinates are multiplied by
            ``thumbnail_scale`` to land on it.
        top_spots: Spots whose nuclei attention is drawn (at most 4).
        top_genes: Context genes shown in the gene-interaction bar chart.
        max_slides: Slides drawn in the expression maps.
        images: Full-resolution H&E per slide name (``{name: (H, W, 3) array}``): the
            patches under the nuclei; without it the nuclei are drawn on a blank patch.
        patch_um: Side of the patch the nuclei were segmented in (``features.patch_um``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if context is None:  # the genes predicted together at test time, else the bundle's
        context = list(getattr(method, "predicted_genes", None) or []) or list(bundle.genes)
    genes = [gene] + [g for g in context if g != gene]
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

    fig = _attention_figure(method, results[0], gene, thumbnails, thumbnail_scale, top_spots,
                            top_genes, images, patch_um)
    path_attn = out / f"{_safe(gene)}_attention.png"
    fig.savefig(path_attn)
    return [path_expr, path_attn]


def _spot_patch(image: np.ndarray | None, centre: np.ndarray, half: float) -> np.ndarray | None:
    """The ``2 * half`` pixel square of ``image`` centred on ``centre`` (x, y), white where it
    leaves the image; ``None`` without an image."""
    if image is None:
        return None
    size = max(2, int(round(2 * half)))
    out = np.full((size, size, 3), 255, np.uint8)
    x0, y0 = int(round(centre[0] - half)), int(round(centre[1] - half))
    h, w = image.shape[:2]
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(w, x0 + size), min(h, y0 + size)
    if xe > xs and ye > ys:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = np.asarray(image[ys:ye, xs:xe, :3])
    return out


def _nuclei_patches(fig: Any, axes: list, method: AlignST, view: Any, aux: dict,
                    pred: np.ndarray, gene: str, image: np.ndarray | None, patch_um: float,
                    scale: float = 1.0) -> None:
    """One panel per top spot: its patch with the segmented nuclei coloured by attention
    (``image`` is the H&E at ``scale`` times the spot coordinates' resolution)."""
    from matplotlib import cm
    from matplotlib.colors import Normalize
    from matplotlib.patches import Ellipse

    from stbench.features.nuclei import NUCLEUS_FEATURES

    f = {name: i for i, name in enumerate(NUCLEUS_FEATURES)}
    nuc, mask = method._nuclei_arrays(view)
    attn = aux["nuclei_attn"].mean(1)  # (n, M), head average
    top = np.argsort(-pred, kind="stable")[:len(axes)]
    shown = attn[top][mask[top]]
    norm = Normalize(0.0, float(shown.max()) if shown.size else 1.0)
    mpp = float(view.microns_per_pixel or 1.0)
    half = patch_um / mpp / 2.0
    for ax, spot in zip(axes, top):
        patch = _spot_patch(image, np.asarray(view.spatial[spot]) * scale, half * scale)
        if patch is not None:
            ax.imshow(patch, extent=(0, 2 * half, 2 * half, 0))
        real = np.flatnonzero(mask[spot])
        for m in real:
            row = nuc[spot, m]

            def get(name: str, default: float, row=row) -> float:
                i = f[name]  # tables of other layouts: circles of 6 um at the centroid
                return float(row[i]) if i < row.shape[0] and np.isfinite(row[i]) else default

            colour = cm.magma(norm(attn[spot, m]))
            ax.add_patch(Ellipse(
                (half + get("dx_um", 0.0) / mpp, half + get("dy_um", 0.0) / mpp),
                width=max(get("major_axis_um", 6.0) / mpp, 1.0),
                height=max(get("minor_axis_um", 6.0) / mpp, 1.0),
                angle=90.0 - float(np.degrees(get("orientation", 0.0))),
                facecolor=(*colour[:3], 0.55), edgecolor=colour, linewidth=1.2))
        ax.set_xlim(0, 2 * half)
        ax.set_ylim(2 * half, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        noun = "nucleus" if len(real) == 1 else "nuclei"
        ax.set_title(f"spot {spot}: {len(real)} {noun}\npredicted {gene} {pred[spot]:.2f}",
                     fontsize=8)
    sm = cm.ScalarMappable(norm=norm, cmap="magma")
    fig.colorbar(sm, ax=list(axes), fraction=0.02, pad=0.01, label="nucleus attention")


def _interaction_panel(ax: Any, aux: dict, ctx_genes: list[str], gene: str,
                       top_genes: int) -> None:
    """The attention of ``gene`` over the context genes it is predicted with."""
    if "interaction_attn" not in aux:
        _off(ax, "gene interaction off (method.gene_interaction=false)")
        return
    if len(ctx_genes) < 2:
        _off(ax, f"{gene} predicted alone: no context genes to attend to")
        return
    row = aux["interaction_attn"].mean(0)[0]  # attention of `gene` over the gene set
    order = [i for i in np.argsort(-row, kind="stable") if i != 0][:top_genes]
    labels = [ctx_genes[i] for i in order][::-1]
    ax.barh(labels, row[order][::-1], color="#4c72b0")
    ax.set_xlabel("attention weight (head average)")
    ax.set_title(f"gene interaction at test time: {gene} over its {len(ctx_genes) - 1} context "
                 f"genes (top {len(order)}; self {row[0]:.3f})", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)


def _attention_figure(method: AlignST, result: tuple, gene: str, thumbnails: dict,
                      thumbnail_scale: float, top_spots: int, top_genes: int,
                      images: dict[str, np.ndarray] | None, patch_um: float) -> Any:
    """Nuclei of the top spots on their patches, the nuclei gate map and the gene-interaction
    panel, for the first slide's ``result`` ``(view, pred, aux, context genes)``."""
    view, pred, aux, ctx_genes = result
    n_show = max(1, min(top_spots, 4))
    fig = _figure(3.4 * n_show + 0.6, 7.6)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(2, 2 * n_show + 1, height_ratios=[1.0, 1.05])
    patch_axes = [fig.add_subplot(grid[0, 2 * k:2 * k + 2]) for k in range(n_show)]
    ax_gate = fig.add_subplot(grid[1, :n_show])
    ax_gene = fig.add_subplot(grid[1, n_show:])
    if "nuclei_attn" in aux:
        image, scale = (images or {}).get(view.name), 1.0
        if image is None and view.name in thumbnails:  # the thumbnail, at its resolution
            image, scale = thumbnails[view.name], thumbnail_scale
        _nuclei_patches(fig, patch_axes, method, view, aux, pred, gene, image, patch_um, scale)
        gate = aux["nuclei_gate"].mean(1)
        _spatial(ax_gate, fig, view.spatial, gate, "nuclei gate (mean over channels)", None, 1.0)
    else:
        for ax in patch_axes:
            _off(ax, "")
        _off(patch_axes[0], "nuclei stage off / no nuclei features")
        _off(ax_gate, "nuclei stage off / no nuclei features")
    _interaction_panel(ax_gene, aux, ctx_genes, gene, top_genes)
    return fig
