"""Nested Optuna tuning inside one outer fold.

Trials are scored on the fold's VALIDATION slides and validation genes (drawn from the seen
genes for zero-shot methods), never on test slides or unseen genes. The best configuration is
then refit on the fold's training side and evaluated once on the test slides by the runner.

Studies are named by (method, dataset, split, fold, config hash) and stored in SQLite under
the run directory by default (``tuning.storage=postgresql://...`` for a shared database), so
an interrupted search resumes and several workers can share one study: a worker only starts a
trial while fewer than ``n_trials`` trials are finished or running, and a trial whose number
lands beyond ``n_trials`` (two workers asking at once) is recorded as surplus and not run.
A trial left RUNNING by a killed worker is marked FAIL once older than ``stale_after_s``
(6 h by default) and then run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stbench.errors import ConfigError
from stbench.method import Bundle, FitContext, Method

SURPLUS = "surplus"


@dataclass
class TuningOutcome:
    """What a finished search found."""

    best_params: dict[str, Any]
    best_value: float
    n_complete: int
    n_pruned: int
    study_name: str
    storage: str

    def as_dict(self) -> dict[str, Any]:
        return {"best_params": self.best_params, "best_value": self.best_value,
                "n_complete": self.n_complete, "n_pruned": self.n_pruned,
                "study": self.study_name, "storage": _shareable(self.storage)}


def _shareable(url: str) -> str | None:
    """The storage URL for a result: None for a local file (results hold no local path),
    else the URL without its password."""
    from stbench.run.portable import is_local_path

    return None if is_local_path(url) else redact(url)


def redact(url: str) -> str:
    """Hide a password in a storage URL."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def default_storage(tracking_dir: str) -> str:
    path = Path(tracking_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'optuna.db'}"


def study_name(method: str, dataset: str, split: str, fold: int, config: dict) -> str:
    """``method-dataset-split-fold<i>-<hash of the configuration>``."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{method}-{dataset}-{split}-fold{fold}-{digest}"


def apply_params(config: Any, params: dict[str, Any]) -> Any:
    """A copy of a method config dataclass with ``params`` set."""
    return dataclasses.replace(config, **params)


def _sampler(name: str, seed: int, method_cls: type[Method]):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = getattr(method_cls, "search_grid", None)
        if not callable(grid):
            raise ConfigError(f"method {method_cls.meta.name} defines no search_grid()",
                              fix="use tuning.sampler=tpe or random")
        return optuna.samplers.GridSampler(grid(), seed=seed)
    raise ConfigError(f"unknown tuning.sampler {name!r}", fix="use tpe, random or grid")


def _pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown tuning.pruner {name!r}", fix="use median, halving or none")


def validation_score(method: Method, val: Bundle) -> float:
    """Mean over validation genes of the slide-averaged Pearson r on validation slides."""
    from stbench.protocol.metrics import pearson_columns

    pred = np.asarray(method.predict(dataclasses.replace(val, slides=[
        dataclasses.replace(s, expression=None) for s in val.slides]), val.genes), dtype=np.float64)
    truth = val.expression().astype(np.float64)
    slide_of = val.slide_index()
    per_slide = []
    for i in np.unique(slide_of):
        r, _ = pearson_columns(truth[slide_of == i], pred[slide_of == i])
        per_slide.append(np.nan_to_num(r, nan=0.0))
    return float(np.mean(per_slide)) if per_slide else 0.0


def _fail_stale(study, stale_after_s: float) -> None:
    """Mark RUNNING trials older than ``stale_after_s`` (a killed worker's) as FAIL."""
    import datetime as dt

    from optuna.trial import TrialState

    now = dt.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.datetime_start and (now - t.datetime_start).total_seconds() > stale_after_s:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _open_study(name: str, storage: str, sampler: str, seed: int, method_cls: type[Method],
                pruner: str):
    """Create or load the study ``name``; a storage that cannot be opened is a ConfigError."""
    import optuna

    try:
        rdb = optuna.storages.RDBStorage(storage)
    except Exception as exc:  # noqa: BLE001 - any storage failure is a configuration problem
        raise ConfigError(f"cannot open the Optuna storage ({type(exc).__name__}: {exc})",
                          where=redact(storage), fix="check tuning.storage") from exc
    return optuna.create_study(study_name=name, storage=rdb, direction="maximize",
                               sampler=_sampler(sampler, seed, method_cls),
                               pruner=_pruner(pruner), load_if_exists=True)


def tune(
    *,
    method_cls: type[Method],
    base_config: Any,
    train: Bundle,
    val: Bundle,
    make_ctx: Callable[[Callable[[float, int], None]], FitContext],
    n_trials: int,
    storage: str,
    name: str,
    seed: int,
    sampler: str = "tpe",
    pruner: str = "median",
    on_trial: Callable[[int, dict, float | None, str], None] | None = None,
    stale_after_s: float = 6 * 3600,
) -> TuningOutcome:
    """Run (or resume) the study ``name`` until it holds ``n_trials`` finished trials."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not val.slides:
        raise ConfigError("tuning needs validation slides", fix="use split.n_val_slides >= 1")
    study = _open_study(name, storage, sampler, seed, method_cls, pruner)
    _fail_stale(study, stale_after_s)
    advance = make_ctx(lambda value, step: None).progress(  # a bar on a terminal only
        f"{method_cls.meta.name} trials", n_trials)
    while True:
        states = [t.state for t in study.get_trials(deepcopy=False)
                  if t.user_attrs.get(SURPLUS) is None]
        busy = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states)
        if busy >= n_trials:
            break
        trial = study.ask()
        earlier = [t for t in study.get_trials(deepcopy=False)
                   if t.number < trial.number and t.user_attrs.get(SURPLUS) is None
                   and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
        if len(earlier) >= n_trials:
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            break
        params = method_cls.search_space(trial)
        trial.set_user_attr("overrides", params)

        def report(value: float, step: int, trial=trial) -> None:
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            method = method_cls(apply_params(base_config, params))
            method.fit(train, val, make_ctx(report))
            score = validation_score(method, val)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            if on_trial:
                on_trial(trial.number, params, None, "PRUNED")
            advance()
            continue
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, score)
        if on_trial:
            on_trial(trial.number, params, score, "COMPLETE")
        advance()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {name} finished no trial")
    best = max(complete, key=lambda t: (t.value, -t.number))
    pruned = sum(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False))
    return TuningOutcome(dict(best.params if not best.user_attrs.get("overrides") else
                              best.user_attrs["overrides"]), float(best.value), len(complete),
                         pruned, name, storage)
