"""``stbench features``: precompute a dataset's features into the cache."""

from __future__ import annotations

from omegaconf import OmegaConf

from stbench.features.cache import ArrayCache
from stbench.run.config import compose
from stbench.plugins import DATASETS
from stbench.protocol.preprocess import choose_panel, normalise, panel_source
from stbench.run.progress import progress_bars
from stbench.features.pipeline import compute_features
from stbench.run.runner import load_slides
from stbench.features.representations import representation_from_config


def precompute(dataset: str, overrides: list[str], kinds: frozenset[str],
               progress: bool | None = None) -> list[str]:
    """Compute image/nuclei/graph features of every section and the panel's gene text.

    Returns:
        Summary lines (what was computed and what came from the cache).
    """
    dataset_cls = DATASETS.get(dataset)
    cfg = compose([f"dataset={dataset}", *overrides])
    ds = dataset_cls(OmegaConf.to_object(cfg.dataset))
    slides = load_slides(ds, cfg.preprocess.min_spot_counts)
    cache = ArrayCache(cfg.cache.dir, enabled=True)
    lines = []
    with progress_bars(progress) as task:
        feats = compute_features(cfg, slides, kinds, cache, task)
    for s in slides:
        parts = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feats[s.name].items())
        lines.append(f"{s.name}: {parts}")
    if "gene_text" in kinds:
        exprs = [normalise(s, cfg.preprocess.target_sum, cfg.preprocess.log1p) for s in slides]
        panel, kind = choose_panel(panel_source(cfg.genes, ds), exprs, n_hvg=cfg.genes.n_hvg)
        representation = representation_from_config(cfg.genes, cache)
        panel = representation.select_panel(list(panel))
        text = representation.build(panel)
        pooled = text.embed(panel)
        line = (f"gene text ({representation.name}, {kind} panel of {len(panel)}): "
                f"pooled {pooled.shape}")
        if text._token_states is not None:
            states, _ = text.token_states(panel)
            line += f", token states {states.shape}"
        lines.append(line)
    lines.append(f"cache {cache.dir}: {cache.hits} hits, {cache.misses} computed")
    return lines
