"""The harness: one method on one dataset over every fold of a split.

Flow (one direction): dataset plugin -> slides -> normalisation -> folds (slide fold x gene
split; panel and gene statistics from TRAINING slides only) -> cached features -> method.fit on
the training bundle (seen genes only for zero-shot methods; the harness slices the matrix) ->
method.predict on test slides (expression hidden) -> evaluator -> result JSON + MLflow runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

import stbench
from stbench.features.cache import ArrayCache, cache_key
from stbench.run.checkpoints import RunCheckpoint, run_identity
from stbench.run.compute import pin_threads, seed_everything
from stbench.run.config import to_container, to_yaml
from stbench.data import Dataset, Slide
from stbench.errors import ConfigError, DataError
from stbench.features.pipeline import compute_features
from stbench.method import Bundle, FitContext, GeneText, Method, SlideView
from stbench.protocol.metrics import METRIC_LEVELS, Evaluation, evaluate, generic_pattern
from stbench.plugins import DATASETS, ENCODERS, METHODS
from stbench.protocol.preprocess import Expression, PanelSource, choose_panel, normalise, panel_source
from stbench.run.maps import fold_maps, keep_extremes
from stbench.run.progress import progress_bars
from stbench.run.portable import dataset_digest, portable_config
from stbench.run.result import RunResult, dumps, git_sha, validate_result, write_atomic
from stbench.protocol.splits import GeneSplit, SlideFold, gene_splits, slide_folds
from stbench.features.representations import representation_from_config
from stbench.run.tracking import NullTracker, Tracker, flatten
from stbench.run.tuning import apply_params, default_storage, study_name, tune

MIN_SPOTS_PER_SLIDE = 10


@dataclass
class FoldPlan:
    """One unit of work: a slide fold, the fold's panel and one gene split."""

    index: int
    slides: SlideFold
    panel: list[str]
    panel_kind: str
    genes: GeneSplit
    train_mean: np.ndarray
    train_var: np.ndarray
    absent_genes: dict[str, int] = field(default_factory=dict)

    @property
    def evaluated(self) -> list[str]:
        return list(self.genes.unseen) if self.genes.unseen else list(self.panel)


def load_slides(dataset: Dataset, min_spot_counts: int) -> list[Slide]:
    """Load the dataset, drop spots under ``min_spot_counts`` and check the sections."""
    slides = dataset.load()
    if not slides:
        raise DataError(f"dataset {dataset.card.name!r} has no section",
                        where=str(getattr(dataset.config, "root", None)),
                        fix="check dataset.root and dataset.sections")
    names = [s.name for s in slides]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"duplicate section names {dupes}", fix="give every section a unique name")
    kept = []
    for s in slides:
        if min_spot_counts > 0:
            x = s.adata.X
            totals = np.asarray(x.sum(axis=1)).ravel()
            keep = totals >= min_spot_counts
            if not keep.all():
                s = Slide(s.name, s.patient, s.adata[keep].copy(), s.image, s.microns_per_pixel,
                          s.spot_diameter_um)
        if s.n_spots < MIN_SPOTS_PER_SLIDE:
            raise DataError(f"section {s.name} has {s.n_spots} usable spots (< {MIN_SPOTS_PER_SLIDE})",
                            fix="drop it with dataset.sections=[...] or lower preprocess.min_spot_counts")
        kept.append(s)
    return kept


