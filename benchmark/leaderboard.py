"""Leaderboards from recorded result JSONs: compatibility, aggregation, statistics, rendering.

A *board* is a set of result JSONs (schema 1, written by ``stbench run --json``) that measure the
same thing, so that their rows may stand in one table. Two levels of agreement are checked:

* the **protocol** (:func:`protocol_of`) must be identical for every file of a board: dataset
  and its version, dataset settings (paths left out), split name and settings, gene-split name
  and settings, panel kind and size, what is evaluated (unseen genes / all panel genes) and the
  expression preprocessing. For splits whose test slides do not depend on the seed
  (``loso``, ``lopo``, ``holdout``) the test slides of every fold belong to the protocol, and
  for gene splits that do not depend on the seed (``file``, ``none``) so do the gene sets.
  Files whose protocols differ fall into different boards; :func:`select_board` refuses to mix
  them (name both files and the first field that differs) unless one board is picked by key.
* the **instance** (:func:`instance_of`): for files recorded with the *same seed*, every fold
  must have the same train / validation / test slides and the same seen / unseen genes. Seeds
  legitimately redraw validation slides and random gene splits, so files of different seeds
  may differ here; files of the same seed may not (that means the splitting code or the data
  changed: rerun one of them).

Rows are (method, configuration hash) pairs; the hash (:func:`config_hash`) covers the method
version and every method-side setting (method hyperparameters, image encoder, features,
tuning, gene-text settings, validation-gene fraction) and none of the protocol, the seed or
the bookkeeping (tracking, cache, device). Each row aggregates every (seed, fold) *unit* of its
files: metrics are mean ± sample standard deviation (``ddof=1``; no ± for a single unit) over
folds x seeds.

Statistics (the reference row is the best zero-shot row by mean ``pcc_mean``; the best row of
any kind when there is no zero-shot row):

* over genes: per-gene PCC (``per_gene.pcc``, slide-averaged) averaged over the (seed, fold)
  units of the seeds both rows share, aligned by gene, then :func:`stbench.metrics.paired_wilcoxon`;
* over folds: per-unit ``pcc_mean`` paired by (seed, fold) on the shared seeds, Wilcoxon;
* Holm (:func:`stbench.metrics.holm`) across the rows compared with the reference, separately
  for the two tests;
* a 95 % percentile bootstrap CI (:func:`stbench.metrics.bootstrap_ci`, 2000 resamples, seed 0)
  of the mean per-slide PCC, one value per test slide (averaged over the units testing it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stbench.errors import DataError, UserError

__all__ = [
    "ABLATION_KEYS",
    "KIND_LABELS",
    "KIND_ORDER",
    "LOWER_IS_BETTER",
    "Board",
    "Row",
    "Run",
    "Unit",
    "build_board",
    "config_hash",
    "find_result_files",
    "instance_of",
    "load_run",
    "load_runs",
    "make_leaderboard",
    "metric_order",
    "protocol_of",
    "render_html",
    "render_markdown",
    "select_board",
    "write_board",
]

KIND_ORDER = ("zero_shot", "control", "supervised")
KIND_LABELS = {"zero_shot": "zero-shot", "control": "control", "supervised": "supervised"}
#: Metrics where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"mse", "mae"})
#: ALIGN-ST switches whose variants form the ablation table.
ABLATION_METHOD = "alignst"
ABLATION_KEYS = ("nuclei", "prompt_rounds", "gene_interaction", "lambda_align")
#: Settings outside ``config.method`` that change what a method does (part of the row hash).
_METHOD_SIDE_GENE_KEYS = ("val_fraction", "descriptions", "text_encoder")
_PROTOCOL_GENE_KEYS = ("panel", "n_hvg", "split", "n_unseen", "k")
_SEED_FREE_SPLITS = ("loso", "lopo", "holdout")
_SEED_FREE_GENE_SPLITS = ("file", "none")
BOOTSTRAP_RESAMPLES = 2000
_KIND_COLOURS = {"zero_shot": "#4477aa", "control": "#999933", "supervised": "#aa7744"}
ALPHA = 0.05


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class Unit:
    """One (seed, fold) of one result file."""

    seed: int
    fold: int
    metrics: dict[str, float]
    gene_pcc: dict[str, float]
    slide_pcc: dict[str, float]
    runtime_s: float
    test: tuple[str, ...]


@dataclass
class Run:
    """One result JSON file."""

    path: Path
    data: dict

    @property
    def method(self) -> str:
        return str(self.data["method"])

    @property
    def kind(self) -> str:
        return str(self.data["method_kind"])

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def name(self) -> str:
        return str(self.path)

    def units(self) -> list[Unit]:
        split_folds = {int(f["fold"]): f for f in self.data["split"]["folds"]}
        out = []
        for f in self.data["folds"]:
            idx = int(f["fold"])
            test = tuple(str(s) for s in split_folds.get(idx, {}).get("test", []))
            pg = f.get("per_gene") or {}
            gene_pcc = {str(g): float(v) for g, v in zip(pg.get("gene", []), pg.get("pcc", []))
                        if v is not None and math.isfinite(float(v))}
            ps = f.get("per_slide") or {}
            slide_pcc = {}
            for label, v in zip(ps.get("slide", []), ps.get("pcc", [])):
                if v is None or not math.isfinite(float(v)):
                    continue
                slide_pcc[_slide_name(str(label), test)] = float(v)
            metrics = {k: float(v) for k, v in f["metrics"].items()
                       if v is not None and math.isfinite(float(v))}
            out.append(Unit(self.seed, idx, metrics, gene_pcc, slide_pcc,
                            float(f.get("runtime_s") or 0.0), test))
        return out


def _slide_name(label: str, test: Sequence[str]) -> str:
    """Per-slide labels are slide names, or indices into the fold's test slides."""
    if label in test:
        return label
    if label.isdigit() and int(label) < len(test):
        return test[int(label)]
    return label


