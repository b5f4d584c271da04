"""Spot patches and image encoders.

Patches are cut at a fixed PHYSICAL size (``patch_um``, default 112 um square) around each
spot centre, so slides scanned at different resolutions give comparable inputs, then resampled
to the encoder's input size. Each slide image is decoded once, not once per spot.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stbench.data import Slide

FEATURES_CODE_VERSION = "1"


def patch_size_px(patch_um: float, microns_per_pixel: float) -> int:
    """Side of a ``patch_um`` square in pixels (at least 8)."""
    return max(8, int(round(patch_um / microns_per_pixel)))


def extract_patches(
    image: np.ndarray, centres_xy: np.ndarray, side_px: int, out_size: int
) -> np.ndarray:
    """Cut square patches centred on spots and resample them.

    Args:
        image: (H, W, 3) uint8 RGB.
        centres_xy: (n, 2) spot centres (x, y) in pixels.
        side_px: Patch side in image pixels.
        out_size: Output side in pixels.

    Returns:
        (n, out_size, out_size, 3) uint8; parts outside the image are white.
    """
    from PIL import Image

    h, w = image.shape[:2]
    half = side_px // 2
    out = np.empty((len(centres_xy), out_size, out_size, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(np.asarray(centres_xy, dtype=np.float64)):
        x0, y0 = int(round(x)) - half, int(round(y)) - half
        x1, y1 = x0 + side_px, y0 + side_px
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            crop = image[y0:y1, x0:x1]
        else:
            crop = np.full((side_px, side_px, 3), 255, dtype=np.uint8)
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if sx1 > sx0 and sy1 > sy0:
                crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        if side_px == out_size:
            out[i] = crop
        else:
            out[i] = np.asarray(
                Image.fromarray(crop).resize((out_size, out_size), Image.Resampling.BILINEAR)
            )
    return out


class ImageEncoder(ABC):
    """Turns spot patches into feature vectors."""

    name: str = "encoder"
    input_size: int = 224
    dim: int = 0

    @abstractmethod
    def encode(self, patches: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 patches -> (n, dim) float32 features."""

    def digest(self) -> str:
        """Identifies weights and code: part of every feature-cache key."""
        return hashlib.sha256(f"{self.name}:{FEATURES_CODE_VERSION}".encode()).hexdigest()[:16]


@dataclass
class PatchSpec:
    """How patches are cut and batched (the encoder's input size comes from the encoder).

    Attributes:
        patch_um: Side of the square cut around each spot centre, in microns.
        batch_size: Patches encoded per call of ``ImageEncoder.encode``.
    """

    patch_um: float = 112.0
    batch_size: int = 64


def encode_slide(
    slide: Slide,
    encoder: ImageEncoder,
    spec: PatchSpec,
    advance: Callable[[int], None] | None = None,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """Image features for every spot of a slide, (n_spots, encoder.dim) float32.

    ``image`` is the decoded slide when the caller already holds it (decode once).
    """
    image = slide.image.read() if image is None else image
    side = patch_size_px(spec.patch_um, slide.microns_per_pixel)
    centres = np.asarray(slide.adata.obsm["spatial"], dtype=np.float64)
    chunks = []
    for start in range(0, len(centres), spec.batch_size):
        batch = extract_patches(image, centres[start : start + spec.batch_size], side, encoder.input_size)
        chunks.append(encoder.encode(batch))
        if advance is not None:
            advance(len(batch))
    if not chunks:
        return np.zeros((0, encoder.dim), np.float32)
    return np.concatenate(chunks, axis=0)