def plan_folds(cfg: DictConfig, slides: list[Slide], exprs: dict[str, Expression],
               source: PanelSource, trained_on: str,
               panel_filter: Callable[[list[str]], list[str]] | None = None) -> list[FoldPlan]:
    """Slide folds x gene splits, with panel and gene statistics from training slides.

    ``panel_filter`` (the gene representation's coverage) may shrink each fold's panel.
    """
    sp = cfg.split
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    folds = slide_folds([(s.name, s.patient) for s in slides], sp.name, seed=split_seed,
                        test=list(sp.test), val=list(sp.val), n_val_slides=sp.n_val_slides, k=sp.k)
    g = cfg.genes
    plans: list[FoldPlan] = []
    for fold in folds:
        train = [exprs[n] for n in fold.train]
        panel, kind = choose_panel(source, train, n_hvg=g.n_hvg)
        if panel_filter is not None:
            panel = panel_filter(list(panel))
        absent = {}
        stacked = []
        for n in fold.train:
            values, n_absent = exprs[n].select(panel)
            stacked.append(values)
        for n in fold.train + fold.val + fold.test:
            absent[n] = exprs[n].select(panel)[1]
        y = np.concatenate(stacked, axis=0).astype(np.float64)
        mean, var = y.mean(0), y.var(0)
        for gs in gene_splits(panel, mean, g.split, seed=split_seed, n_unseen=g.n_unseen, k=g.k,
                              unseen_file=g.unseen_file, val_fraction=g.val_fraction,
                              with_val=trained_on == "seen"):
            plans.append(FoldPlan(len(plans), fold, panel, kind, gs, mean, var, absent))
    return plans


def _view(slide: Slide, feats: dict[str, np.ndarray], expr: np.ndarray | None) -> SlideView:
    return SlideView(slide.name, slide.patient, feats,
                     np.asarray(slide.adata.obsm["spatial"], np.float64),
                     np.asarray(slide.adata.obsm["grid"]), expr, slide.microns_per_pixel)


def make_bundles(plan: FoldPlan, by_name: dict[str, Slide], exprs: dict[str, Expression],
                 features: dict, trained_on: str) -> tuple[Bundle, Bundle | None, Bundle, list[str]]:
    """Training, validation and test bundles for one fold.

    Zero-shot methods (``trained_on == "seen"``) get the seen-minus-validation genes on
    training slides and the validation genes on validation slides; the unseen genes'
    expression never enters a bundle. Test bundles carry no expression at all.
    """
    if trained_on == "seen":
        fit_genes, val_genes = list(plan.genes.fit), list(plan.genes.val)
    else:
        fit_genes, val_genes = list(plan.panel), list(plan.panel)
    def views(names, genes):
        return [_view(by_name[n], features[n], exprs[n].select(genes)[0]) for n in names]
    train = Bundle(views(plan.slides.train, fit_genes), fit_genes)
    val = Bundle(views(plan.slides.val, val_genes), val_genes) if plan.slides.val else None
    test = Bundle([_view(by_name[n], features[n], None) for n in plan.slides.test], [])
    return train, val, test, val_genes


@dataclass
class RunSetup:
    """What a run is, settled before any work: plugins, feature needs, representation, identity."""

    method_cls: type[Method]
    dataset_cls: type[Dataset]
    needs: frozenset[str]
    representation: Any
    identity: str

    @property
    def meta(self) -> Any:
        return self.method_cls.meta


@dataclass
class RunData:
    """The loaded sections, their normalised expression, the fold plans and the gene text."""

    dataset: Dataset
    slides: list[Slide]
    exprs: dict[str, Expression]
    plans: list[FoldPlan]
    gene_text: dict[tuple[str, ...], GeneText]

    @property
    def by_name(self) -> dict[str, Slide]:
        return {s.name: s for s in self.slides}


