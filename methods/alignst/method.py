"""The ``alignst`` method plugin: training, validation, prediction around :mod:`.model`.

See ``methods/README_alignst.md`` for the design and its relation to the paper.

Feature contract (``stbench.method.SlideView.features``): ``image`` (n, d_img) is required;
``nuclei`` (n, M, F) + ``nuclei_mask`` (n, M) and ``edges_grid`` / ``edges_knn`` (2, E) are
used when present and switched on (``Config.nuclei`` / ``Config.graph``). The nuclei module
and the graph module are built only if every training slide has those features; a slide that
lacks them later (validation/test) runs without that stage (a warning says so). Gene text comes
from ``ctx.gene_text``: ``token_states`` when the text encoder has them, else the pooled
``embed`` as one token per gene (decided once, at fit time).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stbench.method import Bundle, FitContext, GeneText, Method, MethodConfig, MethodMeta, SlideView
from stbench.methods._torch_utils import (FeatureScaler, mean_gene_pcc, resolve_device,
                                         seed_all, torch_threads)
from stbench.methods._training import LoopSpec, epoch_budget, run_epochs
from stbench.ranges import bounded

from .model import (EDGE_BOTH, EDGE_GRID, EDGE_KNN, EDGE_SELF, AlignSTModel, GeneBatch,
                    GeneTokens, ModelConfig, SpotBatch, alignment_loss, pcc_per_gene)

TEST_CONTEXTS = ("unseen", "seen+unseen")


def spot_graph(n: int, grid: np.ndarray | None, knn: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of grid and kNN edges with edge types, plus one self loop per spot.

    Args:
        n: Number of spots.
        grid, knn: (2, E) int (source, target) edges or None.

    Returns:
        ``(src, tgt, etype)`` int64 arrays; duplicate edges are merged (an edge in both
        sets gets ``EDGE_BOTH``); input self loops are dropped and replaced by ``EDGE_SELF``.
    """
    codes = []
    for edges, flag in ((grid, 1), (knn, 2)):
        if edges is None:
            continue
        e = np.asarray(edges, dtype=np.int64).reshape(2, -1)
        if e.size and (e.min() < 0 or e.max() >= n):
            raise ValueError(f"graph edge index out of range for a slide of {n} spots")
        e = e[:, e[0] != e[1]]
        code = np.unique(e[0] * n + e[1])
        codes.append((code, flag))
    if codes:
        allc = np.unique(np.concatenate([c for c, _ in codes]))
        typ = np.zeros(allc.shape[0], dtype=np.int64)
        for code, flag in codes:
            typ[np.isin(allc, code)] |= flag
    else:
        allc, typ = np.zeros(0, np.int64), np.zeros(0, np.int64)
    etype_map = np.array([EDGE_SELF, EDGE_GRID, EDGE_KNN, EDGE_BOTH], dtype=np.int64)
    loops = np.arange(n, dtype=np.int64)
    src = np.concatenate([allc // n, loops])
    tgt = np.concatenate([allc % n, loops])
    etype = np.concatenate([etype_map[typ], np.full(n, EDGE_SELF, np.int64)])
    return src, tgt, etype


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where this torch build has it (same update, fewer ops)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older builds / devices
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


class AlignST(Method):
    """ALIGN-ST: nuclei-aware spatial spot encoder x prompt-aligned gene semantics."""

    meta = MethodMeta(
        name="alignst",
        kind="zero_shot",
        needs=frozenset({"image", "nuclei", "graph", "gene_text"}),
        citation=(
            "Zhou et al., Deep Association Multimodal Learning for Zero-Shot Spatial "
            "Transcriptomics Prediction (ALIGN-ST), MICCAI 2025; stbench re-implementation "
            "from the paper's description"
        ),
        version="3",
        trained_on="seen",
    )

    @dataclass
    class Config(MethodConfig):
        """Hyperparameters and ablation switches (one sweep gives the ablation table).

        Attributes:
            dim: Width ``d`` of every embedding.
            heads: Attention heads (``dim`` must be divisible).
            graph_layers: Graph attention layers (stage 2).
            prompt_rounds: Vision-language prompt rounds (stage 4); 0 = no cross-modal
                prompt learning (static text prompts, no visual prompts).
            n_text_prompts / n_visual_prompts: Learnable prompt tokens.
            n_visual_context: Attention-pooled visual context tokens per round.
            text_layers: Transformer layers of the gene encoder.
            interaction_layers: Gene-interaction layers (used if ``gene_interaction``).
            genes_per_step: Genes per training step (chunks of a random gene permutation;
                a step takes its chunk on every training slide, so an epoch sees every
                (slide, gene) once).
            lr / weight_decay / warmup_frac / grad_clip: AdamW, linear warm-up then cosine
                decay (per step), gradient-norm clipping.
            max_epochs / patience / min_epochs: Early stopping on the validation mean PCC of
                the validation genes, never before ``min_epochs`` (``max_epochs`` fixed epochs
                when there is no validation data); the best epoch's weights are restored.
            patience_ratio: 0 (default) = fixed patience; r > 0 waits
                ``max(patience, ceil(r * (best epoch + 1)))`` epochs after the best one, so a
                curve still rising late is not cut by a plateau (see
                ``stbench.methods._training``). ``patience=5 patience_ratio=0.5
                min_epochs=5`` costs 1.44x less CPU on her2st holdout and is not significantly
                less accurate there nor on the demo (3 seeds each, docs/performance.md);
                opt-in, the default results are unchanged.
            max_steps: Budget of optimiser steps (0, the default = none): training runs at
                most ``ceil(max_steps / steps per epoch)`` epochs (never more than
                ``max_epochs``) and the learning-rate schedule spans that many epochs.
                ``max_steps=144`` (6 epochs on a her2st fold) costs a quarter of the default on
                her2st and is not significantly less accurate there, but is significantly
                less accurate on the demo (docs/performance.md), so it is not the default.
            eval_every: Validate every this many epochs (and after the last one); patience
                and ``min_epochs`` still count epochs.
            shared_chunk_steps: False (default, the version-1 optimisation): a step is one
                training slide x one gene chunk, slides in random order. True (version 2): a
                step takes its gene chunk on EVERY training slide (the chunk's token work
                runs once; the step's loss is the mean over slides). True is about 1.35x
                cheaper per epoch but takes n_slides times fewer optimiser steps, and was
                measurably less accurate on the demo (seed 0: unseen pcc_mean 0.330 vs 0.427).
            min_steps_per_epoch: Small gene sets repeat the gene-chunk pass within an
                epoch until an epoch has at least this many optimiser steps.
            lambda_pcc: Weight of ``1 - mean per-gene PCC`` (over the spots of the slide).
            lambda_align: Weight of the InfoNCE spot/gene alignment (0 = off).
            align_temperature: InfoNCE temperature.
            align_max_spots: Spots subsampled for InfoNCE (an n x n matrix) per step.
            checkpoint_min_spots: Training slides with more spots recompute the nuclei stage
                and the graph layers in the backward pass instead of keeping their
                activations (the same values and gradients, tested; about one extra forward
                of those stages); 0 = never. The default leaves her2st- and cSCC-sized slides
                untouched and bounds the memory of Visium-sized ones.
            dropout: Dropout everywhere.
            nuclei / graph / gene_interaction / similarity_bias: Ablation switches.
            use_token_states: Read the frozen encoder's token states when it has them (else,
                or when False, the pooled embedding is the gene's single token).
            test_context: Gene set the gene-interaction stage sees at prediction:
                ``unseen`` (the requested genes only) or ``seen+unseen`` (plus the training
                genes as context; their outputs are discarded).
            scaling: Image-feature scaling from the training spots (``feature``: per-dimension
                z-scores, the default; ``global``: centre, one common scale; ``none``), see
                ``stbench.methods._torch_utils.FeatureScaler``. Per-dimension z-scores suit
                encoders whose dimensions have different units (demo, handcrafted features,
                seed 0: unseen-gene pcc_mean 0.316 with ``feature`` vs 0.095 with ``global``);
                the input MLP ends in a LayerNorm, which bounds what outlying dimensions of
                deep features can do.
            device: ``auto`` (the harness's ``ctx.device``), ``cpu`` or ``cuda``.
            threads: Cap on torch's intra-op CPU threads during fit/predict (0 = leave as
                set). On a small CPU shared with other jobs, 1 can be many times faster.
        """

        dim: int = bounded(128, ">= 1")
        heads: int = bounded(4, ">= 1")
        graph_layers: int = bounded(2, ">= 0")
        prompt_rounds: int = bounded(2, ">= 0")
        n_text_prompts: int = bounded(4, ">= 1")
        n_visual_prompts: int = bounded(4, ">= 1")
        n_visual_context: int = bounded(4, ">= 1")
        text_layers: int = bounded(1, ">= 1")
        interaction_layers: int = bounded(1, ">= 0")
        genes_per_step: int = bounded(64, ">= 1")
        lr: float = bounded(1e-3, "> 0")
        weight_decay: float = bounded(1e-4, ">= 0")
        warmup_frac: float = bounded(0.05, "[0, 1)")
        grad_clip: float = bounded(1.0, ">= 0")
        max_epochs: int = bounded(60, ">= 1")
        max_steps: int = bounded(0, ">= 0")
        patience: int = bounded(10, ">= 1")
        patience_ratio: float = bounded(0.0, ">= 0")
        min_epochs: int = bounded(10, ">= 0")
        eval_every: int = bounded(1, ">= 1")
        shared_chunk_steps: bool = False
        min_steps_per_epoch: int = bounded(4, ">= 1")
        lambda_pcc: float = bounded(0.5, ">= 0")
        lambda_align: float = bounded(0.1, ">= 0")
        align_temperature: float = bounded(0.1, "> 0")
        align_max_spots: int = bounded(1024, ">= 1")
        checkpoint_min_spots: int = bounded(1024, ">= 0")
        dropout: float = bounded(0.1, "[0, 1)")
        nuclei: bool = True
        graph: bool = True
        gene_interaction: bool = True
        similarity_bias: bool = True
        use_token_states: bool = True
        test_context: str = "unseen"
        scaling: str = "feature"
        device: str = "auto"
        threads: int = bounded(0, ">= 0")

    @classmethod
    def needs_for(cls, config: Any = None) -> frozenset[str]:
        """``meta.needs`` less what ``config`` switches off: ``nuclei`` when
        ``config.nuclei`` is false, ``graph`` when ``config.graph`` is false or
        ``config.graph_layers`` is 0 (the harness then neither computes nor records them).

        Args:
            config: An ``AlignST.Config`` (or any object with those attributes, or a mapping);
                ``None`` gives the default config's needs.
        """
        def get(name: str, default: Any) -> Any:
            if isinstance(config, dict):
                return config.get(name, default)
            return getattr(config, name, default)

        needs = set(cls.meta.needs)
        if config is None:
            return frozenset(needs)
        if not get("nuclei", True):
            needs.discard("nuclei")
        if not get("graph", True) or int(get("graph_layers", 1)) == 0:
            needs.discard("graph")
        return frozenset(needs)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "dim": trial.suggest_categorical("dim", [128, 64, 256]),
            "graph_layers": trial.suggest_int("graph_layers", 1, 4),
            "prompt_rounds": trial.suggest_int("prompt_rounds", 1, 3),
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "lambda_pcc": trial.suggest_float("lambda_pcc", 0.0, 1.0),
            "lambda_align": trial.suggest_float("lambda_align", 0.01, 1.0, log=True),
            "genes_per_step": trial.suggest_categorical("genes_per_step", [64, 32, 128]),
        }

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.model: AlignSTModel | None = None
        self.history: list[dict[str, float]] = []
        #: The genes of the last ``predict`` (the test-time gene-interaction set, for explain).
        self.predicted_genes: list[str] = []

    # ------------------------------------------------------------------------------ checks

    def _check_config(self) -> None:
        c = self.config
        if c.test_context not in TEST_CONTEXTS:
            raise ValueError(f"alignst test_context must be one of {TEST_CONTEXTS}, "
                             f"got {c.test_context!r}")
        if c.dim % c.heads:
            raise ValueError(f"alignst dim={c.dim} must be divisible by heads={c.heads}")
        if c.n_text_prompts < 1:
            raise ValueError("alignst n_text_prompts must be >= 1")
        if c.prompt_rounds > 0 and (c.n_visual_prompts < 1 or c.n_visual_context < 1):
            raise ValueError("alignst prompt rounds need n_visual_prompts, n_visual_context >= 1")
        if c.genes_per_step < 1 or c.max_epochs < 1:
            raise ValueError("alignst genes_per_step and max_epochs must be >= 1")

    def _device(self, ctx_device: str) -> torch.device:
        want = self.config.device
        if want == "auto":
            want = ctx_device or "cpu"
        if str(want).startswith("cuda") and not torch.cuda.is_available():
            warnings.warn("alignst: CUDA requested but not available; using the CPU", stacklevel=3)
        return resolve_device(want)

    # ------------------------------------------------------------------------------ gene text

    def _fetch_text(self, genes: list[str]) -> None:
        """Cache frozen token states (and pooled embeddings) of ``genes`` not cached yet."""
        missing = [g for g in dict.fromkeys(genes) if g not in self._tokens]
        if not missing:
            return
        gt = self._gene_text
        pooled = None
        try:
            pooled = np.asarray(gt.embed(missing), dtype=np.float32)
        except RuntimeError:
            pooled = None
        if self._token_mode == "states":
            states, mask = gt.token_states(missing)
            states, mask = np.asarray(states, np.float32), np.asarray(mask, bool)
            for i, g in enumerate(missing):
                keep = mask[i]
                if not keep.any():
                    keep = np.zeros_like(keep)
                    keep[0] = True
                self._tokens[g] = torch.from_numpy(states[i][keep].copy())
                p = pooled[i] if pooled is not None else states[i][keep].mean(0)
                self._pooled[g] = torch.from_numpy(np.ascontiguousarray(p))
        else:
            if pooled is None:
                raise RuntimeError("alignst needs gene text token states or pooled embeddings")
            for i, g in enumerate(missing):
                self._tokens[g] = torch.from_numpy(pooled[i][None].copy())
                self._pooled[g] = torch.from_numpy(pooled[i].copy())

    def _init_text(self, gene_text: GeneText, genes: list[str]) -> None:
        self._gene_text = gene_text
        self._tokens: dict[str, torch.Tensor] = {}
        self._pooled: dict[str, torch.Tensor] = {}
        self._token_mode = "pooled"
        if self.config.use_token_states:
            try:
                gene_text.token_states(genes[:1])
                self._token_mode = "states"
            except (RuntimeError, NotImplementedError):
                pass
        self._fetch_text(genes)

    def _gene_batch(self, genes: list[str], pad_to: int | None = None) -> GeneBatch:
        """Padded tokens of ``genes`` (optionally padded with mask-False genes to ``pad_to``)."""
        self._fetch_text(genes)
        toks = [self._tokens[g] for g in genes]
        n = len(genes) if pad_to is None else max(pad_to, len(genes))
        t_max = max(t.shape[0] for t in toks)
        d_text = toks[0].shape[1]
        tokens = torch.zeros(n, t_max, d_text)
        tmask = torch.zeros(n, t_max, dtype=torch.bool)
        for i, t in enumerate(toks):
            tokens[i, : t.shape[0]] = t
            tmask[i, : t.shape[0]] = True
        tmask[len(genes):, 0] = True  # padding genes: one dummy token (masked as genes)
        pooled = torch.zeros(n, d_text)
        pooled[: len(genes)] = torch.stack([self._pooled[g] for g in genes])
        gmask = torch.zeros(n, dtype=torch.bool)
        gmask[: len(genes)] = True
        dev = self._dev
        return GeneBatch(tokens.to(dev), tmask.to(dev), pooled.to(dev), gmask.to(dev))

    # ------------------------------------------------------------------------------ spots

    def _has_nuclei(self, view: SlideView) -> bool:
        return view.features.get("nuclei") is not None

    def _has_graph(self, view: SlideView) -> bool:
        f = view.features
        return f.get("edges_grid") is not None or f.get("edges_knn") is not None

    def _spot_batch(self, view: SlideView, y: np.ndarray | None = None) -> SpotBatch:
        """Tensors of one slide. Reads ``view.features`` only; ``y`` is passed in by fit.

        Training and validation build a slide's batch at each use, so that only one slide's
        standardised features are alive at a time (memory bounded by the largest slide, not
        the training set); the graph, which costs more to build, is cached per slide
        (:meth:`_graph_tensors`)."""
        f = view.features
        x = self._img_scaler.transform(f["image"]).astype(np.float32)
        dev = self._dev
        batch = SpotBatch(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev))
        if self._use_nuclei:
            if self._has_nuclei(view):
                nuc, mask = self._nuclei_arrays(view)
                nuc = np.nan_to_num((nuc - self._nuc_mu) / self._nuc_sd) * mask[..., None]
                batch.nuclei = torch.from_numpy(nuc.astype(np.float32)).to(dev)
                batch.nuclei_mask = torch.from_numpy(mask).to(dev)
            else:
                self._warn_once(f"slide {view.name} has no nuclei features; nuclei stage skipped")
        if self._use_graph:
            if self._has_graph(view):
                batch.src, batch.tgt, batch.etype = self._graph_tensors(view, x.shape[0])
            else:
                self._warn_once(f"slide {view.name} has no graph edges; graph stage skipped")
        if y is not None:
            batch.y = torch.from_numpy(np.ascontiguousarray(y, np.float32)).to(dev)
        return batch

    def _graph_tensors(self, view: SlideView, n: int) -> tuple[torch.Tensor, ...]:
        """``(src, tgt, etype)`` of :func:`spot_graph` for ``view``; cached during fit."""
        cache: dict[int, tuple] | None = getattr(self, "_graphs", None)
        key = id(view.features)
        if cache is not None and key in cache and cache[key][0] is view.features:
            return cache[key][1]
        f = view.features
        arrays = spot_graph(n, f.get("edges_grid"), f.get("edges_knn"))
        tensors = tuple(torch.from_numpy(a).to(self._dev) for a in arrays)
        if cache is not None:
            cache[key] = (view.features, tensors)
        return tensors

    @staticmethod
    def _nuclei_arrays(view: SlideView) -> tuple[np.ndarray, np.ndarray]:
        nuc = np.asarray(view.features["nuclei"], np.float32)
        mask = view.features.get("nuclei_mask")
        if mask is None:  # no mask given: all-zero (or non-finite) rows are padding
            mask = np.isfinite(nuc).all(-1) & (np.abs(np.nan_to_num(nuc)).sum(-1) > 0)
        return nuc, np.asarray(mask, bool)

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            warnings.warn(f"alignst: {text}", stacklevel=3)

    # ------------------------------------------------------------------------------ fit

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        self._graphs: dict[int, tuple] | None = {}  # the fit's slide graphs (_graph_tensors)
        try:
            with torch_threads(self.config.threads):
                self._fit(train, val, ctx)
        finally:
            self._graphs = None

    def _fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        self._check_config()
        cfg = self.config
        if ctx.gene_text is None:
            raise RuntimeError("alignst needs gene text (ctx.gene_text)")
        if not train.slides or not train.genes:
            raise ValueError("alignst needs training slides and genes")
        seed_all(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self._dev = self._device(ctx.device)
        self._warned: set[str] = set()
        self._train_genes = list(train.genes)
        model = self._build(train, val, ctx)
        slides = list(train.slides)
        use_val = (val is not None and bool(val.slides) and bool(val.genes)
                   and all(v.expression is not None for v in val.slides))
        validate = None
        if use_val:
            val_y = [np.asarray(v.expression, np.float64) for v in val.slides]
            validate = lambda: self._val_score(list(val.slides), val_y, list(val.genes))  # noqa: E731
        run_epoch, self._steps_per_epoch, epochs = self._epoch_runner(model, slides, rng)
        spec = LoopSpec("alignst", epochs, cfg.patience, min_epochs=cfg.min_epochs,
                        min_delta=1e-6, eval_every=cfg.eval_every,
                        patience_ratio=cfg.patience_ratio)
        out = run_epochs(model, run_epoch, validate, spec, ctx)
        self.history = out.history
        if use_val:
            self.best_epoch_, self.best_val_pcc_ = out.best_epoch, out.best_score
        else:
            self.best_epoch_, self.best_val_pcc_ = len(self.history) - 1, float("nan")

    def _build(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> AlignSTModel:
        """Feature scalers, nuclei statistics, gene text and the model (on ``self._dev``)."""
        cfg = self.config
        x = train.stack("image").astype(np.float64)
        self._img_scaler = FeatureScaler(cfg.scaling).fit(x)
        self._use_nuclei = bool(cfg.nuclei) and all(self._has_nuclei(v) for v in train.slides)
        n_nuc = 0
        if self._use_nuclei:
            real = np.concatenate([n[m] for n, m in map(self._nuclei_arrays, train.slides)])
            if real.shape[0] == 0:
                self._use_nuclei = False
            else:
                n_nuc = real.shape[1]
                self._nuc_mu = np.nanmean(real, 0).astype(np.float32)
                self._nuc_sd = (np.nanstd(real, 0) + 1e-6).astype(np.float32)
        self._use_graph = (bool(cfg.graph) and cfg.graph_layers > 0
                           and all(self._has_graph(v) for v in train.slides))
        self._init_text(ctx.gene_text, self._train_genes + list(val.genes if val else []))
        d_text = int(next(iter(self._tokens.values())).shape[1])
        self.model_config = ModelConfig(
            d_img=int(x.shape[1]), d_text=d_text, n_nuclei_features=n_nuc, dim=cfg.dim,
            heads=cfg.heads, graph_layers=cfg.graph_layers if self._use_graph else 0,
            prompt_rounds=cfg.prompt_rounds, n_text_prompts=cfg.n_text_prompts,
            n_visual_prompts=cfg.n_visual_prompts, n_visual_context=cfg.n_visual_context,
            text_layers=cfg.text_layers,
            interaction_layers=cfg.interaction_layers if cfg.gene_interaction else 0,
            similarity_bias=cfg.similarity_bias, dropout=cfg.dropout,
            checkpoint_min_spots=cfg.checkpoint_min_spots)
        self.model = AlignSTModel(self.model_config).to(self._dev)
        return self.model

    def _epoch_runner(self, model: AlignSTModel, slides: list[SlideView],
                      rng: np.random.Generator) -> tuple[Callable[[int], float], int, int]:
        """``(run_epoch, steps per epoch, epochs)``; ``epochs`` is ``max_epochs`` capped by
        the ``max_steps`` budget.

        Default (version 1's optimisation): a step is one training slide (random order) x
        one chunk of ``genes_per_step`` training genes (chunks of a random gene permutation).
        With ``shared_chunk_steps`` a step takes its chunk on EVERY training slide (the
        chunk's token work runs once, the step's loss is the mean over slides). Either way an
        epoch visits every (slide, gene) pair once (``passes`` times, so that it has
        ``min_steps_per_epoch`` steps). AdamW with linear warm-up then cosine decay per step,
        gradient clipping.
        """
        cfg = self.config
        n_genes = len(self._train_genes)
        n_chunks = math.ceil(n_genes / cfg.genes_per_step)
        groups = 1 if cfg.shared_chunk_steps else len(slides)  # steps per gene chunk
        passes = max(1, math.ceil(cfg.min_steps_per_epoch / (n_chunks * groups)))
        steps_per_epoch = passes * n_chunks * groups
        epochs = epoch_budget(cfg.max_epochs, cfg.max_steps, steps_per_epoch)
        total = steps_per_epoch * epochs
        warmup = max(1, int(round(cfg.warmup_frac * total)))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            frac = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

        opt = _adamw(model, cfg.lr, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)

        def step(batch: list[SlideView], chunk: np.ndarray) -> float:
            opt.zero_grad(set_to_none=True)
            loss = self._step_backward(batch, sorted(chunk.tolist()), rng)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            return loss

        def run_epoch(epoch: int) -> float:
            losses = []
            if cfg.shared_chunk_steps:
                for _ in range(passes):
                    for chunk in np.array_split(rng.permutation(n_genes), n_chunks):
                        losses.append(step(slides, chunk))
            else:
                order = np.concatenate([rng.permutation(len(slides)) for _ in range(passes)])
                for si in order:
                    for chunk in np.array_split(rng.permutation(n_genes), n_chunks):
                        losses.append(step([slides[si]], chunk))
            return float(np.mean(losses))

        return run_epoch, steps_per_epoch, epochs

    def _step_backward(self, slides: list[SlideView], cols: list[int],
                       rng: np.random.Generator) -> float:
        """Back-propagate the mean over the training slides of :meth:`_loss` on the gene
        columns ``cols``; returns that mean.

        The chunk's token work (:meth:`AlignSTModel.prepare_genes`) runs once; each slide's
        loss / n_slides is back-propagated as soon as it is computed (the token graph is
        retained until the last slide), so only ONE slide's activations are alive at a time:
        the same gradients as back-propagating the mean, with memory bounded by the largest
        slide instead of the sum of all training slides.
        """
        gb = self._gene_batch([self._train_genes[c] for c in cols])
        tokens = self.model.prepare_genes(gb)
        total = 0.0
        for i, view in enumerate(slides):
            s = self._spot_batch(view, view.expression)
            loss = self._loss(s, gb, tokens, cols, rng) / len(slides)
            loss.backward(retain_graph=i + 1 < len(slides))
            total += float(loss.detach())
        return total

    def _loss(self, s: SpotBatch, gb: GeneBatch, tokens: GeneTokens, cols: list[int],
              rng: np.random.Generator) -> torch.Tensor:
        cfg = self.config
        y = s.y[:, cols]
        pred, aux = self.model(s, gb, tokens)
        loss = torch.mean((pred - y) ** 2)
        if cfg.lambda_pcc > 0:
            loss = loss + cfg.lambda_pcc * (1.0 - pcc_per_gene(pred, y).mean())
        if cfg.lambda_align > 0:
            z = aux["z"]
            if z.shape[0] > cfg.align_max_spots:
                keep = torch.from_numpy(np.sort(rng.choice(z.shape[0], cfg.align_max_spots,
                                                           replace=False))).to(z.device)
                z, y = z[keep], y[keep]
            loss = loss + cfg.lambda_align * alignment_loss(z, aux["w"], y, cfg.align_temperature)
        return loss

    def _context(self, genes: list[str]) -> list[str]:
        """Requested genes (deduplicated, in order) + context genes per ``test_context``."""
        genes = list(dict.fromkeys(genes))
        if self.config.test_context == "seen+unseen":
            have = set(genes)
            genes += [g for g in self._train_genes if g not in have]
        return genes

    @torch.no_grad()
    def _val_score(self, views: list[SlideView], ys: list[np.ndarray], genes: list[str]) -> float:
        self.model.eval()
        gb = self._gene_batch(self._context(genes))
        tokens = self.model.prepare_genes(gb)
        scores = []
        for view, y in zip(views, ys):
            pred, _ = self.model(self._spot_batch(view), gb, tokens)
            scores.append(mean_gene_pcc(y, pred[:, : len(genes)].double().cpu().numpy()))
        return float(np.mean(scores))

    # ------------------------------------------------------------------------------ predict

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        with torch_threads(self.config.threads):
            return self._predict(bundle, genes)

    @torch.no_grad()
    def _predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("alignst: call fit before predict")
        genes = list(genes)
        if not genes:
            return np.zeros((bundle.n_spots, 0), dtype=np.float32)
        self.model.eval()
        unique = list(dict.fromkeys(genes))
        self.predicted_genes = unique
        gb = self._gene_batch(self._context(unique))
        tokens = self.model.prepare_genes(gb)
        cols = [unique.index(g) for g in genes]
        out = []
        for view in bundle.slides:
            pred, _ = self.model(self._spot_batch(view), gb, tokens)
            out.append(pred[:, cols].float().cpu().numpy())
        if not out:
            return np.zeros((0, len(genes)), dtype=np.float32)
        return np.concatenate(out, 0).astype(np.float32)

    @torch.no_grad()
    def forward_slide(self, view: SlideView, genes: list[str]
                      ) -> tuple[np.ndarray, dict, list[str]]:
        """Predictions and attention maps for one slide (for :mod:`.interpret`).

        Returns ``(pred (n, len(context)), aux as numpy, context genes)``; the first
        ``len(unique genes)`` columns are the requested genes.
        """
        if self.model is None:
            raise RuntimeError("alignst: call fit before explain")
        self.model.eval()
        context = self._context(genes)
        pred, aux = self.model(self._spot_batch(view), self._gene_batch(context))
        return (pred.cpu().numpy(), {k: v.detach().cpu().numpy() for k, v in aux.items()},
                context)

    # ------------------------------------------------------------------------------ explain

    def explain(self, bundle: Bundle, gene: str, out_dir: str | Path, **kwargs: Any) -> list[Path]:
        """Interpretability plots for ``gene`` (see :func:`.interpret.explain`)."""
        from .interpret import explain

        return explain(self, bundle, gene, out_dir, **kwargs)

    def n_parameters(self) -> int:
        """Trainable parameters of the fitted model."""
        if self.model is None:
            return 0
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
