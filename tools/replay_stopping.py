"""Replay early-stopping rules on recorded validation curves, without training again.

Every trained zero-shot run logs ``val_pcc`` per epoch to MLflow. Given a run store (the
SQLite file under ``tracking.dir``) and a method, this reads each recorded curve and asks,
for each rule ``PATIENCE,RATIO,MIN_EPOCHS``, what the project's own stopping rule
(:class:`stbench.methods._training.EarlyStopping`) would have done: how many epochs it trains,
whether it selects the same epoch as the run's full curve did, and how much validation PCC the
earlier selection gives up. This is how the patience studies of docs/performance.md were
chosen before any rule was run for real::

    python tools/replay_stopping.py stbench-runs-her2st-full/mlflow.db --method alignst \\
        --dataset her2st --rule 10,0,10 --rule 5,0.5,5 --rule 2,0.5,2

A curve is only as long as its run trained, so a rule that waits longer than the recorded run
did is replayed up to the curve's end (its figures are then lower bounds).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stbench.methods._training import EarlyStopping


@dataclass(frozen=True)
class Rule:
    """A stopping rule as ``run_epochs`` applies it (validation every epoch)."""

    patience: int
    ratio: float = 0.0
    min_epochs: int = 0

    @classmethod
    def parse(cls, text: str) -> "Rule":
        parts = text.split(",")
        if not 1 <= len(parts) <= 3:
            raise argparse.ArgumentTypeError(f"rule {text!r}: use PATIENCE[,RATIO[,MIN_EPOCHS]]")
        try:
            return cls(int(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0,
                       int(parts[2]) if len(parts) > 2 else 0)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"rule {text!r}: {exc}") from exc


def replay(curve: np.ndarray, rule: Rule) -> tuple[int, int]:
    """``(epochs trained, selected epoch)`` of ``rule`` on one validation curve."""
    stopper = EarlyStopping(rule.patience, patience_ratio=rule.ratio)
    probe = torch.nn.Identity()
    for epoch, score in enumerate(curve):
        if stopper.step(float(score), probe, epoch) and epoch + 1 >= rule.min_epochs:
            return epoch + 1, stopper.best_step
    return len(curve), stopper.best_step


def load_curves(db: Path, method: str, dataset: str | None = None) -> list[np.ndarray]:
    """The ``val_pcc`` curves (one per fold run) of ``method``'s runs in an MLflow SQLite store.

    A fold's run is a child of the method's run (``mlflow.parentRunId``); the method and
    dataset are the parent's ``stbench.method`` / ``stbench.dataset`` tags.
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tags: dict[str, dict[str, str]] = {}
        for run, key, value in con.execute(
                "select run_uuid, key, value from tags where key in "
                "('mlflow.parentRunId', 'stbench.method', 'stbench.dataset')"):
            tags.setdefault(run, {})[key] = value
        curves = []
        runs = [r for (r,) in con.execute(
            "select distinct run_uuid from metrics where key = 'val_pcc' order by run_uuid")]
        for run in runs:
            owner = tags.get(tags.get(run, {}).get("mlflow.parentRunId", run), {})
            if owner.get("stbench.method") != method:
                continue
            if dataset is not None and owner.get("stbench.dataset") != dataset:
                continue
            values = [v for _, v in con.execute(
                "select step, value from metrics where key = 'val_pcc' and run_uuid = ? "
                "order by step, timestamp", (run,))]
            curves.append(np.asarray(values, dtype=float))
    return curves


def summarise(curves: list[np.ndarray], rule: Rule) -> dict[str, float]:
    """Mean epochs trained, share of curves selecting their first maximum, mean PCC given up."""
    outcomes = [replay(c, rule) for c in curves]
    return {
        "curves": len(curves),
        "epochs": float(np.mean([e for e, _ in outcomes])) if curves else math.nan,
        "same_selection": sum(b == int(np.argmax(c)) for (_, b), c in zip(outcomes, curves)),
        "val_lost": float(np.mean([c.max() - c[b] for (_, b), c in zip(outcomes, curves)]))
        if curves else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path, help="MLflow SQLite files (mlflow.db)")
    parser.add_argument("--method", required=True)
    parser.add_argument("--dataset", default=None, help="only runs on this dataset")
    parser.add_argument("--rule", action="append", type=Rule.parse, required=True,
                        help="PATIENCE[,RATIO[,MIN_EPOCHS]] (repeatable)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.stores if not p.is_file()]
    if missing:
        parser.exit(2, f"error: no run store at {', '.join(missing)}: pass the mlflow.db "
                       "under a run's tracking.dir\n")
    curves = [c for store in args.stores for c in load_curves(store, args.method, args.dataset)]
    print(f"{args.method}: {len(curves)} curves, recorded epochs "
          f"{np.mean([len(c) for c in curves]) if curves else 0:.1f} on average")
    for rule in args.rule:
        s = summarise(curves, rule)
        print(f"  patience {rule.patience:3d} ratio {rule.ratio:4.2f} min {rule.min_epochs:3d}: "
              f"epochs {s['epochs']:6.1f}, same selection {s['same_selection']}/{s['curves']}, "
              f"validation PCC given up {s['val_lost']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