def run(cfg: DictConfig, json_path: str | None = None, progress: bool | None = None) -> dict:
    """Run ``cfg.method`` on ``cfg.dataset`` over every fold; return the result dict.

    The result JSON is written (atomically) only after every fold succeeded; a failure
    marks the MLflow runs FAILED and writes no result.
    """
    started = time.perf_counter()
    pin_threads(cfg.threads if cfg.threads > 0 else None)
    seed_everything(cfg.seed)
    setup = _setup(cfg)
    checkpoint = RunCheckpoint(cfg.tracking.dir, setup.identity)
    if cfg.resume:
        done = checkpoint.load_result()
        if done is not None:
            if json_path:
                write_atomic(json_path, dumps(done))
            done["skipped"] = "already complete with the same identity (resume=false reruns it)"
            return done
    data = _load(cfg, setup)
    tracker = _tracker(cfg)
    tracker.fail_stale(setup.identity)
    parent = tracker.start(f"{setup.meta.name}-{cfg.dataset.name}-{cfg.split.name}",
                           {"stbench.method": setup.meta.name, "stbench.kind": setup.meta.kind,
                            "stbench.dataset": cfg.dataset.name, "stbench.split": cfg.split.name,
                            "stbench.seed": str(cfg.seed), "stbench.identity": setup.identity})
    ok = finished = False
    try:
        _log_config(cfg, setup, tracker, parent)
        cache = ArrayCache(cfg.cache.dir, enabled=cfg.cache.enabled)
        fold_results, encoder = _run_folds(cfg, setup, data, cache, checkpoint, tracker, parent,
                                           progress)
        record = _assemble(cfg, setup.meta, data.plans, fold_results, to_container(cfg),
                           time.perf_counter() - started, cache,
                           dataset=(data.dataset, data.slides), needs=setup.needs,
                           representation=setup.representation.record()
                           if setup.representation else None)
        record.identity, record.encoder = setup.identity, encoder
        validate_result(record.to_dict())
        result, text = record.to_dict(), record.to_json()
        tracker.record_result(parent, result)
        tracker.log_text(parent, text, "result.json")
        if json_path:
            write_atomic(json_path, text)
        # MLflow is told before the result checkpoint is saved: a run killed in between is
        # resumed (all folds from checkpoints), never skipped with its parent left RUNNING
        ok = True
        tracker.finish(parent, ok)
        finished = True
        checkpoint.save_result(result)
        write_atomic(Path(cfg.tracking.dir) / "results" / cfg.dataset.name /
                     f"{setup.meta.name}_s{cfg.seed}_{setup.identity[:10]}.json", text)
        result["mlflow"] = {"tracking_uri": tracker.uri, "run_id": parent or None}
        return result
    finally:
        if not finished:
            tracker.finish(parent, ok)


def _setup(cfg: DictConfig) -> RunSetup:
    """Plugins, feature needs, the gene representation and the run identity, validated before
    any data is read (the representation's digest is part of the identity)."""
    method_cls: type[Method] = METHODS.get(cfg.method.name)
    dataset_cls: type[Dataset] = DATASETS.get(cfg.dataset.name)
    meta = method_cls.meta
    if meta.kind == "zero_shot" and cfg.genes.split == "none":
        raise ConfigError(f"{meta.name} is a zero-shot method and genes.split=none leaves no unseen gene",
                          fix="use genes.split=random|top_mean|kfold|file")
    needs = method_cls.needs_for(OmegaConf.to_object(cfg.method))
    representation = (representation_from_config(
        cfg.genes, ArrayCache(cfg.cache.dir, enabled=cfg.cache.enabled))
        if "gene_text" in needs else None)
    identity = run_identity(cfg, meta.version, dataset_cls.card.version)
    if representation is not None:
        identity = hashlib.sha256(f"{identity}|{representation.digest()}".encode()).hexdigest()
    return RunSetup(method_cls, dataset_cls, needs, representation, identity)


def _load(cfg: DictConfig, setup: RunSetup) -> RunData:
    """Sections, normalised expression, fold plans, and the gene text once per panel."""
    dataset = setup.dataset_cls(OmegaConf.to_object(cfg.dataset))
    source = panel_source(cfg.genes, dataset)  # settings before any loading
    slides = load_slides(dataset, cfg.preprocess.min_spot_counts)
    exprs = {s.name: normalise(s, cfg.preprocess.target_sum, cfg.preprocess.log1p) for s in slides}
    representation = setup.representation
    plans = plan_folds(cfg, slides, exprs, source, setup.meta.trained_on,
                       representation.select_panel if representation is not None else None)
    gene_text: dict[tuple[str, ...], GeneText] = {}
    if representation is not None:  # computed once per panel (and cached across runs)
        for plan in plans:
            if tuple(plan.panel) not in gene_text:
                gene_text[tuple(plan.panel)] = representation.build(list(plan.panel))
    return RunData(dataset, slides, exprs, plans, gene_text)


