"""Recorded runs: loading result JSONs and deciding which of them may share a board.

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
the bookkeeping (tracking, cache, device).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stbench.errors import DataError, UserError

__all__ = [
    "Run",
    "Unit",
    "canonical",
    "config_hash",
    "describe_difference",
    "digest",
    "find_result_files",
    "instance_of",
    "load_run",
    "load_runs",
    "method_settings",
    "protocol_key",
    "protocol_of",
    "select_board",
    "short_text",
]

#: Settings outside ``config.method`` that change what a method does (part of the row hash).
_METHOD_SIDE_GENE_KEYS = ("val_fraction", "descriptions", "text_encoder")
#: The gene representation (issue 16); hashed only when set, so older results keep their hash.
_REPRESENTATION_GENE_KEYS = ("representation", "embeddings", "missing")
_PROTOCOL_GENE_KEYS = ("panel", "n_hvg", "split", "n_unseen", "k")
_SEED_FREE_SPLITS = ("loso", "lopo", "holdout")
_SEED_FREE_GENE_SPLITS = ("file", "none")


# --------------------------------------------------------------------------------------------
# Records and loading
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
    """One result JSON file (``mlflow_url``: its MLflow run in the UI, where the store is
    known; ``source``: which source it was read from)."""

    path: Path
    data: dict
    mlflow_url: str | None = None
    source: str = ""

    @property
    def identity(self) -> str | None:
        return self.data.get("identity")

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
        """The (seed, fold) units of this file, non-finite values dropped."""
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
    from stbench.run.result import validate_result

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
# Identity: protocol, instance, configuration
# --------------------------------------------------------------------------------------------


def canonical(obj: Any) -> str:
    """Canonical JSON text of ``obj`` (sorted keys, no spaces, ``str`` for the rest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, n: int = 8) -> str:
    """The first ``n`` hex digits of the SHA-1 of :func:`canonical` of ``obj``."""
    return hashlib.sha1(canonical(obj).encode()).hexdigest()[:n]


def _is_path_key(key: str) -> bool:
    """Whether a dataset setting names a location (left out of the protocol)."""
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
    return digest(protocol_of(result))


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
    """The method-side settings hashed into the row identity.

    Method settings equal to the registered method's current default are left out
    (:func:`without_defaults`), so a Config field added later, whose default keeps the
    method's results (otherwise its version changes), does not split one configuration's
    results into two rows: a result recorded before the field existed and one recorded after
    hash alike.
    """
    cfg = result.get("config") or {}
    genes_cfg = cfg.get("genes") or {}
    return {"method": result.get("method"),
            "method_version": result.get("method_version"),
            "method_config": without_defaults(result.get("method"), cfg.get("method") or {}),
            "encoder": cfg.get("encoder"),
            "features": cfg.get("features"),
            "tuning": _tuning(cfg.get("tuning")),
            "genes": {**{k: genes_cfg.get(k) for k in _METHOD_SIDE_GENE_KEYS},
                      **{k: genes_cfg[k] for k in _REPRESENTATION_GENE_KEYS
                         if genes_cfg.get(k) is not None}}}


@functools.lru_cache(maxsize=None)
def _method_defaults_json(method: str) -> str | None:
    try:
        from stbench.plugins import METHODS

        config_cls = getattr(METHODS.get(method), "Config", None)
        if config_cls is None or not dataclasses.is_dataclass(config_cls):
            return None
        return canonical(dataclasses.asdict(config_cls()))
    except Exception:  # noqa: BLE001 - the plugin may be absent where the board is built
        return None


def method_defaults(method: str) -> dict | None:
    """The default ``Config`` of a registered method as plain JSON, or ``None`` (a method not
    installed here, or one without a dataclass Config)."""
    text = _method_defaults_json(str(method))
    return None if text is None else json.loads(text)


def without_defaults(method: Any, settings: dict) -> dict:
    """``settings`` less the entries equal to ``method``'s current Config defaults (all of
    them kept when the method is not registered here)."""
    defaults = method_defaults(method) if method else None
    if defaults is None:
        return dict(settings)
    return {k: v for k, v in settings.items()
            if k not in defaults or canonical(defaults[k]) != canonical(v)}


def _tuning(tuning: Any) -> Any:
    """Tuning settings matter only when tuning ran (``n_trials > 0``)."""
    if isinstance(tuning, dict) and not tuning.get("n_trials"):
        return {"n_trials": 0}
    return tuning


def config_hash(result: dict) -> str:
    """Short hash of :func:`method_settings`: rows are (method, config hash)."""
    return digest(method_settings(result))


# --------------------------------------------------------------------------------------------
# Differences and board selection
# --------------------------------------------------------------------------------------------


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first ``(path, value in a, value in b)`` where two JSON-like values differ."""
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
                return path, f"order {short_text(a, 30)}", f"order {short_text(b, 30)}"
            return (path,
                    f"{len(a)} items, {len(only_a)} only here {short_text(only_a[:3], 40)}",
                    f"{len(b)} items, {len(only_b)} only here {short_text(only_b[:3], 40)}")
        if len(a) != len(b):
            return path, f"{len(a)} items", f"{len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (path, a, b)


def short_text(v: Any, n: int = 60) -> str:
    """``v`` as text (canonical JSON unless a string), cut to ``n`` characters."""
    s = v if isinstance(v, str) else canonical(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def describe_difference(a: Any, b: Any) -> str:
    """One line naming the first field where ``a`` and ``b`` differ, or ``"nothing"``."""
    d = _first_difference(a, b)
    if d is None:
        return "nothing"
    where, va, vb = d
    return f"{where} ({short_text(va)} vs {short_text(vb)})"


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
    """Refuse duplicate (row, seed) files and same-seed files whose folds or genes differ.

    Raises:
        UserError: Naming both files (and the first difference).
    """
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