def load_run(path: str | Path) -> Run:
    """Read and validate one result JSON.

    Raises:
        DataError: Unreadable, not JSON, or not a schema-1 result.
    """
    from stbench.result import validate_result

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("result JSON not found", where=str(path),
                        fix="pass an existing file written by `stbench run --json`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read result JSON: {exc}", where=str(path),
                        fix="pass a file written by `stbench run --json PATH`") from None
    if not isinstance(data, dict):
        raise DataError("result JSON is not an object", where=str(path),
                        fix="pass a file written by `stbench run --json PATH`")
    try:
        validate_result(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a valid stbench result: {exc}", where=str(path),
                        fix="rerun `stbench run ... --json PATH` with this stbench version"
                        ) from None
    return Run(path, data)


def find_result_files(sources: Iterable[str | Path]) -> tuple[list[Path], set[Path]]:
    """Expand folders to their ``*.json`` files (sorted); returns (files, explicitly named)."""
    files: list[Path] = []
    explicit: set[Path] = set()
    seen: set[Path] = set()
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(p.glob("*.json"))
        elif p.exists():
            found = [p]
            explicit.add(p.resolve())
        else:
            raise UserError("results path not found", where=str(p),
                            fix="pass a result JSON or a folder holding result JSONs")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, explicit


def load_runs(sources: Iterable[str | Path], dataset: str | None = None) -> tuple[list[Run], int]:
    """Load every result JSON under ``sources``; keep those of ``dataset``.

    Returns:
        ``(runs, n_skipped)``: files of another dataset found in folders are skipped (counted).

    Raises:
        DataError: A named file belongs to another dataset, or a file is not a valid result.
    """
    files, explicit = find_result_files(sources)
    runs, skipped = [], 0
    for f in files:
        run = load_run(f)
        if dataset is not None and run.data["dataset"] != dataset:
            if f.resolve() in explicit:
                raise DataError(f"result is for dataset {run.data['dataset']!r}, not {dataset!r}",
                                where=str(f), fix=f"pass results of {dataset} only, or use "
                                f"--dataset {run.data['dataset']}")
            skipped += 1
            continue
        runs.append(run)
    return runs, skipped


# --------------------------------------------------------------------------------------------
# Compatibility
# --------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(obj: Any, n: int = 8) -> str:
    return hashlib.sha1(_canonical(obj).encode()).hexdigest()[:n]


def _is_path_key(key: str) -> bool:
    k = key.lower()
    return k in ("root", "dir", "path", "cache") or k.endswith(("_dir", "_path", "_root", "_file"))


def protocol_of(result: dict) -> dict:
    """What every file of a board must share (see the module docstring)."""
    cfg = result.get("config") or {}
    genes_cfg = cfg.get("genes") or {}
    genes = result.get("genes") or {}
    split = result.get("split") or {}
    split_cfg = dict(cfg.get("split") or {})
    split_cfg.setdefault("name", split.get("name"))
    dataset_cfg = {k: v for k, v in (cfg.get("dataset") or {}).items() if not _is_path_key(k)}
    proto: dict[str, Any] = {
        "schema": result.get("schema"),
        "dataset": result.get("dataset"),
        "dataset_version": result.get("dataset_version"),
        "dataset_config": dataset_cfg,
        "split": split.get("name"),
        "split_config": split_cfg,
        "n_folds": len(split.get("folds") or []),
        "gene_split": genes.get("gene_split"),
        "gene_config": {k: genes_cfg.get(k) for k in _PROTOCOL_GENE_KEYS},
        "panel": genes.get("panel"),
        "n_panel": genes.get("n_panel"),
        "evaluated_on": genes.get("evaluated_on"),
        "preprocess": result.get("preprocess", cfg.get("preprocess")),
    }
    if split.get("name") in _SEED_FREE_SPLITS:
        proto["test_slides"] = [sorted(map(str, f.get("test", []))) for f in split.get("folds", [])]
    if genes.get("gene_split") in _SEED_FREE_GENE_SPLITS:
        proto["seen_genes"] = sorted(map(str, genes.get("seen") or []))
        proto["unseen_genes"] = sorted(map(str, genes.get("unseen") or []))
    return proto