def _log_config(cfg: DictConfig, setup: RunSetup, tracker: Any, parent: str) -> None:
    """The resolved configuration (local paths included: the local MLflow run keeps them)."""
    tracker.log_params(parent, flatten(to_container(cfg)))
    if setup.representation is not None:
        tracker.log_params(parent, {f"representation.{k}": str(v) for k, v in
                                    setup.representation.record().items() if k != "dropped"})
    tracker.log_text(parent, to_yaml(cfg), "config.yaml")


def _run_folds(cfg: DictConfig, setup: RunSetup, data: RunData, cache: ArrayCache,
               checkpoint: RunCheckpoint, tracker: Any, parent: str, progress: bool | None
               ) -> tuple[list[dict], dict | None]:
    """Every fold (finished ones from their checkpoints); the fold records and the encoder."""
    fold_results = []
    with progress_bars(progress) as task:
        feature_info: dict = {}
        features = compute_features(cfg, data.slides, setup.needs, cache, task, feature_info)
        fold_run = FoldRun(cfg, setup.method_cls, data.by_name, data.exprs, features, tracker,
                           parent, task)
        advance_folds = task(f"folds ({setup.meta.name})", len(data.plans))
        for plan in data.plans:
            fold = checkpoint.load_fold(plan.index) if cfg.resume else None
            if fold is None:
                fold = _run_fold(fold_run, plan, data.gene_text.get(tuple(plan.panel)))
                checkpoint.save_fold(plan.index, fold)
            else:
                fold["resumed"] = True
                _record_resumed_fold(tracker, parent, fold)
            fold_results.append(fold)
            advance_folds()
    return fold_results, feature_info.get("encoder")


def _record_resumed_fold(tracker, parent: str, fold: dict) -> None:
    """A child run holding the metrics of a fold finished by an earlier, interrupted attempt."""
    child = tracker.start(f"fold-{fold['fold']}", {"stbench.fold": str(fold["fold"]),
                                                   "stbench.resumed": "true"}, parent=parent)
    tracker.log_metrics(child, {**fold["metrics"], "runtime_s": fold["runtime_s"]})
    tracker.finish(child, True)


def _tracker(cfg: DictConfig):
    if not cfg.tracking.enabled:
        return NullTracker()
    experiment = cfg.tracking.experiment or f"stbench-{cfg.dataset.name}"
    return Tracker(cfg.tracking.uri, cfg.tracking.dir, experiment)


@dataclass
class FoldRun:
    """What one fold needs besides its plan (shared by every fold of a run)."""

    cfg: DictConfig
    method_cls: type[Method]
    by_name: dict[str, Slide]
    exprs: dict[str, Expression]
    features: dict
    tracker: Any
    parent: str
    task: Any
    fitted: dict = field(default_factory=dict)  # slide fold -> (method, tuning) of a supervised fit


def _run_fold(run: FoldRun, plan: FoldPlan, gene_text: GeneText | None) -> dict:
    """Fit (or reuse), predict and evaluate one fold; log it as a child MLflow run."""
    fold_started = time.perf_counter()
    meta, tracker = run.method_cls.meta, run.tracker
    child = tracker.start(f"fold-{plan.index}", {"stbench.fold": str(plan.index)}, parent=run.parent)
    ok = False
    try:
        train, val, test, val_genes = make_bundles(plan, run.by_name, run.exprs, run.features,
                                                   meta.trained_on)
        method, tuning, reused = _fitted_method(run, plan, train, val, val_genes, gene_text, child)
        ev, maps = _evaluate_fold(run, plan, method, test)
        runtime = time.perf_counter() - fold_started
        tracker.log_params(child, {"fold.train": ",".join(plan.slides.train),
                                   "fold.val": ",".join(plan.slides.val),
                                   "fold.test": ",".join(plan.slides.test),
                                   "fold.n_unseen": str(len(plan.genes.unseen))})
        if tuning is not None:
            tracker.log_params(child, {f"best.{k}": str(v) for k, v in tuning.best_params.items()})
        tracker.log_metrics(child, {**ev.metrics, "runtime_s": runtime})
        tracker.log_text(child, ev.per_gene.to_csv(index=False), "per_gene.csv")
        if run.cfg.explain_genes > 0 and hasattr(method, "explain") and tracker.uri:
            _explain(method, plan, test, run.exprs, run.by_name, ev.per_gene,
                     run.cfg.explain_genes, tracker, child, run.cfg.features.patch_um)
        ok = True
        return {**_fold_record(plan, ev, runtime, tuning, reused), "maps": maps}
    finally:
        tracker.finish(child, ok)


