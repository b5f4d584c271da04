"""Board assembly: group the runs of one board into rows, aggregate them and rank them.

Rows are (method, configuration hash) pairs (:func:`stbench.report.runs.config_hash`). Each row
gets its metrics (mean ± std over units), runtime, bootstrap CI, the key parameters that tell it
apart from the other rows, and its tests against the reference row
(:mod:`stbench.report.stats`). ALIGN-ST variants that differ only in the ablation switches form
the ablation tables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stbench.errors import UserError
from stbench.report.runs import (
    Run,
    Unit,
    canonical,
    config_hash,
    digest,
    method_defaults,
    method_settings,
    protocol_of,
    select_board,
)
from stbench.report.stats import (
    Stat,
    bootstrap_mean_ci,
    holm_with_gaps,
    mean_std,
    p_or_none,
    paired_gene_test,
    significance,
    slide_ci,
)

__all__ = [
    "ABLATION_KEYS",
    "ABLATION_METHOD",
    "KIND_LABELS",
    "KIND_ORDER",
    "LOWER_IS_BETTER",
    "Board",
    "Row",
    "build_board",
    "metric_order",
]

KIND_ORDER = ("zero_shot", "control", "supervised")
KIND_LABELS = {"zero_shot": "zero-shot", "control": "control", "supervised": "supervised"}
#: Metrics where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"mse", "mae"})
#: ALIGN-ST switches whose variants form the ablation table.
ABLATION_METHOD = "alignst"
ABLATION_KEYS = ("nuclei", "prompt_rounds", "gene_interaction", "lambda_align")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


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
    ci_gene: tuple[float, float] | None = None
    n_sections: int = 0
    name: str = ""
    is_reference: bool = False
    delta: float | None = None
    p_gene: float | None = None
    p_gene_holm: float | None = None
    n_genes: int = 0
    p_fold: float | None = None
    p_fold_holm: float | None = None
    n_folds: int = 0
    p_section: float | None = None
    p_section_holm: float | None = None
    n_sections_paired: int = 0
    mde_gene: float | None = None
    mde_section: float | None = None

    @property
    def row_id(self) -> str:
        return f"{self.method}-{self.config_hash}"

    @property
    def label(self) -> str:
        """The method, with what differs from its defaults (``alignst (prompt_rounds=0)``);
        ``method [hash]`` until :func:`build_board` named the row."""
        return self.name or f"{self.method} [{self.config_hash}]"

    @property
    def links(self) -> list[tuple[int, str]]:
        """``(seed, url)`` of the MLflow runs of this row whose store is known."""
        return sorted((r.seed, r.mlflow_url) for r in self.runs if r.mlflow_url)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def method_config(self) -> dict:
        """Every method setting: the row's own (those off the defaults, see
        :func:`~stbench.report.runs.method_settings`) over the registered defaults."""
        own = self.settings.get("method_config") or {}
        return {**(method_defaults(self.method) or {}), **own}

    def gene_pcc(self, seeds: Iterable[int] | None = None) -> dict[str, float]:
        """Per-gene PCC averaged over the units of ``seeds`` (all seeds by default)."""
        keep = None if seeds is None else set(seeds)
        acc: dict[str, list[float]] = {}
        for u in self.units:
            if keep is None or u.seed in keep:
                for g, v in u.gene_pcc.items():
                    acc.setdefault(g, []).append(v)
        return {g: float(np.mean(v)) for g, v in acc.items()}

    def slide_pcc(self, seeds: Iterable[int] | None = None) -> dict[str, float]:
        """Per-slide PCC averaged over the units of ``seeds`` (all by default) testing it."""
        keep = None if seeds is None else set(seeds)
        acc: dict[str, list[float]] = {}
        for u in self.units:
            if keep is None or u.seed in keep:
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
    n_superseded: int = 0
    published: list[str] = field(default_factory=list)

    def rows_of(self, kind: str) -> list[Row]:
        """The rows of one method kind, in board order."""
        return [r for r in self.rows if r.kind == kind]

    @property
    def kinds(self) -> list[str]:
        extra = sorted({r.kind for r in self.rows} - set(KIND_ORDER))
        return [k for k in (*KIND_ORDER, *extra) if any(r.kind == k for r in self.rows)]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def metric_order(names: Iterable[str]) -> list[str]:
    """Metric names in the evaluator's order (unknown names last, sorted)."""
    from stbench.protocol.metrics import METRIC_LEVELS

    names = set(names)
    known = [m for m in METRIC_LEVELS if m in names]
    return known + sorted(names - set(known))


def _level(name: str, recorded: dict[str, str]) -> str:
    """The documented level of a metric, else the one recorded in the result files."""
    from stbench.protocol.metrics import metric_level

    try:
        return metric_level(name)
    except KeyError:
        return recorded.get(name) or "(level not documented)"


# --------------------------------------------------------------------------------------------
# Key parameters
# --------------------------------------------------------------------------------------------


