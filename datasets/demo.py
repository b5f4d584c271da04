"""The embedded ``demo`` dataset: synthetic legacy-ST-like slides generated in code.

Nothing is downloaded and nothing is written: :meth:`DemoDataset.load` builds four slides
(2 patients x 2 sections) from a seed. It is small enough for tests and a first ``stbench run``,
yet it is a real test of zero-shot learning: five latent tissue programmes drive BOTH the
H&E-like image (what a spot looks like) and the expression of 200 real human genes, and each
gene's loading on each programme is derived from that gene's own shipped text description
(:func:`loadings_from_text`). A method can therefore predict a gene it never saw in training
only by reading its description and relating it to the image. See ``datasets/DEMO.md``.

Ground truth, for tests and for inspecting methods: every slide's AnnData carries
``uns['demo_loadings']`` (genes x programmes, the loadings used), ``uns['demo_programmes']``
and ``obsm['demo_activities']`` (spots x programmes, the latent activities at each spot).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from stbench.data import ArrayImage, Dataset, DatasetCard, DatasetConfig, Slide
from stbench.errors import ConfigError
from stbench.ranges import bounded

#: The latent tissue programmes, in the column order of every loading / activity matrix.
PROGRAMMES: tuple[str, ...] = (
    "immune",
    "keratinisation",
    "proliferation",
    "stroma",
    "angiogenesis",
)

#: Words and phrases (lower case, matched at a word start) that tie a description to a
#: programme. A gene's loading on a programme grows with the number of matches in its text.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "immune": (
        "immune", "t cell", "b cell", "lymphocyte", "antigen", "cytokine", "leukocyte",
        "inflammatory", "chemokine", "interleukin", "interferon", "mhc class",
        "immunoglobulin", "natural killer", "neutrophil", "macrophage", "t-helper",
        "defense response",
    ),
    "keratinisation": (
        "keratin", "keratinocyte", "keratinization", "epidermis", "epidermal cell",
        "cornified", "cornification", "desmosome", "hemidesmosome", "hair follicle",
        "intermediate filament", "peptide cross-linking",
    ),
    "proliferation": (
        "cell cycle", "mitotic", "mitosis", "dna replication", "chromosome segregation",
        "cell division", "spindle", "kinetochore", "centromere", "g1/s", "g2/m",
        "cytokinesis", "condensed chromosome", "sister chromatid",
    ),
    "stroma": (
        "extracellular matrix", "collagen", "fibroblast", "basement membrane", "elastic fiber",
        "fibronectin", "connective tissue", "fibril", "cell-matrix adhesion", "wound healing",
    ),
    "angiogenesis": (
        "angiogenesis", "blood vessel", "endothelial", "vasculogenesis", "vascular",
        "vasculature", "hypoxia", "decreased oxygen", "erythrocyte", "hemoglobin", "sprouting",
    ),
}  # fmt: skip

#: Loading = 1 - exp(-matches / LOADING_HALF): 1 match -> 0.33, 3 -> 0.70, 6 -> 0.91.
LOADING_HALF = 2.5
#: Effect of a full loading times a full activity on the log expression rate.
PROGRAMME_SCALE = 3.0
#: A gene is a strong member of a programme with >= this many matches there and at most
#: one match for every other programme.
STRONG_MATCHES = 3
#: Share of the demo genes that match no programme (housekeeping-like).
NONE_FRACTION = 0.125

#: Legacy ST geometry: 200 um centre-to-centre, 100 um spots.
PITCH_UM = 200.0
SPOT_DIAMETER_UM = 100.0
MICRONS_PER_PIXEL = 2.0
_MARGIN_PX = 60

# Ruifrok & Johnston optical-density vectors (rgb2hed's basis); images are rendered in stain
# concentration space and converted with Beer-Lambert, so colour deconvolution reads back the
# concentrations that were drawn. The third stain is a red "erythrocyte" dye (vessel lumens).
_OD_H = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_OD_E = np.array([0.07, 0.99, 0.11], dtype=np.float32)
_OD_R = np.array([0.10, 0.85, 0.75], dtype=np.float32)

_PATTERNS = tuple(
    re.compile(r"\b(?:" + "|".join(re.escape(w) for w in KEYWORDS[p]) + r")")
    for p in PROGRAMMES
)


# --------------------------------------------------------------------------------------------
# Genes and their loadings, from their descriptions
# --------------------------------------------------------------------------------------------


def keyword_matches(texts: Sequence[str]) -> np.ndarray:
    """Number of programme keyword matches in each text, (n_texts, n_programmes) int."""
    out = np.zeros((len(texts), len(PROGRAMMES)), dtype=np.int64)
    for i, text in enumerate(texts):
        low = text.lower()
        for k, pat in enumerate(_PATTERNS):
            out[i, k] = len(pat.findall(low))
    return out


def loadings_from_text(texts: Sequence[str]) -> np.ndarray:
    """Programme loadings of genes DERIVED FROM THEIR DESCRIPTIONS, (n_texts, n_programmes).

    ``L[g, k] = 1 - exp(-m[g, k] / LOADING_HALF)`` where ``m[g, k]`` counts the matches of
    programme ``k``'s :data:`KEYWORDS` in gene ``g``'s description (its name and GO terms).
    Text with no keyword gives an all-zero row: expression is noise around a baseline.
    """
    m = keyword_matches(texts).astype(np.float64)
    return 1.0 - np.exp(-m / LOADING_HALF)


def _stable_order(symbols: Sequence[str], salt: str) -> list[str]:
    key = lambda s: hashlib.sha1(f"{salt}:{s}".encode()).hexdigest()  # noqa: E731
    return sorted(symbols, key=key)


@lru_cache(maxsize=1)
def _candidates() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Descriptions of well-annotated genes and, per programme (and ``none``), its members."""
    from stbench.features.descriptions import DescriptionTable

    table = DescriptionTable.shipped()
    texts: dict[str, str] = {}
    for symbol in table.symbols:
        rec = table.record(symbol)
        if rec["go_bp"] and rec["go_mf"] and rec["go_cc"]:  # annotated in all three aspects
            texts[symbol] = rec["text"]
    symbols = list(texts)
    m = keyword_matches([texts[s] for s in symbols])
    groups: dict[str, list[str]] = {}
    for k, name in enumerate(PROGRAMMES):
        other = np.delete(m, k, axis=1).max(axis=1)
        strong = (m[:, k] >= STRONG_MATCHES) & (other <= 1)
        groups[name] = _stable_order([s for s, ok in zip(symbols, strong) if ok], name)
    none = m.sum(axis=1) == 0
    groups["none"] = _stable_order([s for s, ok in zip(symbols, none) if ok], "none")
    return texts, groups