def _fitted_method(run: FoldRun, plan: FoldPlan, train: Bundle, val: Bundle | None,
                   val_genes: list[str], gene_text: GeneText | None, child: str
                   ) -> tuple[Method, Any, bool]:
    """The fold's fitted method, its tuning outcome, and whether an earlier fit was reused.

    A supervised method is trained on every panel gene, so its model does not depend on the
    gene split: it is fitted once per slide fold (seeded by the slide fold) and reused by the
    fold's other gene splits. Zero-shot methods are fitted per fold (seen genes differ).
    """
    cfg, meta = run.cfg, run.method_cls.meta
    shared = meta.trained_on == "all"
    if shared and plan.slides.index in run.fitted:
        return (*run.fitted[plan.slides.index], True)
    run.fitted.clear()  # folds come in slide-fold order: keep one fitted model at a time
    seed_everything(cfg.seed + (plan.slides.index if shared else plan.index))
    method_config = OmegaConf.to_object(cfg.method)

    def make_ctx(report=lambda value, step: None, run_id=child) -> FitContext:
        return FitContext(seed=cfg.seed, gene_text=gene_text, val_genes=val_genes,
                          device=cfg.device,
                          log_metric=lambda name, value, step: run.tracker.log_metric(
                              run_id, name, value, step),
                          progress=run.task, report=report)

    tuning = None
    if cfg.tuning.n_trials > 0:
        tuning = _tune_fold(cfg, plan, run.method_cls, method_config, train, val, make_ctx,
                            run.tracker, child)
        method_config = apply_params(method_config, tuning.best_params)
    method = run.method_cls(method_config)
    method.fit(train, val, make_ctx())
    if shared:
        run.fitted[plan.slides.index] = (method, tuning)
    return method, tuning, False


def _evaluate_fold(run: FoldRun, plan: FoldPlan, method: Method, test: Bundle
                   ) -> tuple[Evaluation, dict]:
    """Predict the evaluated genes on the test slides, score them with the evaluator, and keep
    the per-spot maps of the fold's best and worst genes (for the board's pictures)."""
    meta, evaluated = run.method_cls.meta, plan.evaluated
    y_pred = np.asarray(method.predict(test, evaluated), dtype=np.float64)
    expected = (test.n_spots, len(evaluated))
    if y_pred.shape != expected:
        raise RuntimeError(f"method {meta.name} returned predictions of shape {y_pred.shape}, "
                           f"expected {expected}")
    if not np.isfinite(y_pred).all():
        raise RuntimeError(f"method {meta.name} returned non-finite predictions")
    y_true = np.concatenate([run.exprs[n].select(evaluated)[0] for n in plan.slides.test], axis=0)
    cols = [plan.panel.index(gn) for gn in evaluated]
    slide_names = np.asarray([s.name for s in test.slides])[test.slide_index()]
    generic = np.concatenate([_generic(run.by_name[n], run.exprs[n], plan.panel)
                              for n in plan.slides.test], axis=0)
    ev = evaluate(y_true, y_pred, slide_names, evaluated, generic=generic,
                  gene_mean_train=plan.train_mean[cols], gene_var_train=plan.train_var[cols])
    maps = fold_maps(slide_names, np.concatenate([v.spatial for v in test.slides]), y_true,
                     y_pred, evaluated, ev.per_gene["pcc"].to_numpy())
    return ev, maps