def default_label(result: dict) -> str:
    """A result's row name from its own settings alone: the method, with the method settings
    that differ from the plugin's defaults (``alignst (prompt_rounds=0)``)."""
    method = str(result.get("method"))
    defaults = _flatten(method_defaults(method) or {})
    mine = _flatten((result.get("config") or {}).get("method") or {})
    return _row_name(method, {k: v for k, v in sorted(mine.items()) if k != "name"
                              and k in defaults and canonical(defaults[k]) != canonical(v)})


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _varying(flat: Iterable[dict[str, Any]]) -> set[str]:
    """Keys whose (canonical) value differs between the flattened settings."""
    flat = list(flat)
    return {k for k in set().union(*flat) if len({canonical(f.get(k)) for f in flat}) > 1}


def _key_params(rows: list[Row]) -> None:
    """Settings that tell rows apart: method settings off the plugin defaults, and any
    method-side setting that varies between rows of the same method or across the board."""
    flat = {r.row_id: _flatten({k: v for k, v in r.settings.items()
                                if k not in ("method", "method_version", "method_config")})
            for r in rows}
    board_varying = _varying(flat.values())
    for r in rows:
        same = [x for x in rows if x.method == r.method]
        mflat = {x.row_id: _flatten(x.method_config) for x in same}
        varying = _varying(mflat.values())
        defaults = _flatten(method_defaults(r.method) or {})
        mine = mflat[r.row_id]
        params, shown = {}, {}
        for k in sorted(mine):
            if k == "name":
                continue
            off_default = (bool(defaults) and k in defaults
                           and canonical(defaults[k]) != canonical(mine[k]))
            if k in varying or off_default:
                params[k] = mine[k]
            # the name: what differs from the defaults where they are known, else what varies
            if off_default or (k in varying and not (defaults and k in defaults)):
                shown[k] = mine[k]
        for k in sorted(board_varying):
            params[k] = flat[r.row_id].get(k)
            if _named_run_setting(k, params[k]):
                shown[k] = params[k]
        r.params = params
        r.name = _row_name(r.method, shown)
    _dedupe_names(rows)


def _named_run_setting(key: str, value: Any) -> bool:
    """Whether a run-level setting that varies across the board goes into a row's NAME: only
    where it is off the run defaults (``genes.representation=tfidf``; a tuned row by its trial
    count). Every varying setting is still listed under the row's key parameters."""
    if value is None:
        return False
    if key.startswith("tuning."):
        return key == "tuning.n_trials" and bool(value)
    default = _run_defaults().get(key)
    return default is None or canonical(default) != canonical(value)


@functools.lru_cache(maxsize=1)
def _run_defaults() -> dict[str, Any]:
    """The run configuration's defaults of the method-side settings outside ``config.method``
    (``genes.*``), flattened like the row settings."""
    from stbench.run.config import GenesConfig

    return _flatten({"genes": dataclasses.asdict(GenesConfig())})


def _row_name(method: str, shown: dict[str, Any]) -> str:
    """``method`` or ``method (k=v, ...)`` (nested keys by their last part)."""
    from stbench.report.runs import short_text

    text = ", ".join(f"{k.rsplit('.', 1)[-1] if k.count('.') > 1 else k}={short_text(v, 24)}"
                     for k, v in shown.items())
    return f"{method} ({text})" if text else method


def _dedupe_names(rows: list[Row]) -> None:
    """Add the config hash where two rows would otherwise read the same."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in rows:
        if counts[r.name] > 1:
            r.name = f"{r.name} [{r.config_hash}]"


# --------------------------------------------------------------------------------------------
# Ablations
# --------------------------------------------------------------------------------------------


def _fullness(r: Row) -> tuple:
    """Sort key: more ablation modules on first, then higher mean ``pcc_mean``."""
    c = r.method_config
    return (bool(c.get("nuclei")), bool(c.get("gene_interaction")),
            float(c.get("prompt_rounds") or 0), float(c.get("lambda_align") or 0),
            r.metrics.get("pcc_mean", Stat(-math.inf, 0, 0)).mean)


def _ablation_entries(members: list[Row], full: Row) -> list[dict]:
    """One entry per variant (fullest first), tested over genes against ``full`` with Holm."""
    entries = []
    for r in sorted(members, key=_fullness, reverse=True):
        e = {"row": r, "switches": {k: r.method_config.get(k) for k in ABLATION_KEYS},
             "is_full": r is full, "delta": None, "p_gene": None, "p_gene_holm": None,
             "n_genes": 0}
        if r is not full:
            p, n, _ = paired_gene_test(r, full)
            e["p_gene"], e["n_genes"] = p_or_none(p), n
            if "pcc_mean" in r.metrics and "pcc_mean" in full.metrics:
                e["delta"] = r.metrics["pcc_mean"].mean - full.metrics["pcc_mean"].mean
        entries.append(e)
    tested = [e for e in entries if e["p_gene"] is not None]
    for e, adj in zip(tested, holm_with_gaps([e["p_gene"] for e in tested])):
        e["p_gene_holm"] = adj
    return entries


def _ablations(rows: list[Row]) -> list[dict]:
    """ALIGN-ST rows that differ only in the ablation switches, with tests against the row
    with every module on (nuclei, gene interaction, most prompt rounds, largest lambda_align)."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.method != ABLATION_METHOD:
            continue
        rest = dict(r.settings)
        rest["method_config"] = {k: v for k, v in r.method_config.items() if k not in ABLATION_KEYS}
        groups.setdefault(digest(rest), []).append(r)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        full = max(members, key=_fullness)
        out.append({"key": key, "full": full, "entries": _ablation_entries(members, full)})
    return out


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _group_rows(runs: Sequence[Run]) -> list[Row]:
    """One row per (method, config hash), runs in (method, seed, path) order."""
    by_row: dict[tuple[str, str], Row] = {}
    for r in sorted(runs, key=lambda x: (x.method, x.seed, x.name)):
        h = config_hash(r.data)
        row = by_row.get((r.method, h))
        if row is None:
            row = by_row[(r.method, h)] = Row(r.method, r.kind, h, [], method_settings(r.data))
        row.runs.append(r)
        row.units.extend(r.units())
    return list(by_row.values())


