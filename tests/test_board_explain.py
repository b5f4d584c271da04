"""ALIGN-ST's explain figures, as the runner produces them (a single-gene bundle after
``predict`` on the fold's evaluated genes): the segmented nuclei of the top spots drawn on
their H&E patch, coloured by attention, and the gene-interaction panel over the context genes
actually used at test time, with their weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stbench.features.nuclei import NUCLEUS_FEATURES
from stbench.method import Bundle
from test_alignst import _cfg, _fit, rich_problem, split


def _with_real_nuclei(prob: dict, seed: int = 0) -> dict:
    """Nuclei tables in the pipeline's layout (centroid, axes, orientation in microns)."""
    rng = np.random.default_rng(seed)
    f = {name: i for i, name in enumerate(NUCLEUS_FEATURES)}
    slides = []
    for v in prob["slides"]:
        mask = v.features["nuclei_mask"]
        table = rng.normal(size=(*mask.shape, len(NUCLEUS_FEATURES))).astype(np.float32)
        table[..., f["dx_um"]] = rng.uniform(-40, 40, mask.shape)
        table[..., f["dy_um"]] = rng.uniform(-40, 40, mask.shape)
        table[..., f["major_axis_um"]] = rng.uniform(7, 12, mask.shape)
        table[..., f["minor_axis_um"]] = rng.uniform(4, 7, mask.shape)
        table[..., f["orientation"]] = rng.uniform(-1.5, 1.5, mask.shape)
        table *= mask[..., None]
        slides.append(dataclasses.replace(v, features={**v.features, "nuclei": table},
                                          spatial=np.asarray(v.spatial) * 0 + 200.0
                                          + np.asarray(v.grid, np.float64) * 120.0))
    return {**prob, "slides": slides}


@pytest.fixture(scope="module")
def fitted():
    prob = _with_real_nuclei(rich_problem(11, n_spots=24, n_genes=16))
    method, test, unseen = _fit(_cfg(), prob)
    method.predict(test, unseen)  # the runner predicts the fold's evaluated genes first
    return method, test, unseen


def _png_ok(path) -> None:
    from matplotlib.image import imread

    px = imread(path)
    assert path.stat().st_size > 10_000 and float(px[..., :3].std()) > 0.05


def test_nuclei_drawn_on_the_patch_coloured_by_attention(fitted, tmp_path):
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    from stbench.methods.alignst.interpret import _nuclei_patches

    method, test, unseen = fitted
    view = test.slides[0]
    pred, aux, _ = method.forward_slide(view, unseen)
    image = np.random.default_rng(0).integers(0, 255, (4000, 4000, 3), dtype=np.uint8)
    fig = Figure()
    axes = [fig.add_subplot(1, 4, k + 1) for k in range(4)]
    _nuclei_patches(fig, axes, method, view, aux, pred[:, 0], unseen[0], image, 112.0)
    mask = view.features["nuclei_mask"]
    top = np.argsort(-pred[:, 0], kind="stable")[:4]
    for ax, spot in zip(axes, top):
        ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
        assert len(ellipses) == int(mask[spot].sum())  # every segmented nucleus of the spot
        assert len(ax.images) == 1  # on its H&E patch
    colours = {p.get_edgecolor() for ax in axes for p in ax.patches}
    assert len(colours) > 1  # coloured by attention, not one colour
    paths = method.explain(Bundle([dataclasses.replace(v, expression=None)
                                   for v in test.slides], [unseen[0]]), unseen[0], tmp_path,
                           images={view.name: image})
    for p in paths:
        _png_ok(p)


def test_interaction_panel_shows_the_test_time_context(fitted):
    from matplotlib.figure import Figure

    from stbench.methods.alignst.interpret import _interaction_panel

    method, test, unseen = fitted
    assert method.predicted_genes == list(dict.fromkeys(unseen))
    gene = unseen[0]
    context = [gene] + [g for g in method.predicted_genes if g != gene]
    _, aux, ctx_genes = method.forward_slide(test.slides[0], context)
    assert "interaction_attn" in aux and ctx_genes[: len(context)] == context
    ax = Figure().add_subplot(1, 1, 1)
    _interaction_panel(ax, aux, ctx_genes, gene, top_genes=15)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == min(15, len(ctx_genes) - 1) and set(labels) <= set(ctx_genes[1:])
    widths = [p.get_width() for p in ax.patches]
    assert all(w > 0 for w in widths) and sum(widths) <= 1.0 + 1e-6
    assert "over its" in ax.get_title()