def _fold_record(plan: FoldPlan, ev: Evaluation, runtime: float, tuning: Any, reused: bool) -> dict:
    """The fold's entry of the result (and of its checkpoint)."""
    def floats(frame, column):
        return [float(v) for v in frame[column]]

    return {"fold": plan.index, "slide_fold": plan.slides.index, "gene_split": plan.genes.index,
            "metrics": ev.metrics, "counts": ev.counts, "runtime_s": runtime,
            "reused_fit": reused, "tuning": tuning.as_dict() if tuning is not None else None,
            "per_gene": {"gene": list(ev.per_gene["gene"]), "pcc": floats(ev.per_gene, "pcc"),
                         "pcc_pooled": floats(ev.per_gene, "pcc_pooled"),
                         "pcc_specific": floats(ev.per_gene, "pcc_specific")},
            "per_slide": {"slide": [str(v) for v in ev.per_slide["slide"]],
                          "pcc": floats(ev.per_slide, "pcc"),
                          "pcc_specific": floats(ev.per_slide, "pcc_specific")}}


def _generic(slide: Slide, expr: Expression, panel: list[str]) -> np.ndarray:
    """The test slide's generic pattern for ``pcc_specific_mean`` (evaluator side only)."""
    totals = np.asarray(slide.adata.X.sum(axis=1)).ravel()
    return generic_pattern(expr.select(panel)[0], totals)


def _explain(method, plan, test: Bundle, exprs, by_name, per_gene, n_genes: int, tracker,
             run_id: str, patch_um: float = 112.0) -> None:
    """Interpretability PNGs (measured vs predicted maps on the H&E thumbnail, attention)
    for the ``n_genes`` best-predicted evaluated genes, logged under ``explain/``.

    Runs after prediction and evaluation: the measured maps read test expression for display
    only.
    """
    import tempfile

    genes = list(per_gene.sort_values("pcc", ascending=False)["gene"][:n_genes])
    thumbs, images, scale = {}, {}, 1.0
    for view in test.slides:
        image = by_name[view.name].image
        width, height = image.size
        scale = min(1.0, 1200 / max(width, height))
        step = max(1, int(round(1 / scale)))
        images[view.name] = image.read()  # nuclei are drawn on full-resolution patches
        thumbs[view.name] = images[view.name][::step, ::step]
        scale = 1.0 / step
    with tempfile.TemporaryDirectory() as tmp:
        for gene in genes:
            shown = Bundle([dataclasses.replace(v, expression=exprs[v.name].select([gene])[0])
                            for v in test.slides], [gene])
            for path in method.explain(shown, gene, tmp, thumbnails=thumbs, thumbnail_scale=scale,
                                       images=images, patch_um=patch_um):
                tracker.log_file(run_id, path, "explain")


def _tune_fold(cfg, plan, method_cls, method_config, train, val, make_ctx, tracker, fold_run):
    """Nested Optuna search on the fold's validation side; each trial a nested MLflow run."""
    if val is None:
        raise ConfigError(f"tuning needs validation slides, and fold {plan.index} has none",
                          fix="use split.n_val_slides=1 (or more) or tuning.n_trials=0")
    storage = cfg.tuning.storage or default_storage(cfg.tracking.dir)
    shared = cfg.tuning.seed is not None  # one study per outer fold, whatever the run's seed
    left_out = ("tuning", "tracking", "cache", "threads", "explain_genes", "resume") + \
        (("seed",) if shared else ())
    name = study_name(method_cls.meta.name, cfg.dataset.name, cfg.split.name, plan.index,
                      {"config": {k: v for k, v in to_container(cfg).items() if k not in left_out},
                       "tuning": {"n_trials": cfg.tuning.n_trials, "sampler": cfg.tuning.sampler,
                                  "seed": cfg.tuning.seed} if shared else None,
                       "train": plan.slides.train, "val": plan.slides.val,
                       "genes": plan.genes.fit, "val_genes": plan.genes.val})
    sampler_seed = (cfg.tuning.seed if shared else cfg.seed) + plan.index

    def on_trial(number: int, params: dict, score: float | None, state: str) -> None:
        run_id = tracker.start(f"trial-{number}", {"stbench.trial": str(number)}, parent=fold_run)
        tracker.log_params(run_id, {k: str(v) for k, v in params.items()})
        if score is not None:
            tracker.log_metrics(run_id, {"val_pcc_mean": score})
        tracker.finish(run_id, state == "COMPLETE" or state == "PRUNED")

    return tune(method_cls=method_cls, base_config=method_config, train=train, val=val,
                make_ctx=lambda report: make_ctx(report), n_trials=cfg.tuning.n_trials,
                storage=storage, name=name, seed=sampler_seed,
                sampler=cfg.tuning.sampler, pruner=cfg.tuning.pruner, on_trial=on_trial)