def demo_genes(n_genes: int = 200) -> list[str]:
    """The demo's genes: real symbols of the shipped description table, chosen deterministically.

    ``round(NONE_FRACTION * n_genes)`` genes match no programme keyword; the others are split
    evenly over the programmes among genes that strongly match one programme (at least
    :data:`STRONG_MATCHES` matches, at most one for any other). Within each group genes are
    taken in a fixed hash order of their symbols. The result is sorted by symbol.
    """
    texts, groups = _candidates()
    n_none = int(round(NONE_FRACTION * n_genes))
    per, extra = divmod(n_genes - n_none, len(PROGRAMMES))
    wanted = {"none": n_none}
    wanted.update({p: per + (i < extra) for i, p in enumerate(PROGRAMMES)})
    chosen: list[str] = []
    for group, n in wanted.items():
        if n > len(groups[group]):
            raise ConfigError(
                f"the description table has only {len(groups[group])} genes for the demo's "
                f"{group!r} group, {n} needed",
                where="dataset.n_genes",
                fix="ask for fewer demo genes",
            )
        chosen += groups[group][:n]
    return sorted(chosen)


def demo_descriptions(genes: Sequence[str]) -> dict[str, str]:
    """The shipped description of each demo gene (the texts its loadings come from)."""
    texts, _ = _candidates()
    return {g: texts[g] for g in genes}