def protocol_key(result: dict) -> str:
    """Short hash of :func:`protocol_of` (the board key)."""
    return _digest(protocol_of(result))


def instance_of(result: dict) -> list[dict]:
    """Slides and genes of every fold (must agree between files of the same seed)."""
    out = []
    for f in (result.get("split") or {}).get("folds") or []:
        g = f.get("genes") or {}
        out.append({"fold": f.get("fold"),
                    "test": sorted(map(str, f.get("test", []))),
                    "unseen": sorted(map(str, g.get("unseen", []))),
                    "train": sorted(map(str, f.get("train", []))),
                    "val": sorted(map(str, f.get("val", []))),
                    "seen": sorted(map(str, g.get("seen", []))),
                    "slide_fold": f.get("slide_fold"), "gene_split": f.get("gene_split")})
    return out


def method_settings(result: dict) -> dict:
    """The method-side settings hashed into the row identity."""
    cfg = result.get("config") or {}
    genes_cfg = cfg.get("genes") or {}
    return {"method": result.get("method"),
            "method_version": result.get("method_version"),
            "method_config": cfg.get("method") or {},
            "encoder": cfg.get("encoder"),
            "features": cfg.get("features"),
            "tuning": _tuning(cfg.get("tuning")),
            "genes": {k: genes_cfg.get(k) for k in _METHOD_SIDE_GENE_KEYS}}


def _tuning(tuning: Any) -> Any:
    """Tuning settings matter only when tuning ran (``n_trials > 0``)."""
    if isinstance(tuning, dict) and not tuning.get("n_trials"):
        return {"n_trials": 0}
    return tuning


def config_hash(result: dict) -> str:
    """Short hash of :func:`method_settings`: rows are (method, config hash)."""
    return _digest(method_settings(result))


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                return sub, a.get(k, "<absent>"), b.get(k, "<absent>")
            d = _first_difference(a[k], b[k], sub)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if all(not isinstance(x, (dict, list)) for x in a + b):
            if a == b:
                return None
            only_a = sorted(set(map(str, a)) - set(map(str, b)))
            only_b = sorted(set(map(str, b)) - set(map(str, a)))
            if not only_a and not only_b:
                return path, f"order {_short(a, 30)}", f"order {_short(b, 30)}"
            return (path, f"{len(a)} items, {len(only_a)} only here {_short(only_a[:3], 40)}",
                    f"{len(b)} items, {len(only_b)} only here {_short(only_b[:3], 40)}")
        if len(a) != len(b):
            return path, f"{len(a)} items", f"{len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (path, a, b)


