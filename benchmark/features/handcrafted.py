"""The handcrafted reference encoder: colour, stain and texture statistics, no weights."""

from __future__ import annotations

import numpy as np

from stbench.features.patches import ImageEncoder


class HandcraftedEncoder(ImageEncoder):
    """Colour, stain and texture statistics: a cheap, weight-free reference encoder.

    Per patch: RGB mean/std; haematoxylin, eosin and residual channels from H&E colour
    deconvolution (Ruifrok & Johnston) as mean, std and 5 quantiles each; the fraction of
    strongly haematoxylin-stained pixels (a nuclear-area proxy); gradient-magnitude and
    Laplacian statistics on the haematoxylin channel (texture); a coarse 2x2 spatial layout
    of the haematoxylin mean.
    """

    name = "handcrafted"
    input_size = 64

    def __init__(self, **_: object) -> None:
        self.dim = int(self.encode(np.full((1, 8, 8, 3), 200, np.uint8)).shape[1])

    def encode(self, patches: np.ndarray) -> np.ndarray:
        from skimage.color import rgb2hed

        n = patches.shape[0]
        rgb = patches.astype(np.float32) / 255.0
        flat_rgb = rgb.reshape(n, -1, 3)
        hed = rgb2hed(rgb.reshape(-1, patches.shape[2], 3)).reshape(rgb.shape).astype(np.float32)
        flat_hed = hed.reshape(n, -1, 3)
        feats = [flat_rgb.mean(1), flat_rgb.std(1), flat_hed.mean(1), flat_hed.std(1)]
        q = np.quantile(flat_hed, [0.1, 0.25, 0.5, 0.75, 0.9], axis=1)  # (5, n, 3)
        feats.append(q.transpose(1, 0, 2).reshape(n, -1))
        h = hed[..., 0]
        thr = np.quantile(h, 0.8) if n else 0.0
        feats.append((h > max(float(thr), 0.05)).reshape(n, -1).mean(1, keepdims=True))
        gy, gx = np.gradient(h, axis=(1, 2))
        grad = np.sqrt(gx**2 + gy**2).reshape(n, -1)
        lap = (
            np.roll(h, 1, 1) + np.roll(h, -1, 1) + np.roll(h, 1, 2) + np.roll(h, -1, 2) - 4 * h
        ).reshape(n, -1)
        feats += [grad.mean(1, keepdims=True), grad.std(1, keepdims=True)]
        feats += [np.abs(lap).mean(1, keepdims=True), lap.std(1, keepdims=True)]
        s = h.shape[1] // 2
        quads = [h[:, :s, :s], h[:, :s, s:], h[:, s:, :s], h[:, s:, s:]]
        feats.append(np.stack([qd.reshape(n, -1).mean(1) for qd in quads], axis=1))
        return np.concatenate(feats, axis=1).astype(np.float32)