def _assemble(cfg, meta, plans: list[FoldPlan], fold_results, resolved, runtime, cache, *,
              dataset: tuple[Dataset, list[Slide]], needs: frozenset[str],
              representation: dict | None = None) -> RunResult:
    """The typed, portable result of a finished run (local paths left out)."""
    data, slides = dataset
    config, inputs = portable_config(resolved)
    fold_results = [dict(f) for f in fold_results]
    keep_extremes(fold_results)  # at most two per-spot maps per result
    names = list(fold_results[0]["metrics"])
    metrics = {m: float(np.mean([f["metrics"][m] for f in fold_results])) for m in names}
    seen_all = set.intersection(*[set(p.genes.seen) for p in plans])
    unseen_any = set().union(*[set(p.genes.unseen) for p in plans])
    first_panel = plans[0].panel
    order = {g: i for i, g in enumerate(first_panel)}
    def ordered(genes):
        return sorted(genes, key=lambda g: (order.get(g, len(order)), g))
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = None
    return RunResult(
        method=meta.name, method_kind=meta.kind, method_version=meta.version,
        trained_on="seen genes" if meta.trained_on == "seen" else "all panel genes",
        dataset=data.card.name, dataset_version=data.card.version,
        dataset_digest=dataset_digest(slides),
        split={"name": cfg.split.name, "folds": [_split_fold(p) for p in plans]},
        genes={"panel": plans[0].panel_kind, "gene_split": cfg.genes.split,
               "n_panel": len(first_panel), "seen": ordered(seen_all),
               "unseen": ordered(unseen_any),
               "evaluated_on": "unseen genes" if unseen_any else "all panel genes"},
        seed=int(cfg.seed), config=config, inputs=inputs,
        preprocess={"normalize_total": cfg.preprocess.target_sum, "log1p": cfg.preprocess.log1p,
                    "min_spot_counts": cfg.preprocess.min_spot_counts},
        features=sorted(needs),
        folds=[{**{k: f[k] for k in ("fold", "metrics", "counts", "runtime_s", "tuning",
                                     "per_gene", "per_slide")},
                "resumed": bool(f.get("resumed", False)), "maps": f.get("maps")}
               for f in fold_results],
        best_params=[f["tuning"]["best_params"] if f.get("tuning") else None for f in fold_results],
        metrics=metrics, metric_levels={m: METRIC_LEVELS.get(m, "") for m in names},
        runtime_s=runtime, stbench_version=stbench.__version__, git_sha=git_sha(),
        environment={"python": platform.python_version(), "torch": torch_version,
                     "machine": platform.machine()},
        feature_cache={"hits": cache.hits, "misses": cache.misses},
        representation=representation,
    )


def _split_fold(p: FoldPlan) -> dict:
    """One fold of the result's ``split`` record."""
    return {**p.slides.as_dict(), "fold": p.index, "slide_fold": p.slides.index,
            "gene_split": p.genes.index,
            "genes": {"panel": len(p.panel), "seen": list(p.genes.seen),
                      "unseen": list(p.genes.unseen), "val": list(p.genes.val)},
            "absent_panel_genes": p.absent_genes}
