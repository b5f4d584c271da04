"""The feature pipeline: every feature kind a method needs, per slide, through the cache."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stbench.data import Slide
from stbench.features.cache import ArrayCache, cache_key
from stbench.features.patches import FEATURES_CODE_VERSION, PatchSpec, encode_slide
from stbench.plugins import ENCODERS


def compute_features(cfg: DictConfig, slides: list[Slide], needs: frozenset[str],
                     cache: ArrayCache, task, info: dict | None = None
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Per-slide features the method needs, served from the content-addressed cache.

    Each slide image is decoded at most once (and not at all when everything is cached):
    ``image`` (encoder embeddings), ``nuclei`` + ``nuclei_mask`` (segmented nuclei), and for
    ``graph`` ``edges_grid`` (array neighbours) and ``edges_knn`` (image-feature kNN).
    """
    features: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in slides}
    wanted = set(needs) & {"image", "nuclei", "graph"}
    if not wanted:
        return features
    if "graph" in wanted:
        wanted.add("image")  # kNN edges are built on the image features
    encoder, enc_name, enc_cfg = None, None, {}
    if "image" in wanted:
        enc_cfg = OmegaConf.to_container(cfg.encoder, resolve=True)
        enc_name = enc_cfg.pop("name")
        encoder = ENCODERS.get(enc_name)(**enc_cfg)
        if info is not None:
            info["encoder"] = {"name": enc_name, "weights_digest": encoder.digest()}
    spec = PatchSpec(patch_um=cfg.features.patch_um, batch_size=cfg.features.batch_size)
    advance = task(f"features ({', '.join(sorted(wanted))})", sum(s.n_spots for s in slides))
    for s in slides:
        decoded: dict[str, np.ndarray] = {}

        def image(s: Slide = s, decoded=decoded) -> np.ndarray:
            if "rgb" not in decoded:
                decoded["rgb"] = s.image.read()
            return decoded["rgb"]

        base = dict(image=s.image.digest(), spatial=np.asarray(s.adata.obsm["spatial"], np.float64),
                    mpp=s.microns_per_pixel, patch_um=spec.patch_um)
        out = features[s.name]
        if "image" in wanted:
            key = cache_key(**base, encoder=enc_name, encoder_digest=encoder.digest(),
                            code=FEATURES_CODE_VERSION)
            out["image"] = cache.get_or_compute(
                "image", key, lambda s=s: encode_slide(s, encoder, spec, image=image()))
        if "nuclei" in wanted:
            from stbench.features.nuclei import NUCLEI_CODE_VERSION, nuclei_for_slide

            key = cache_key(**base, max_nuclei=cfg.features.max_nuclei, code=NUCLEI_CODE_VERSION)
            computed: dict[str, np.ndarray] = {}

            def nuclei(s: Slide = s, computed=computed) -> np.ndarray:
                feats, mask, _ = nuclei_for_slide(s, spec.patch_um, cfg.features.max_nuclei,
                                                  image=image())
                computed["mask"] = mask
                return feats

            out["nuclei"] = cache.get_or_compute("nuclei", key, nuclei)
            out["nuclei_mask"] = cache.get_or_compute(
                "nuclei_mask", key, lambda s=s, computed=computed: computed["mask"] if "mask" in
                computed else nuclei_for_slide(s, spec.patch_um, cfg.features.max_nuclei,
                                               image=image())[1]).astype(bool)
        if "graph" in wanted:
            from stbench.features.graph import grid_edges, knn_edges

            layout = "hex" if s.spot_diameter_um < 80 else "square"
            out["edges_grid"] = grid_edges(np.asarray(s.adata.obsm["grid"]), layout=layout,
                                           max_neighbors=cfg.features.grid_max_neighbors)
            out["edges_knn"] = knn_edges(out["image"], cfg.features.knn_k)
        decoded.clear()
        advance(s.n_spots)
    return features