def demo_loadings(genes: Sequence[str]) -> np.ndarray:
    """Ground-truth loadings (len(genes), n_programmes) of demo genes, from their texts."""
    return loadings_from_text(list(demo_descriptions(genes).values()))


# --------------------------------------------------------------------------------------------
# Latent programme activities: smooth spatial fields (sums of Gaussian blobs)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    """Programme activity fields of one slide, evaluable at any pixel position.

    ``a_k(p) = 1 - exp(-gain_k * sum_j amp_kj * exp(-|p - c_kj|^2 / (2 sigma_kj^2)))``, in
    [0, 1): a sum of Gaussian blobs squashed so that overlapping blobs saturate.
    """

    centres: list[np.ndarray]  # per programme (n_blobs, 2) pixels (x, y)
    sigmas: list[np.ndarray]  # per programme (n_blobs,) pixels
    amps: list[np.ndarray]  # per programme (n_blobs,)
    gains: np.ndarray  # (K,)

    def at(self, xy: np.ndarray) -> np.ndarray:
        """Activities at points, (n, K) float64."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = np.empty((len(xy), len(self.gains)))
        for k in range(len(self.gains)):
            d2 = ((xy[:, None, :] - self.centres[k][None]) ** 2).sum(-1)
            s = (self.amps[k] * np.exp(-d2 / (2.0 * self.sigmas[k] ** 2))).sum(1)
            out[:, k] = 1.0 - np.exp(-self.gains[k] * s)
        return out


def _make_fields(rng: np.random.Generator, width: int, height: int, gains: np.ndarray) -> _Fields:
    centres, sigmas, amps = [], [], []
    for _ in PROGRAMMES:
        n = int(rng.integers(3, 7))
        c = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height], size=(n, 2))
        centres.append(c)
        sigmas.append(rng.uniform(220.0, 520.0, size=n) / MICRONS_PER_PIXEL)
        amps.append(rng.uniform(0.6, 1.6, size=n))
    return _Fields(centres, sigmas, amps, np.asarray(gains, dtype=np.float64))


