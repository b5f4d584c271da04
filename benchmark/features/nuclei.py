"""Nuclei per spot patch, segmented with scikit-image (no weights, deterministic).

Pipeline per patch (:func:`segment_patch`):

1. haematoxylin (H) and eosin (E) channels by colour deconvolution (``rgb2hed``, Ruifrok &
   Johnston stain vectors);
2. Gaussian smoothing of H (``sigma_um``);
3. Otsu threshold of the smoothed H, never below ``min_threshold`` (so a patch without nuclei
   gives no nuclei instead of half its pixels), holes filled;
4. distance-transform watershed: markers are the distance maxima at least ``min_distance_um``
   apart whose height exceeds ``h_um`` (h-maxima, against over-splitting elongated nuclei);
5. size filter: nuclei between ``min_area_um2`` and ``max_area_um2`` are kept.

Per nucleus the features are, in this fixed order (:data:`NUCLEUS_FEATURES`), with lengths in
microns, areas in square microns:

* ``dx_um``, ``dy_um``: centroid relative to the patch centre (x right, y down);
* ``area_um2``, ``perimeter_um``, ``eccentricity``, ``solidity``, ``major_axis_um``,
  ``minor_axis_um``, ``orientation`` (radians, scikit-image's convention: angle between the
  row axis and the major axis, in [-pi/2, pi/2]);
* ``mean_hematoxylin``, ``mean_eosin``: mean unsmoothed H and E optical density inside the
  nucleus (``rgb2hed`` units).

Per spot (:data:`SPOT_FEATURES`): count, density per mm^2 of patch, nuclear area fraction,
mean/std of nucleus area, mean eccentricity and solidity, mean H and E inside nuclei, mean
nearest-neighbour centroid distance. Statistics of an empty patch are 0 (not NaN).

:func:`nuclei_features` pads the per-nucleus table to ``(spots, max_nuclei, features)`` float32
with a boolean mask; when a patch has more than ``max_nuclei`` nuclei the largest are kept.
Rows are ordered by decreasing area.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Per-nucleus feature order of :func:`segment_patch` tables and :func:`nuclei_features`.
NUCLEUS_FEATURES: tuple[str, ...] = (
    "dx_um",
    "dy_um",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "major_axis_um",
    "minor_axis_um",
    "orientation",
    "mean_hematoxylin",
    "mean_eosin",
)

#: Per-spot summary order of :func:`nuclei_features`' third output.
SPOT_FEATURES: tuple[str, ...] = (
    "count",
    "density_per_mm2",
    "area_fraction",
    "area_mean_um2",
    "area_std_um2",
    "eccentricity_mean",
    "solidity_mean",
    "hematoxylin_mean",
    "eosin_mean",
    "nn_distance_mean_um",
)

NUCLEI_CODE_VERSION = "1"

_F = {name: i for i, name in enumerate(NUCLEUS_FEATURES)}


def stain_channels(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin optical densities of an (H, W, 3) uint8 RGB patch."""
    from skimage.color import rgb2hed

    hed = rgb2hed(np.asarray(patch)[..., :3])
    return hed[..., 0].astype(np.float32), hed[..., 1].astype(np.float32)


