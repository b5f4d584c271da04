"""Nuclei segmentation: generated patches with known nuclei, and a real her2st patch."""

from __future__ import annotations

import numpy as np
import pytest

from stbench.features.nuclei import (
    NUCLEUS_FEATURES,
    SPOT_FEATURES,
    nuclei_features,
    segment_patch,
    write_overlay,
)

PINK = (236, 178, 212)
PURPLE = (78, 42, 128)


def make_patch(ellipses, size=160, seed=0):
    """A pink patch with dark purple ellipses (row, col, r_radius, c_radius, angle);
    returns the patch and each ellipse's true pixel area."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float64)
    img[:] = PINK
    areas = []
    for r, c, rr_, cr_, ang in ellipses:
        rr, cc = ellipse(r, c, rr_, cr_, shape=(size, size), rotation=ang)
        img[rr, cc] = PURPLE
        areas.append(len(rr))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.asarray(areas, float)


ELLIPSES = [  # row, col, semi-axes (px), rotation
    (25, 25, 7, 5, 0.3), (25, 80, 9, 6, 1.0), (30, 130, 6, 6, 0.0),
    (75, 40, 8, 4, -0.6), (80, 95, 10, 7, 0.2), (125, 30, 6, 5, 1.4),
    (120, 85, 7, 7, 0.0), (130, 135, 9, 5, -1.1),
]


def test_known_nuclei_are_recovered():
    mpp = 0.5
    patch, true_px = make_patch(ELLIPSES)
    labels, table = segment_patch(patch, mpp)
    assert table.shape[1] == len(NUCLEUS_FEATURES)
    assert abs(len(table) - len(ELLIPSES)) <= 1
    assert len(table) == len(ELLIPSES)
    assert labels.max() == len(table)
    # match by centroid, then compare areas
    f = {n: i for i, n in enumerate(NUCLEUS_FEATURES)}
    c = (160 - 1) / 2
    for (r, col, *_), area_px in zip(ELLIPSES, true_px):
        dx, dy = (col - c) * mpp, (r - c) * mpp
        d = np.hypot(table[:, f["dx_um"]] - dx, table[:, f["dy_um"]] - dy)
        j = int(np.argmin(d))
        assert d[j] < 1.0
        assert table[j, f["area_um2"]] == pytest.approx(area_px * mpp**2, rel=0.15)
    # rows ordered by decreasing area; plausible shape statistics
    assert np.all(np.diff(table[:, f["area_um2"]]) <= 0)
    assert np.all((table[:, f["solidity"]] > 0.85) & (table[:, f["eccentricity"]] < 0.95))
    assert np.all(table[:, f["minor_axis_um"]] <= table[:, f["major_axis_um"]])
    assert np.all(table[:, f["mean_hematoxylin"]] > 0.05)


def test_padding_mask_summary_and_empty_patch():
    patch, _ = make_patch(ELLIPSES)
    blank = np.full((160, 160, 3), PINK, np.uint8)
    feats, mask, summary = nuclei_features(np.stack([patch, blank]), 0.5, max_nuclei=5)
    assert feats.shape == (2, 5, len(NUCLEUS_FEATURES)) and feats.dtype == np.float32
    assert mask.shape == (2, 5) and mask.dtype == bool
    assert mask[0].all() and not mask[1].any() and not feats[1].any()
    s = {n: i for i, n in enumerate(SPOT_FEATURES)}
    assert summary[0, s["count"]] == len(ELLIPSES)  # summary covers all nuclei, not the kept 5
    assert summary[0, s["density_per_mm2"]] == pytest.approx(len(ELLIPSES) / (80e-3 * 80e-3))
    assert summary[1].tolist() == [0.0] * len(SPOT_FEATURES)
    _, table = segment_patch(patch, 0.5)
    np.testing.assert_array_equal(feats[0], table[:5])  # the largest five


@pytest.mark.real_data
def test_real_her2st_patch(shared_dir, tmp_path):
    import pandas as pd
    from PIL import Image

    root = shared_dir / "data" / "her2st"
    jpgs = sorted((root / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    assert jpgs, "the her2st C2 image is missing from the shared data"
    spots = pd.read_csv(root / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    spot = spots[spots["selected"] == 1].iloc[0]
    x0, y0 = int(round(spot["pixel_x"])) - 81, int(round(spot["pixel_y"])) - 81
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(jpgs[0]) as im:
            patch = np.asarray(im.crop((x0, y0, x0 + 162, y0 + 162)).convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    labels, table = segment_patch(patch, 0.69)
    assert 5 <= len(table) <= 300
    areas = table[:, NUCLEUS_FEATURES.index("area_um2")]
    assert 10 < np.median(areas) < 200  # nuclei, not tissue blobs
    out = write_overlay(patch, labels, tmp_path / "overlay.png")
    with Image.open(out) as im:
        assert im.size == (162, 162) and im.format == "PNG"
        assert (np.asarray(im) != patch).any()


@pytest.mark.parametrize("separation", [12, 16])
def test_touching_nuclei_are_split(separation):
    """Two touching round nuclei (radius 8 px) are two objects of about the right size."""
    c = 80
    patch, true_px = make_patch([(c, c - separation // 2, 8, 8, 0.0),
                                 (c, c + separation - separation // 2, 8, 8, 0.0)])
    _, table = segment_patch(patch, 0.5)
    assert len(table) == 2
    area = table[:, NUCLEUS_FEATURES.index("area_um2")]
    np.testing.assert_allclose(area.sum(), true_px.sum() * 0.25, rtol=0.15)