def _metric_names(rows: Sequence[Row]) -> tuple[list[str], dict[str, str]]:
    """The board's metrics (in :func:`metric_order`) and the levels recorded in the files."""
    metric_names: set[str] = set()
    recorded_levels: dict[str, str] = {}
    for row in rows:
        for u in row.units:
            metric_names.update(u.metrics)
        for r in row.runs:
            recorded_levels.update(r.data.get("metric_levels") or {})
    return metric_order(metric_names), recorded_levels


def _aggregate(rows: Sequence[Row], metrics: Sequence[str]) -> None:
    """Fill each row's metric and runtime mean ± std and its per-slide bootstrap CI."""
    for row in rows:
        row.metrics = {m: mean_std([u.metrics[m] for u in row.units if m in u.metrics])
                       for m in metrics}
        row.metrics = {m: s for m, s in row.metrics.items() if s.n}
        row.runtime = mean_std([float(r.data.get("runtime_s") or 0.0) for r in row.runs])
        slides = row.slide_pcc()
        row.n_sections = len(slides)
        row.ci = slide_ci(slides)
        row.ci_gene = bootstrap_mean_ci(list(row.gene_pcc().values()))


def _score(r: Row) -> float:
    """Mean ``pcc_mean`` of a row (``-inf`` when missing)."""
    s = r.metrics.get("pcc_mean")
    return s.mean if s and math.isfinite(s.mean) else -math.inf


def _sort_rows(rows: list[Row]) -> None:
    """Board order: kind (:data:`KIND_ORDER`, then others), best ``pcc_mean`` first."""
    kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
    rows.sort(key=lambda r: (kind_rank.get(r.kind, len(KIND_ORDER)), r.kind, -_score(r),
                             r.method, r.config_hash))


def _reference(rows: Sequence[Row]) -> tuple[Row | None, str]:
    """The reference row (best zero-shot row, else best row) and a note saying which."""
    zero_shot = [r for r in rows if r.kind == "zero_shot"]
    if zero_shot:
        return max(zero_shot, key=_score), "best zero-shot row by mean pcc_mean"
    if rows:
        return max(rows, key=_score), "no zero-shot row on this board: best row by mean pcc_mean"
    return None, ""  # pragma: no cover


def build_board(runs: Sequence[Run], board: str | None = None, *, dataset: str | None = None,
                n_skipped: int = 0, sources: Sequence[str] = ()) -> Board:
    """Check compatibility, aggregate rows and compute the statistics.

    Raises:
        UserError: No runs, or incompatible runs (see :func:`stbench.report.runs.select_board`).
    """
    if not runs:
        raise UserError(f"no result JSON for dataset {dataset!r}",
                        where=", ".join(map(str, sources)) or None,
                        fix=f"record one: stbench run --method M --dataset {dataset} "
                            f"--json leaderboards/results/{dataset}/M_s0.json")
    key, chosen, sizes = select_board(runs, board)
    rows = _group_rows(chosen)
    metrics, recorded_levels = _metric_names(rows)
    _aggregate(rows, metrics)
    _key_params(rows)
    _sort_rows(rows)
    ref, note = _reference(rows)
    significance(rows, ref)
    proto = protocol_of(chosen[0].data)
    levels = {m: _level(m, recorded_levels) for m in metrics}
    return Board(dataset=str(chosen[0].data["dataset"]), key=key, protocol=proto, rows=rows,
                 metrics=metrics, metric_levels=levels, reference=ref, reference_note=note,
                 ablations=_ablations(rows), boards=sizes, n_skipped=n_skipped,
                 sources=[str(s) for s in sources])