def segment_patch(
    patch: np.ndarray,
    microns_per_pixel: float,
    *,
    sigma_um: float = 0.7,
    min_threshold: float = 0.04,
    min_distance_um: float = 3.0,
    h_um: float = 0.7,
    min_area_um2: float = 8.0,
    max_area_um2: float = 400.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment the nuclei of one RGB patch.

    Args:
        patch: (H, W, 3) uint8 RGB.
        microns_per_pixel: Physical pixel size of ``patch``.
        sigma_um: Gaussian smoothing of the haematoxylin channel.
        min_threshold: Lowest haematoxylin threshold (Otsu's value is used when higher).
        min_distance_um: Least distance between two watershed markers.
        h_um: Least height of a distance maximum over its surroundings to seed a nucleus.
        min_area_um2, max_area_um2: Size filter.

    Returns:
        ``labels`` (H, W) int32 (0 background, 1..n nuclei, ordered by decreasing area) and
        ``table`` (n, len(NUCLEUS_FEATURES)) float32.
    """
    patch = np.asarray(patch)
    if patch.ndim != 3 or patch.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB patch, got {patch.shape}")
    mpp = float(microns_per_pixel)
    if not mpp > 0:
        raise ValueError("microns_per_pixel must be positive")
    h_chan, e_chan = stain_channels(patch)
    fg = _foreground(h_chan, mpp, sigma_um, min_threshold)
    empty = (np.zeros(patch.shape[:2], np.int32), np.zeros((0, len(NUCLEUS_FEATURES)), np.float32))
    if not fg.any():
        return empty
    labels = _split_nuclei(fg, mpp, min_distance_um, h_um)
    result = _nucleus_table(labels, h_chan, e_chan, mpp, min_area_um2, max_area_um2)
    return empty if result is None else result


def _foreground(h_chan: np.ndarray, mpp: float, sigma_um: float,
                min_threshold: float) -> np.ndarray:
    """Nucleus foreground: smoothed haematoxylin above Otsu's threshold, holes filled.

    Args:
        h_chan: (H, W) haematoxylin optical density.
        mpp: Microns per pixel.
        sigma_um: Gaussian smoothing of ``h_chan``.
        min_threshold: Lowest threshold (Otsu's value is used when higher).

    Returns:
        (H, W) bool mask.
    """
    from scipy import ndimage as ndi
    from skimage.filters import gaussian, threshold_otsu

    smooth = gaussian(h_chan, sigma=max(sigma_um / mpp, 0.3), preserve_range=True)
    try:
        thr = float(threshold_otsu(smooth))
    except ValueError:  # constant image
        thr = float("inf")
    thr = max(thr, min_threshold)
    return ndi.binary_fill_holes(smooth > thr)


def _split_nuclei(fg: np.ndarray, mpp: float, min_distance_um: float,
                  h_um: float) -> np.ndarray:
    """Distance-transform watershed of a non-empty foreground into labelled objects.

    Args:
        fg: (H, W) bool foreground.
        mpp: Microns per pixel.
        min_distance_um: Least distance between two watershed markers.
        h_um: Least height of a distance maximum to seed an object.

    Returns:
        (H, W) integer labels (0 background); marker-less components are objects too.
    """
    from scipy import ndimage as ndi
    from skimage.filters import gaussian
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(fg)
    dist = gaussian(dist, sigma=1.0, preserve_range=True)  # flatten ridge noise of jagged edges
    peaks = h_maxima(dist, max(h_um / mpp, 0.5))
    markers = label(peaks)
    markers = _thin_markers(markers, dist, max(min_distance_um / mpp, 1.0))
    labels = watershed(-dist, markers, mask=fg)
    # a component without a marker (tiny blobs) still counts as one object
    orphans = label(fg & (labels == 0))
    if orphans.max():
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return labels


def _nucleus_table(labels: np.ndarray, h_chan: np.ndarray, e_chan: np.ndarray, mpp: float,
                   min_area_um2: float, max_area_um2: float,
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Size-filter the labelled objects, relabel them by decreasing area, and measure them.

    Args:
        labels: (H, W) integer labels of candidate objects.
        h_chan, e_chan: (H, W) haematoxylin and eosin optical densities.
        mpp: Microns per pixel.
        min_area_um2, max_area_um2: Size filter.

    Returns:
        ``labels`` (H, W) int32 and ``table`` (n, len(NUCLEUS_FEATURES)) float32 as in
        :func:`segment_patch`, or None when no object passes the size filter.
    """
    from skimage.measure import regionprops

    min_px, max_px = min_area_um2 / mpp**2, max_area_um2 / mpp**2
    regions = [r for r in regionprops(labels, intensity_image=np.stack([h_chan, e_chan], -1))
               if min_px <= r.area <= max_px]
    if not regions:
        return None
    regions.sort(key=lambda r: (-r.area, r.centroid))
    out = np.zeros(labels.shape, np.int32)
    cy, cx = (labels.shape[0] - 1) / 2.0, (labels.shape[1] - 1) / 2.0
    table = np.zeros((len(regions), len(NUCLEUS_FEATURES)), np.float32)
    for i, r in enumerate(regions):
        out[tuple(r.coords.T)] = i + 1
        row, col = r.centroid
        mean_h, mean_e = r.intensity_mean
        table[i] = (
            (col - cx) * mpp,
            (row - cy) * mpp,
            r.area * mpp**2,
            r.perimeter * mpp,
            r.eccentricity,
            r.solidity,
            r.axis_major_length * mpp,
            r.axis_minor_length * mpp,
            r.orientation,
            mean_h,
            mean_e,
        )
    return out, table


def _thin_markers(markers: np.ndarray, dist: np.ndarray, min_distance_px: float) -> np.ndarray:
    """Merge markers closer than ``min_distance_px`` (keeping the higher one)."""
    from scipy import ndimage as ndi

    n = int(markers.max())
    if n <= 1:
        return markers
    idx = np.arange(1, n + 1)
    centres = np.asarray(ndi.center_of_mass(np.ones_like(dist), markers, idx))
    heights = np.asarray(ndi.maximum(dist, markers, idx))
    keep = np.ones(n, bool)
    for i in np.argsort(-heights):
        if not keep[i]:
            continue
        d = np.hypot(*(centres - centres[i]).T)
        close = (d < min_distance_px) & keep
        close[i] = False
        keep[close] = False
    remap = np.zeros(n + 1, np.int32)
    remap[idx[keep]] = np.arange(1, keep.sum() + 1)
    return remap[markers]


def summarise(table: np.ndarray, patch_shape: Sequence[int], microns_per_pixel: float) -> np.ndarray:
    """Per-spot summary (:data:`SPOT_FEATURES`) of one patch's nucleus table."""
    mpp = float(microns_per_pixel)
    area_mm2 = patch_shape[0] * patch_shape[1] * mpp**2 * 1e-6
    n = len(table)
    out = np.zeros(len(SPOT_FEATURES), np.float32)
    out[0] = n
    out[1] = n / area_mm2 if area_mm2 > 0 else 0.0
    if n == 0:
        return out
    area = table[:, _F["area_um2"]]
    out[2] = area.sum() / (area_mm2 * 1e6)
    out[3], out[4] = area.mean(), area.std()
    out[5] = table[:, _F["eccentricity"]].mean()
    out[6] = table[:, _F["solidity"]].mean()
    out[7] = table[:, _F["mean_hematoxylin"]].mean()
    out[8] = table[:, _F["mean_eosin"]].mean()
    if n > 1:
        xy = table[:, [_F["dx_um"], _F["dy_um"]]].astype(np.float64)
        d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        np.fill_diagonal(d, np.inf)
        out[9] = d.min(1).mean()
    return out


def nuclei_features(
    patches: np.ndarray | Sequence[np.ndarray],
    microns_per_pixel: float | Sequence[float],
    max_nuclei: int = 64,
    **segment_kw: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nuclei of every patch as a padded array.

    Args:
        patches: (n, H, W, 3) uint8 (or a sequence of (H, W, 3) arrays of any sizes), cut at
            the slide's native resolution (resized patches: pass their effective pixel size).
        microns_per_pixel: One pixel size, or one per patch.
        max_nuclei: Nuclei kept per patch (the largest).
        **segment_kw: Passed to :func:`segment_patch`.

    Returns:
        ``feats`` (n, max_nuclei, len(NUCLEUS_FEATURES)) float32 (zeros where padded),
        ``mask`` (n, max_nuclei) bool (True for a real nucleus), and ``summary``
        (n, len(SPOT_FEATURES)) float32 (over ALL nuclei of the patch, not only those kept).
    """
    if max_nuclei < 1:
        raise ValueError("max_nuclei must be >= 1")
    n = len(patches)
    mpps = np.broadcast_to(np.asarray(microns_per_pixel, np.float64), (n,))
    feats = np.zeros((n, max_nuclei, len(NUCLEUS_FEATURES)), np.float32)
    mask = np.zeros((n, max_nuclei), bool)
    summary = np.zeros((n, len(SPOT_FEATURES)), np.float32)
    for i in range(n):
        patch = patches[i]
        _, table = segment_patch(patch, mpps[i], **segment_kw)
        k = min(len(table), max_nuclei)
        feats[i, :k] = table[:k]  # rows are sorted by decreasing area
        mask[i, :k] = True
        summary[i] = summarise(table, np.asarray(patch).shape[:2], mpps[i])
    return feats, mask, summary


def nuclei_for_slide(slide, patch_um: float = 112.0, max_nuclei: int = 64,
                     batch_size: int = 64, image: np.ndarray | None = None, **segment_kw: float):
    """:func:`nuclei_features` of every spot of a :class:`~stbench.data.Slide`, with patches cut
    at the slide's native resolution (``patch_um`` square around each spot centre)."""
    from stbench.features.patches import extract_patches, patch_size_px

    image = slide.image.read() if image is None else image
    side = patch_size_px(patch_um, slide.microns_per_pixel)
    centres = np.asarray(slide.adata.obsm["spatial"], np.float64)
    parts = []
    for start in range(0, len(centres), batch_size):
        crops = extract_patches(image, centres[start:start + batch_size], side, side)
        parts.append(nuclei_features(crops, slide.microns_per_pixel, max_nuclei, **segment_kw))
    if not parts:
        return (np.zeros((0, max_nuclei, len(NUCLEUS_FEATURES)), np.float32),
                np.zeros((0, max_nuclei), bool), np.zeros((0, len(SPOT_FEATURES)), np.float32))
    return tuple(np.concatenate(p, axis=0) for p in zip(*parts))


def write_overlay(patch: np.ndarray, labels: np.ndarray, path: str | Path) -> Path:
    """Save ``patch`` with nucleus outlines (yellow) and centroids (cyan) as a PNG."""
    from PIL import Image
    from skimage.measure import regionprops
    from skimage.segmentation import find_boundaries

    img = np.asarray(patch)[..., :3].copy()
    img[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    for r in regionprops(labels):
        y, x = (int(round(v)) for v in r.centroid)
        img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = (0, 255, 255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG")
    return path
