"""Linear-algebra helpers shared by the closed-form methods (``ridge``, ``bilinear``, ``textknn``)."""

from __future__ import annotations

import numpy as np


def pca_components(xs: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` principal directions of the centred matrix ``xs`` (n, d), as (d, k).

    With more rows than columns the eigenvectors of the Gram matrix ``xs.T @ xs`` are used
    (about 5x less CPU than a thin SVD at 10,000 x 1,280, same subspace); otherwise the SVD.
    Columns are ordered by decreasing variance; their signs are arbitrary, which the methods
    using them do not depend on (isotropic ridge penalties on the projected features).
    """
    n, d = xs.shape
    k = int(min(k, d))
    if n > d:
        _, vectors = np.linalg.eigh(xs.T @ xs)
        return np.ascontiguousarray(vectors[:, ::-1][:, :k])
    _, _, vt = np.linalg.svd(xs, full_matrices=False)
    return vt[:k].T