def _upsample(coarse: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of (m, hc, wc) block-centre samples (see ``_coarse_grid``)."""
    from PIL import Image

    hc, wc = coarse.shape[-2:]
    out = np.empty((coarse.shape[0], height, width), np.float32)
    for i, plane in enumerate(coarse):
        img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        big = np.asarray(img.resize((wc * stride, hc * stride), Image.Resampling.BILINEAR))
        out[i] = big[:height, :width]
    return out


def _coarse_grid(
    fn: Callable[[np.ndarray], np.ndarray], stride: int, height: int, width: int
) -> np.ndarray:
    """Evaluate ``fn(xy) -> (n, m)`` at the centres of ``stride`` px blocks; (m, hc, wc)."""
    hc, wc = -(-height // stride), -(-width // stride)
    gy, gx = (np.mgrid[0:hc, 0:wc] + 0.5) * stride - 0.5
    vals = fn(np.stack([gx.ravel(), gy.ravel()], 1))
    return vals.T.reshape(-1, hc, wc).astype(np.float32)


# --------------------------------------------------------------------------------------------
# H&E-like rendering
# --------------------------------------------------------------------------------------------


def _sample_points(
    rng: np.random.Generator,
    density: float,
    width: int,
    height: int,
    keep_prob: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """An inhomogeneous Poisson process by thinning: ``density`` per px^2 at keep_prob 1."""
    n = int(rng.poisson(density * width * height))
    xy = rng.uniform([0.0, 0.0], [width, height], size=(n, 2))
    if n == 0:
        return xy
    p = keep_prob(xy)
    return xy[rng.uniform(size=n) < p]


def _stamp(
    canvas: np.ndarray,
    xy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    value: np.ndarray,
    rng: np.random.Generator,
    texture: float = 0.0,
    profile: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw filled, soft-edged ellipses into ``canvas`` (H, W) with ``max`` compositing.

    Each ellipse has centre ``xy``, semi-axes ``a`` (along ``theta``) and ``b``, and peak
    ``value``; ``profile(r, u, v)`` (``r`` the normalised radius) shapes the interior and
    ``texture`` adds multiplicative per-pixel noise (chromatin). Vectorised over ellipses.

    Returns:
        ``(flat_index, coverage)`` of every drawn pixel, for callers that overwrite other
        stains under the ellipses.
    """
    height, width = canvas.shape
    if len(xy) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    half = int(np.ceil(max(a.max(), b.max()))) + 1
    off = np.arange(-half, half + 1)
    dy, dx = np.meshgrid(off, off, indexing="ij")
    cx = np.round(xy[:, 0]).astype(np.int64)
    cy = np.round(xy[:, 1]).astype(np.int64)
    px = cx[:, None, None] + dx[None]
    py = cy[:, None, None] + dy[None]
    rx = (px - xy[:, 0, None, None]).astype(np.float32)
    ry = (py - xy[:, 1, None, None]).astype(np.float32)
    ct = np.cos(theta)[:, None, None].astype(np.float32)
    st = np.sin(theta)[:, None, None].astype(np.float32)
    u = (rx * ct + ry * st) / a[:, None, None].astype(np.float32)
    v = (-rx * st + ry * ct) / b[:, None, None].astype(np.float32)
    r = np.sqrt(u * u + v * v)
    edge = np.minimum(a, b)[:, None, None].astype(np.float32)
    w = np.clip((1.0 - r) * edge + 0.5, 0.0, 1.0)
    vals = w * value[:, None, None].astype(np.float32)
    if profile is not None:
        vals = vals * profile(r, u, v)
    if texture:
        vals = vals * (1.0 + texture * rng.standard_normal(vals.shape, dtype=np.float32))
    inside = (w > 0) & (px >= 0) & (px < width) & (py >= 0) & (py < height)
    idx = (py * width + px)[inside]
    np.maximum.at(canvas.reshape(-1), idx, vals[inside])
    return idx, w[inside]


#: Column of each programme in ``_Fields.at`` (the order of :data:`PROGRAMMES`).
_IMM, _KER, _PRO, _STRO, _ANG = range(len(PROGRAMMES))


def _keep(fields: _Fields, k: int, power: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Thinning probability of programme ``k``: its activity at a point, to ``power``."""
    return lambda xy: fields.at(xy)[:, k] ** power


def _fibre_angle(aux: _Fields, xy: np.ndarray) -> np.ndarray:
    """Stroma fibre orientation (radians) at ``xy`` from the auxiliary fields."""
    b = aux.at(xy)
    return np.pi * (b[:, 0] + 0.7 * b[:, 1])


def _base_stains(
    rng: np.random.Generator, fields: _Fields, aux: _Fields, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eosin, haematoxylin and erythrocyte concentrations (OD units, (H, W) each) before any
    cell is drawn: stroma fibres, keratin tint, basophilic proliferating cytoplasm."""
    stride = 8
    wanted = [_KER, _PRO, _STRO]

    def coarse_fn(xy: np.ndarray) -> np.ndarray:
        a, b = fields.at(xy), aux.at(xy)
        phi = np.pi * (b[:, 0] + 0.7 * b[:, 1])
        return np.column_stack([a[:, wanted], np.cos(phi), np.sin(phi), 6.0 * b[:, 2]])

    coarse = _coarse_grid(coarse_fn, stride, height, width)
    a_ker, a_pro, a_stro, cos_phi, sin_phi, phase = _upsample(coarse, stride, height, width)
    noise = rng.standard_normal((3, height, width), dtype=np.float32)
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    proj = xx * cos_phi + yy * sin_phi
    fibre = (0.5 + 0.5 * np.sin(proj * np.float32(2 * np.pi / 7.0) + phase + 0.8 * noise[0])) ** 3
    c_e = 0.16 + 0.04 * noise[1] + a_stro * (0.15 + 0.55 * fibre) + 0.12 * a_ker
    c_h = (0.03 + 0.015 * noise[2]) * (1.0 - 0.8 * a_ker) + 0.14 * a_pro
    c_r = np.zeros((height, width), np.float32)
    return c_e, c_h, c_r


def _draw_nuclei(rng: np.random.Generator, fields: _Fields, aux: _Fields, c_h: np.ndarray) -> None:
    """Generic sparse nuclei, stroma spindle nuclei, proliferating and immune nuclei into
    ``c_h`` (in place)."""
    height, width = c_h.shape
    # Generic sparse nuclei.
    p = _sample_points(rng, 1 / 1400, width, height, lambda xy: np.ones(len(xy)))
    n = len(p)
    _stamp(c_h, p, rng.uniform(2.8, 4.0, n), rng.uniform(2.2, 3.2, n),
           rng.uniform(0, np.pi, n), rng.uniform(0.55, 0.75, n), rng, texture=0.15)
    # Stroma: spindle nuclei aligned with the fibres.
    p = _sample_points(rng, 1 / 450, width, height, _keep(fields, _STRO, 1.5))
    n = len(p)
    theta = _fibre_angle(aux, p) + np.pi / 2 + rng.normal(0, 0.15, n)
    _stamp(c_h, p, rng.uniform(7.0, 10.0, n), rng.uniform(1.3, 1.9, n), theta,
           rng.uniform(0.6, 0.8, n), rng, texture=0.1)
    # Proliferation: large, crowded, hyperchromatic nuclei.
    p = _sample_points(rng, 1 / 190, width, height, _keep(fields, _PRO, 1.5))
    n = len(p)
    _stamp(c_h, p, rng.uniform(5.0, 7.0, n), rng.uniform(4.0, 5.5, n),
           rng.uniform(0, np.pi, n), rng.uniform(1.0, 1.3, n), rng, texture=0.25)
    # Immune: lymphocytes, small round very dark nuclei.
    p = _sample_points(rng, 1 / 22, width, height, _keep(fields, _IMM, 2.0))
    n = len(p)
    _stamp(c_h, p, rng.uniform(2.0, 2.7, n), rng.uniform(1.8, 2.4, n),
           rng.uniform(0, np.pi, n), rng.uniform(1.1, 1.4, n), rng, texture=0.05)


def _draw_vessels(rng: np.random.Generator, fields: _Fields, c_e: np.ndarray, c_h: np.ndarray,
                  c_r: np.ndarray) -> None:
    """Angiogenesis: erythrocyte-filled lumens with a thin endothelial rim (in place)."""
    height, width = c_h.shape
    p = _sample_points(rng, 1 / 800, width, height, _keep(fields, _ANG, 1.5))
    n = len(p)
    a_v, b_v, t_v = rng.uniform(8.0, 14.0, n), rng.uniform(5.0, 8.0, n), rng.uniform(0, np.pi, n)
    idx, w = _stamp(c_r, p, a_v, b_v, t_v, rng.uniform(0.5, 0.8, n), rng, texture=0.35)
    c_h.reshape(-1)[idx] *= 1.0 - w
    c_e.reshape(-1)[idx] *= 1.0 - 0.7 * w
    rim = lambda r, u, v: np.clip(1.0 - np.abs(r - 0.95) * 6.0, 0.0, 1.0)  # noqa: E731
    _stamp(c_h, p, a_v + 1.5, b_v + 1.5, t_v, np.full(n, 0.7), rng, profile=rim)


def _draw_keratin(rng: np.random.Generator, fields: _Fields, c_e: np.ndarray,
                  c_h: np.ndarray) -> None:
    """Keratinisation: pearls of concentric eosinophilic keratin that push nuclei aside (in
    place)."""
    height, width = c_h.shape
    p = _sample_points(rng, 1 / 1100, width, height, _keep(fields, _KER, 1.2))
    n = len(p)
    rad = rng.uniform(9.0, 18.0, n)
    rings = lambda r, u, v: 0.75 + 0.25 * np.cos(2 * np.pi * r * 4.0)  # noqa: E731
    tmp = np.zeros_like(c_e)
    idx, w = _stamp(tmp, p, rad, rad * rng.uniform(0.7, 1.0, n), rng.uniform(0, np.pi, n),
                    rng.uniform(0.45, 0.6, n), rng, profile=rings)
    flat_e, flat_h, flat_t = c_e.reshape(-1), c_h.reshape(-1), tmp.reshape(-1)
    flat_h[idx] *= 1.0 - w
    flat_e[idx] = flat_e[idx] * (1.0 - w) + flat_t[idx]


def _render(rng: np.random.Generator, fields: _Fields, width: int, height: int) -> np.ndarray:
    """An (H, W, 3) uint8 H&E-like image whose local texture encodes the programme activities.

    Immune: many small round dark nuclei (lymphocytes). Keratinisation: pale, glassy
    eosinophilic keratin pearls (concentric rings) with no nuclei. Proliferation: large,
    crowded, hyperchromatic nuclei on basophilic cytoplasm. Stroma: pink fibre streaks with
    spindle nuclei aligned to them. Angiogenesis: vessel lumens full of red erythrocytes,
    lined by flat endothelial nuclei. Sparse generic nuclei everywhere.
    """
    # Smooth random fibre-orientation and fibre-phase fields (independent of the programmes).
    aux = _make_fields(rng, width, height, np.ones(len(PROGRAMMES)))
    c_e, c_h, c_r = _base_stains(rng, fields, aux, width, height)
    _draw_nuclei(rng, fields, aux, c_h)
    _draw_vessels(rng, fields, c_e, c_h, c_r)
    _draw_keratin(rng, fields, c_e, c_h)
    od = (
        c_h[..., None] * _OD_H
        + np.clip(c_e, 0.0, None)[..., None] * _OD_E
        + c_r[..., None] * _OD_R
    )
    rgb = 255.0 * np.exp(od * np.float32(-0.5 * np.log(10.0)))
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Slides
# --------------------------------------------------------------------------------------------


def _slide_names(n_slides: int) -> list[tuple[str, str]]:
    """(section name, patient) of each slide: two sections per patient, P1_A, P1_B, P2_A..."""
    return [(f"P{i // 2 + 1}_{'AB'[i % 2]}", f"P{i // 2 + 1}") for i in range(n_slides)]


def _grid_shape(n_spots: int) -> tuple[int, int]:
    cols = max(2, int(round(np.sqrt(n_spots * 0.75))))
    return cols, -(-n_spots // cols)


def _counts(
    rng: np.random.Generator,
    activities: np.ndarray,
    loadings: np.ndarray,
    base_log: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """Raw counts: negative binomial (Poisson-gamma) around programme-driven rates.

    ``rate[s, g] = lib[s] * softmax_g(base_log[g] + offset[g] + SCALE * L[g] . a[s])``, with a
    log-normal library size per spot and a gene-specific NB size ``size[g]``.
    """
    n_spots = activities.shape[0]
    lib = np.exp(rng.normal(np.log(3000.0), 0.35, size=n_spots))
    logit = base_log[None, :] + offset[None, :] + PROGRAMME_SCALE * activities @ loadings.T
    logit -= logit.max(axis=1, keepdims=True)
    p = np.exp(logit)
    p /= p.sum(axis=1, keepdims=True)
    mu = lib[:, None] * p
    lam = rng.gamma(size[None, :], mu / size[None, :])
    return rng.poisson(lam).astype(np.int32)


def _make_slide(
    index: int,
    name: str,
    patient: str,
    config: DemoDataset.Config,
    genes: list[str],
    loadings: np.ndarray,
) -> Slide:
    import anndata as ad
    import pandas as pd

    seed = int(config.seed)
    patient_idx = int(patient[1:]) - 1
    gene_rng = np.random.default_rng([seed, 0])
    base_log = gene_rng.normal(0.0, 1.0, size=len(genes))
    size = gene_rng.uniform(3.0, 15.0, size=len(genes))
    patient_rng = np.random.default_rng([seed, 1, patient_idx])
    gains = patient_rng.uniform(0.8, 1.5, size=len(PROGRAMMES))
    offset = patient_rng.normal(0.0, 0.15, size=len(genes))
    image_rng = np.random.default_rng([seed, 2, index])
    count_rng = np.random.default_rng([seed, 3, index])

    cols, rows = _grid_shape(config.n_spots)
    pitch = PITCH_UM / MICRONS_PER_PIXEL
    width = int(2 * _MARGIN_PX + (cols - 1) * pitch)
    height = int(2 * _MARGIN_PX + (rows - 1) * pitch)
    gc, gr = np.meshgrid(np.arange(1, cols + 1), np.arange(1, rows + 1))
    grid = np.stack([gc.ravel(), gr.ravel()], axis=1)[: config.n_spots]
    xy = _MARGIN_PX + (grid - 1) * pitch + image_rng.uniform(-1.5, 1.5, size=grid.shape)

    fields = _make_fields(image_rng, width, height, gains)
    image = _render(image_rng, fields, width, height)
    activities = fields.at(xy)
    counts = _counts(count_rng, activities, loadings, base_log, size, offset)

    adata = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(index=[f"{c}x{r}" for c, r in grid]),
        var=pd.DataFrame(index=list(genes)),
    )
    adata.obsm["spatial"] = xy.astype(np.float64)
    adata.obsm["grid"] = grid.astype(np.int64)
    adata.obsm["demo_activities"] = activities
    adata.uns["demo_loadings"] = loadings.copy()
    adata.uns["demo_programmes"] = list(PROGRAMMES)
    return Slide(
        name=name,
        patient=patient,
        adata=adata,
        image=ArrayImage(image),
        microns_per_pixel=MICRONS_PER_PIXEL,
        spot_diameter_um=SPOT_DIAMETER_UM,
    )


class DemoDataset(Dataset):
    """Synthetic legacy-ST-like slides whose genes follow their own descriptions."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="demo",
        version="1",
        url="(generated in code)",
        licence="CC0-1.0 (generated data; generator code MIT)",
        citation="stbench demo dataset (synthetic)",
        platform="synthetic legacy-ST-like",
        n_patients=2,
        default_split="loso",
        panel="all 200 demo genes",
        description=(
            "Four generated sections (2 patients x 2) of 300 spots: five latent tissue "
            "programmes (immune, keratinisation, proliferation, stroma, angiogenesis) drive an "
            "H&E-like image and the counts of 200 real genes, whose programme loadings are "
            "derived from their shipped descriptions. See datasets/DEMO.md."
        ),
    )

    @dataclass
    class Config(DatasetConfig):
        """Settings of the demo dataset (``root`` is unused: nothing is read or written).

        Attributes:
            n_slides: Number of sections; two per patient (P1_A, P1_B, P2_A, ...).
            n_spots: Spots per section, on a legacy-ST grid (200 um pitch, 100 um spots).
            n_genes: Genes (real symbols with shipped descriptions).
            seed: Seed of every random draw (fields, images, counts); same seed, same data.
        """

        n_slides: int = bounded(4, ">= 1")
        n_spots: int = bounded(300, ">= 1")
        n_genes: int = bounded(200, ">= 1")
        seed: int = bounded(0, ">= 0")

    def load(self) -> list[Slide]:
        cfg = self.config
        for field_name, low in (("n_slides", 1), ("n_spots", 4), ("n_genes", 10)):
            value = getattr(cfg, field_name, None)
            if not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"demo {field_name} must be an integer >= {low}, got {value!r}",
                    where=f"dataset.{field_name}",
                    fix=f"set dataset.{field_name} to an integer >= {low}",
                )
        names = _slide_names(cfg.n_slides)
        wanted = list(getattr(cfg, "sections", None) or [])
        known = [n for n, _ in names]
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ConfigError(
                f"sections {missing} not found",
                where="dataset.sections",
                fix=f"choose from {known} in dataset.sections",
            )
        order = [known.index(w) for w in wanted] if wanted else range(len(names))
        genes = demo_genes(cfg.n_genes)
        loadings = demo_loadings(genes)
        return [_make_slide(i, *names[i], cfg, genes, loadings) for i in order]


#: The demo's settings class (``DemoDataset.Config``).
DemoConfig = DemoDataset.Config


__all__ = [
    "KEYWORDS",
    "PROGRAMMES",
    "DemoConfig",
    "DemoDataset",
    "demo_descriptions",
    "demo_genes",
    "demo_loadings",
    "keyword_matches",
    "loadings_from_text",
]