def _short(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else _canonical(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def describe_difference(a: Any, b: Any) -> str:
    d = _first_difference(a, b)
    if d is None:
        return "nothing"
    where, va, vb = d
    return f"{where} ({_short(va)} vs {_short(vb)})"


def select_board(runs: Sequence[Run], board: str | None = None
                 ) -> tuple[str, list[Run], dict[str, int]]:
    """Group runs by protocol key and return the one board to render.

    Args:
        runs: Loaded runs (one dataset).
        board: A board key (or a prefix of one) choosing among several protocol groups.

    Returns:
        ``(key, runs of that board, {key: number of files} for every group)``.

    Raises:
        UserError: Several protocols and no ``board``; unknown ``board``; two files of the same
            seed whose folds or gene sets differ; two files of the same row and seed.
    """
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(protocol_key(r.data), []).append(r)
    sizes = {k: len(v) for k, v in groups.items()}
    listing = ", ".join(f"{k} ({n} file{'s' * (n != 1)})" for k, n in sizes.items())
    if board is None:
        if len(groups) > 1:
            (ka, ra), (kb, rb) = list(groups.items())[:2]
            a, b = ra[0], rb[0]
            diff = describe_difference(protocol_of(a.data), protocol_of(b.data))
            raise UserError(
                f"incompatible results: {a.name} and {b.name} differ in {diff}",
                fix=f"keep only comparable results (same dataset version, split, gene split, "
                    f"panel, preprocessing), or pick one board with --board KEY; boards: {listing}")
        key = next(iter(groups))
    else:
        matches = [k for k in groups if k.startswith(board)]
        if len(matches) != 1:
            raise UserError(f"board {board!r} {'is ambiguous' if matches else 'not found'}",
                            fix=f"pass one of: {listing}")
        key = matches[0]
    chosen = groups[key]
    _check_instances(chosen)
    return key, chosen, sizes


def _check_instances(runs: Sequence[Run]) -> None:
    by_seed: dict[int, Run] = {}
    by_identity: dict[tuple, Run] = {}
    for r in runs:
        ident = (r.method, config_hash(r.data), r.seed)
        if ident in by_identity:
            other = by_identity[ident]
            raise UserError(
                f"duplicate results: {other.name} and {r.name} are both {r.method} "
                f"[{ident[1]}] with seed {r.seed}",
                fix="remove one of them (a row averages distinct seeds)")
        by_identity[ident] = r
        first = by_seed.setdefault(r.seed, r)
        if first is not r and instance_of(first.data) != instance_of(r.data):
            diff = describe_difference({"folds": instance_of(first.data)},
                                       {"folds": instance_of(r.data)})
            raise UserError(
                f"incompatible results: {first.name} and {r.name} have seed {r.seed} but "
                f"different folds or genes: {diff}",
                fix="rerun one of them with the current stbench and data (same seed, same split "
                    "and gene split), or remove one")


# --------------------------------------------------------------------------------------------
# Aggregation and statistics
# --------------------------------------------------------------------------------------------


@dataclass
class Stat:
    """A mean ± std over units."""

    mean: float
    std: float
    n: int


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return Stat(float("nan"), float("nan"), 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


@dataclass
class Row:
    """One (method, configuration) of a board."""

    method: str
    kind: str
    config_hash: str
    runs: list[Run]
    settings: dict
    units: list[Unit] = field(default_factory=list)
    metrics: dict[str, Stat] = field(default_factory=dict)
    runtime: Stat = field(default_factory=lambda: Stat(float("nan"), float("nan"), 0))
    params: dict[str, Any] = field(default_factory=dict)
    ci: tuple[float, float] | None = None
    is_reference: bool = False
    delta: float | None = None
    p_gene: float | None = None
    p_gene_holm: float | None = None
    n_genes: int = 0
    p_fold: float | None = None
    p_fold_holm: float | None = None
    n_folds: int = 0

    @property
    def row_id(self) -> str:
        return f"{self.method}-{self.config_hash}"

    @property
    def label(self) -> str:
        return f"{self.method} [{self.config_hash}]"

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def method_config(self) -> dict:
        return self.settings.get("method_config") or {}

    def gene_pcc(self, seeds: Iterable[int] | None = None) -> dict[str, float]:
        """Per-gene PCC averaged over the units of ``seeds`` (all seeds by default)."""
        keep = None if seeds is None else set(seeds)
        acc: dict[str, list[float]] = {}
        for u in self.units:
            if keep is None or u.seed in keep:
                for g, v in u.gene_pcc.items():
                    acc.setdefault(g, []).append(v)
        return {g: float(np.mean(v)) for g, v in acc.items()}

    def slide_pcc(self) -> dict[str, float]:
        """Per-slide PCC averaged over the units testing the slide."""
        acc: dict[str, list[float]] = {}
        for u in self.units:
            for s, v in u.slide_pcc.items():
                acc.setdefault(s, []).append(v)
        return {s: float(np.mean(v)) for s, v in acc.items()}

    def unit_metric(self, name: str, seeds: Iterable[int] | None = None
                    ) -> dict[tuple[int, int], float]:
        """``metric`` of every (seed, fold) unit of ``seeds`` (all by default)."""
        keep = None if seeds is None else set(seeds)
        return {(u.seed, u.fold): u.metrics[name] for u in self.units
                if name in u.metrics and (keep is None or u.seed in keep)}


@dataclass
class Board:
    """A rendered-ready leaderboard."""

    dataset: str
    key: str
    protocol: dict
    rows: list[Row]
    metrics: list[str]
    metric_levels: dict[str, str]
    reference: Row | None
    reference_note: str
    ablations: list[dict]
    boards: dict[str, int]
    n_skipped: int = 0
    sources: list[str] = field(default_factory=list)

    def rows_of(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]

    @property
    def kinds(self) -> list[str]:
        extra = sorted({r.kind for r in self.rows} - set(KIND_ORDER))
        return [k for k in (*KIND_ORDER, *extra) if any(r.kind == k for r in self.rows)]


def metric_order(names: Iterable[str]) -> list[str]:
    """Metric names in the evaluator's order (unknown names last, sorted)."""
    from stbench.metrics import METRIC_LEVELS

    names = set(names)
    known = [m for m in METRIC_LEVELS if m in names]
    return known + sorted(names - set(known))


def _level(name: str, recorded: dict[str, str]) -> str:
    from stbench.metrics import metric_level

    try:
        return metric_level(name)
    except KeyError:
        return recorded.get(name) or "(level not documented)"


def _plugin_defaults(method: str) -> dict | None:
    import dataclasses

    try:
        from stbench.plugins import METHODS

        cls = METHODS.get(method)
        cfg_cls = getattr(cls, "Config", None)
        if cfg_cls is None or not dataclasses.is_dataclass(cfg_cls):
            return None
        return json.loads(_canonical(dataclasses.asdict(cfg_cls())))
    except Exception:  # noqa: BLE001 - the plugin may be absent where the board is built
        return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _key_params(rows: list[Row]) -> None:
    """Settings that tell rows apart: method settings off the plugin defaults, and any
    method-side setting that varies between rows of the same method or across the board."""
    flat = {r.row_id: _flatten({k: v for k, v in r.settings.items()
                                if k not in ("method", "method_version", "method_config")})
            for r in rows}
    board_varying = {k for k in set().union(*flat.values())
                     if len({_canonical(f.get(k)) for f in flat.values()}) > 1}
    defaults_cache: dict[str, dict | None] = {}
    for r in rows:
        same = [x for x in rows if x.method == r.method]
        mflat = {x.row_id: _flatten(x.method_config) for x in same}
        varying = {k for k in set().union(*mflat.values())
                   if len({_canonical(f.get(k)) for f in mflat.values()}) > 1}
        if r.method not in defaults_cache:
            defaults_cache[r.method] = _plugin_defaults(r.method)
        defaults = _flatten(defaults_cache[r.method] or {})
        mine = mflat[r.row_id]
        params = {}
        for k in sorted(mine):
            if k == "name":
                continue
            off_default = (bool(defaults) and k in defaults
                           and _canonical(defaults[k]) != _canonical(mine[k]))
            if k in varying or off_default:
                params[k] = mine[k]
        for k in sorted(board_varying):
            params[k] = flat[r.row_id].get(k)
        r.params = params


def _p(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def paired_gene_test(a: Row, b: Row) -> tuple[float, int, float]:
    """Wilcoxon over genes of per-gene PCC (mean over the shared seeds' units).

    Returns ``(p, n_genes, mean difference a - b)``; ``p`` is NaN with fewer than 2 genes.
    """
    from stbench.metrics import paired_wilcoxon

    seeds = set(a.seeds) & set(b.seeds)
    ga, gb = a.gene_pcc(seeds), b.gene_pcc(seeds)
    common = sorted(set(ga) & set(gb))
    if not common:
        return float("nan"), 0, float("nan")
    xa = np.array([ga[g] for g in common])
    xb = np.array([gb[g] for g in common])
    diff = float(np.mean(xa - xb))
    if len(common) < 2:
        return float("nan"), len(common), diff
    return paired_wilcoxon(xa, xb)[1], len(common), diff


def paired_fold_test(a: Row, b: Row, metric: str = "pcc_mean") -> tuple[float, int]:
    """Wilcoxon over (seed, fold) units of ``metric`` on the shared seeds."""
    from stbench.metrics import paired_wilcoxon

    seeds = set(a.seeds) & set(b.seeds)
    ua, ub = a.unit_metric(metric, seeds), b.unit_metric(metric, seeds)
    common = sorted(set(ua) & set(ub))
    if len(common) < 2:
        return float("nan"), len(common)
    return paired_wilcoxon([ua[k] for k in common], [ub[k] for k in common])[1], len(common)


def _holm_with_gaps(values: list[float | None]) -> list[float | None]:
    from stbench.metrics import holm

    idx = [i for i, v in enumerate(values) if v is not None]
    out: list[float | None] = [None] * len(values)
    if idx:
        adj = holm([values[i] for i in idx])
        for i, v in zip(idx, adj):
            out[i] = float(v)
    return out


def _significance(rows: list[Row], ref: Row | None) -> None:
    if ref is None:
        return
    ref.is_reference = True
    others = [r for r in rows if r is not ref]
    for r in others:
        pg, ng, delta = paired_gene_test(r, ref)
        pf, nf = paired_fold_test(r, ref)
        r.p_gene, r.n_genes, r.p_fold, r.n_folds = _p(pg), ng, _p(pf), nf
        if "pcc_mean" in r.metrics and "pcc_mean" in ref.metrics:
            r.delta = r.metrics["pcc_mean"].mean - ref.metrics["pcc_mean"].mean
    for r, adj in zip(others, _holm_with_gaps([r.p_gene for r in others])):
        r.p_gene_holm = adj
    for r, adj in zip(others, _holm_with_gaps([r.p_fold for r in others])):
        r.p_fold_holm = adj


def _ablations(rows: list[Row]) -> list[dict]:
    """ALIGN-ST rows that differ only in the ablation switches, with tests against the row
    with every module on (nuclei, gene interaction, most prompt rounds, largest lambda_align)."""
    from stbench.metrics import holm

    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.method != ABLATION_METHOD:
            continue
        rest = dict(r.settings)
        rest["method_config"] = {k: v for k, v in r.method_config.items() if k not in ABLATION_KEYS}
        groups.setdefault(_digest(rest), []).append(r)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue

        def fullness(r: Row) -> tuple:
            c = r.method_config
            return (bool(c.get("nuclei")), bool(c.get("gene_interaction")),
                    float(c.get("prompt_rounds") or 0), float(c.get("lambda_align") or 0),
                    r.metrics.get("pcc_mean", Stat(-math.inf, 0, 0)).mean)

        full = max(members, key=fullness)
        entries = []
        for r in sorted(members, key=fullness, reverse=True):
            e = {"row": r, "switches": {k: r.method_config.get(k) for k in ABLATION_KEYS},
                 "is_full": r is full, "delta": None, "p_gene": None, "p_gene_holm": None,
                 "n_genes": 0}
            if r is not full:
                p, n, _ = paired_gene_test(r, full)
                e["p_gene"], e["n_genes"] = _p(p), n
                if "pcc_mean" in r.metrics and "pcc_mean" in full.metrics:
                    e["delta"] = r.metrics["pcc_mean"].mean - full.metrics["pcc_mean"].mean
            entries.append(e)
        tested = [e for e in entries if e["p_gene"] is not None]
        if tested:
            for e, adj in zip(tested, holm([e["p_gene"] for e in tested])):
                e["p_gene_holm"] = float(adj)
        out.append({"key": key, "full": full, "entries": entries})
    return out


def build_board(runs: Sequence[Run], board: str | None = None, *, dataset: str | None = None,
                n_skipped: int = 0, sources: Sequence[str] = ()) -> Board:
    """Check compatibility, aggregate rows and compute the statistics.

    Raises:
        UserError: No runs, or incompatible runs (see :func:`select_board`).
    """
    from stbench.metrics import bootstrap_ci

    if not runs:
        raise UserError(f"no result JSON for dataset {dataset!r}",
                        where=", ".join(map(str, sources)) or None,
                        fix=f"record one: stbench run --method M --dataset {dataset} "
                            f"--json leaderboards/results/{dataset}/M_s0.json")
    key, chosen, sizes = select_board(runs, board)
    by_row: dict[tuple[str, str], Row] = {}
    for r in sorted(chosen, key=lambda x: (x.method, x.seed, x.name)):
        h = config_hash(r.data)
        row = by_row.get((r.method, h))
        if row is None:
            row = by_row[(r.method, h)] = Row(r.method, r.kind, h, [], method_settings(r.data))
        row.runs.append(r)
        row.units.extend(r.units())
    rows = list(by_row.values())
    metric_names: set[str] = set()
    recorded_levels: dict[str, str] = {}
    for row in rows:
        for u in row.units:
            metric_names.update(u.metrics)
        for r in row.runs:
            recorded_levels.update(r.data.get("metric_levels") or {})
    metrics = metric_order(metric_names)
    for row in rows:
        row.metrics = {m: mean_std([u.metrics[m] for u in row.units if m in u.metrics])
                       for m in metrics}
        row.metrics = {m: s for m, s in row.metrics.items() if s.n}
        row.runtime = mean_std([float(r.data.get("runtime_s") or 0.0) for r in row.runs])
        slides = row.slide_pcc()
        if slides:
            row.ci = bootstrap_ci(list(slides.values()), n_boot=BOOTSTRAP_RESAMPLES, seed=0)
    _key_params(rows)

    def score(r: Row) -> float:
        s = r.metrics.get("pcc_mean")
        return s.mean if s and math.isfinite(s.mean) else -math.inf

    kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
    rows.sort(key=lambda r: (kind_rank.get(r.kind, len(KIND_ORDER)), r.kind, -score(r), r.method,
                             r.config_hash))
    zero_shot = [r for r in rows if r.kind == "zero_shot"]
    if zero_shot:
        ref = max(zero_shot, key=score)
        note = "best zero-shot row by mean pcc_mean"
    elif rows:
        ref = max(rows, key=score)
        note = "no zero-shot row on this board: best row by mean pcc_mean"
    else:  # pragma: no cover
        ref, note = None, ""
    _significance(rows, ref)
    proto = protocol_of(chosen[0].data)
    levels = {m: _level(m, recorded_levels) for m in metrics}
    return Board(dataset=str(chosen[0].data["dataset"]), key=key, protocol=proto, rows=rows,
                 metrics=metrics, metric_levels=levels, reference=ref, reference_note=note,
                 ablations=_ablations(rows), boards=sizes, n_skipped=n_skipped,
                 sources=[str(s) for s in sources])


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def fmt_stat(s: Stat | None, digits: int = 3) -> str:
    if s is None or not s.n:
        return "–"
    if s.n == 1:  # one fold x one seed: there is no spread to show
        return fmt_num(s.mean, digits)
    return f"{fmt_num(s.mean, digits)} ± {fmt_num(s.std, digits)}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    stars = "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < ALPHA else ""
    text = f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"
    return f"{text}{stars}"


def fmt_params(params: dict) -> str:
    if not params:
        return "defaults"
    return ", ".join(f"{k}={_short(v, 40)}" for k, v in params.items())


def fmt_ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def best_values(board: Board) -> dict[str, float]:
    """The best mean of each metric over the board (direction from :data:`LOWER_IS_BETTER`)."""
    out = {}
    for m in board.metrics:
        vals = [r.metrics[m].mean for r in board.rows if m in r.metrics]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            out[m] = min(vals) if m in LOWER_IS_BETTER else max(vals)
    return out


def describe_protocol(board: Board) -> list[tuple[str, str]]:
    p = board.protocol
    seeds = sorted({r.seed for row in board.rows for r in row.runs})
    pre = p.get("preprocess") or {}
    pre_text = ", ".join(f"{k}={v}" for k, v in pre.items()) if isinstance(pre, dict) else str(pre)
    gc = p.get("gene_config") or {}
    return [
        ("board", board.key),
        ("dataset", f"{p.get('dataset')} (version {p.get('dataset_version')})"),
        ("split", f"{p.get('split')} ({p.get('n_folds')} folds per seed)"),
        ("gene split", f"{p.get('gene_split')} (n_unseen={gc.get('n_unseen')}, k={gc.get('k')})"),
        ("panel", f"{p.get('panel')} ({p.get('n_panel')} genes)"),
        ("evaluated on", str(p.get("evaluated_on"))),
        ("preprocessing", pre_text),
        ("seeds", ", ".join(map(str, seeds))),
    ]


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(board: Board) -> str:
    """The ``<dataset>.md`` board: one table row per (method, configuration)."""
    lines = [f"# Leaderboard: {board.dataset}", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in describe_protocol(board)]
    ref = board.reference
    lines += [
        "",
        "Metrics: mean ± standard deviation over folds × seeds (sample std). Significance "
        f"against the reference row **{ref.label if ref else '-'}** ({board.reference_note}): "
        "paired Wilcoxon over genes (per-gene PCC averaged over folds and shared seeds) and "
        "over folds (per-fold pcc_mean), Holm-corrected across rows; * p<0.05, ** p<0.01, "
        "*** p<0.001. CI: 95 % bootstrap over test slides of the per-slide PCC. Lower is better "
        f"for {', '.join(sorted(LOWER_IS_BETTER))}; higher for the rest.",
        "",
    ]
    foot = {m: i + 1 for i, m in enumerate(board.metrics)}
    header = (["kind", "method", "config", "seeds × folds"]
              + [f"{m} [{foot[m]}]" for m in board.metrics]
              + ["runtime (s)", "key parameters", "Δ pcc_mean vs ref", "p genes (Holm)",
                 "p folds (Holm)", "95% CI (slides)"])
    lines.append("| " + " | ".join(header) + " |")
    aligns = ["---"] * 4 + ["---:"] * len(board.metrics) + ["---:", "---", "---:", "---:",
                                                              "---:", "---"]
    lines.append("|" + "|".join(aligns) + "|")
    best = best_values(board)
    for kind in board.kinds:
        for r in board.rows_of(kind):
            cells = [KIND_LABELS.get(kind, kind), f"**{r.method}**" if r.is_reference else r.method,
                     f"`{r.config_hash}`",
                     f"{len(r.seeds)} × {len(r.units) // max(len(r.seeds), 1)}"]
            for m in board.metrics:
                s = r.metrics.get(m)
                text = fmt_stat(s)
                if s is not None and m in best and s.mean == best[m]:
                    text = f"**{text}**"
                cells.append(text)
            cells += [fmt_stat(r.runtime, 1), _md_escape(fmt_params(r.params)),
                      "ref" if r.is_reference else fmt_num(r.delta, 4),
                      "ref" if r.is_reference else f"{fmt_p(r.p_gene_holm)} (n={r.n_genes})",
                      "ref" if r.is_reference else f"{fmt_p(r.p_fold_holm)} (n={r.n_folds})",
                      fmt_ci(r.ci)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Metric levels:", ""]
    lines += [f"{foot[m]}. `{m}`: {board.metric_levels[m]}" for m in board.metrics]
    lines += ["", "## ALIGN-ST ablation", ""]
    if not board.ablations:
        lines.append(f"No `{ABLATION_METHOD}` rows that differ only in "
                     f"{', '.join('method.' + k for k in ABLATION_KEYS)}.")
    for ab in board.ablations:
        lines += [f"Variants of `{ab['full'].config_hash}` (reference: every module on).", "",
                  "| " + " | ".join([*ABLATION_KEYS, "config", "pcc_mean", "pcc_pooled_mean",
                                     "Δ pcc_mean", "p genes (Holm)"]) + " |",
                  "|" + "|".join(["---"] * (len(ABLATION_KEYS) + 1) + ["---:"] * 4) + "|"]
        for e in ab["entries"]:
            r = e["row"]
            lines.append("| " + " | ".join(
                [*(str(e["switches"][k]) for k in ABLATION_KEYS), f"`{r.config_hash}`",
                 fmt_stat(r.metrics.get("pcc_mean")), fmt_stat(r.metrics.get("pcc_pooled_mean")),
                 "ref" if e["is_full"] else fmt_num(e["delta"], 4),
                 "ref" if e["is_full"] else f"{fmt_p(e['p_gene_holm'])} (n={e['n_genes']})"])
                + " |")
        lines.append("")
    if len(board.boards) > 1:
        others = ", ".join(f"{k} ({n} file{'s' * (n != 1)})"
                           for k, n in board.boards.items() if k != board.key)
        lines += ["", f"Other boards for this dataset (not shown; `--board KEY`): {others}."]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Plots and HTML
# --------------------------------------------------------------------------------------------


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_boxes(board: Board) -> str | None:
    """Box plot of per-gene PCC (mean over units), one box per row; base64 PNG."""
    from matplotlib.figure import Figure

    data = [(r.label, list(r.gene_pcc().values())) for r in board.rows]
    data = [(lab, v) for lab, v in data if v]
    if not data:
        return None
    fig = Figure(figsize=(7.5, 0.45 * len(data) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([v for _, v in data][::-1], vert=False, showmeans=True)
    ax.set_yticks(range(1, len(data) + 1), [lab for lab, _ in data][::-1])
    ax.axvline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("per-gene PCC (mean over folds × seeds)")
    ax.set_title(f"{board.dataset}: per-gene PCC by method")
    return _png(fig)


def plot_histograms(board: Board) -> str | None:
    """Per-row histograms of per-gene PCC on a shared axis; base64 PNG."""
    from matplotlib.figure import Figure

    data = [(r, list(r.gene_pcc().values())) for r in board.rows]
    data = [(r, v) for r, v in data if v]
    if not data:
        return None
    ncols = min(3, len(data))
    nrows = math.ceil(len(data) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.3 * nrows))
    lo = min(min(v) for _, v in data)
    bins = np.linspace(min(lo, 0.0), 1.0, 26)
    for i, (r, v) in enumerate(data):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.hist(v, bins=bins, color=_KIND_COLOURS.get(r.kind, "#777777"))
        ax.axvline(float(np.mean(v)), color="k", lw=1)
        ax.set_title(r.label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("per-gene PCC", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _template():
    import importlib.resources

    from jinja2 import Environment, select_autoescape

    text = (importlib.resources.files("stbench") / "templates" / "leaderboard.html").read_text(
        encoding="utf-8")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["stat"] = fmt_stat
    env.filters["pval"] = fmt_p
    env.filters["ci"] = fmt_ci
    env.filters["params"] = fmt_params
    env.filters["canon"] = lambda v: json.dumps(v, indent=1, sort_keys=True, default=str)
    return env.from_string(text)


def render_html(board: Board, other_pages: Sequence[str] = (), plots: bool = True) -> str:
    """The static HTML page (inline CSS, base64 PNG plots, a tiny sort script; no network)."""
    return _template().render(
        board=board, kinds=board.kinds, kind_labels=KIND_LABELS, best=best_values(board),
        lower_is_better=LOWER_IS_BETTER, ablation_keys=ABLATION_KEYS,
        ablation_method=ABLATION_METHOD, protocol=describe_protocol(board),
        box_png=plot_boxes(board) if plots else None,
        hist_png=plot_histograms(board) if plots else None,
        other_pages=list(other_pages), isfinite=lambda x: x is not None and math.isfinite(x))


def write_board(board: Board, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``<dataset>.md``, ``<dataset>.html`` and ``index.html`` (same page, with links to
    the other ``*.html`` boards in ``out_dir``) atomically."""
    from stbench.result import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{board.dataset}.md"
    page = out / f"{board.dataset}.html"
    index = out / "index.html"
    others = sorted(p.name for p in out.glob("*.html")
                    if p.name not in ("index.html", page.name))
    write_atomic(md, render_markdown(board))
    html = render_html(board, others, plots=plots)
    write_atomic(page, html)
    write_atomic(index, html)
    mask = os.umask(0)
    os.umask(mask)
    for p in (md, page, index):  # write_atomic's temporary files are 0600; boards are public
        os.chmod(p, 0o666 & ~mask)
    return {"markdown": md, "html": page, "index": index}


def make_leaderboard(dataset: str, sources: Sequence[str | Path] = (), out_dir: str | Path | None
                     = "leaderboards", board: str | None = None, recorded: bool = True,
                     plots: bool = True) -> tuple[Board, dict[str, Path]]:
    """Load, check, aggregate and (if ``out_dir``) write the board of ``dataset``.

    Args:
        dataset: Dataset name; files of other datasets found in folders are skipped.
        sources: Extra result files or folders.
        out_dir: Where to write; ``None`` writes nothing.
        board: Board key when the results fall into several protocol groups.
        recorded: Also read ``leaderboards/results/<dataset>/`` (relative to the working
            directory) when it exists.
        plots: Embed the matplotlib plots in the HTML.
    """
    srcs = [Path(s) for s in sources]
    default = Path("leaderboards") / "results" / dataset
    if recorded and default.is_dir():
        srcs.insert(0, default)
    if not srcs:
        raise UserError(f"no results to read for dataset {dataset!r}", where=str(default),
                        fix=f"record runs with `stbench run ... --dataset {dataset} --json "
                            f"{default}/NAME.json`, or pass --results DIR")
    runs, skipped = load_runs(srcs, dataset)
    b = build_board(runs, board, dataset=dataset, n_skipped=skipped, sources=[str(s) for s in srcs])
    paths = write_board(b, out_dir, plots=plots) if out_dir is not None else {}
    return b, paths
