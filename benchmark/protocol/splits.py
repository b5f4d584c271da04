"""Slide folds and gene splits.

Slide folds decide which sections train, validate and test; gene splits decide which panel
genes are seen in training and which are held out as unseen (the zero-shot track). Every
statistic that a split uses (``top_mean``) comes from TRAINING slides only; validation genes
for model selection are drawn from the seen genes, never from the unseen ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stbench.errors import ConfigError, DataError

SLIDE_SPLITS = ("loso", "lopo", "holdout", "kfold")
GENE_SPLITS = ("random", "top_mean", "kfold", "file", "none")


@dataclass(frozen=True)
class SlideFold:
    """One outer fold: disjoint training, validation and test sections."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"fold": self.index, "train": list(self.train), "val": list(self.val),
                "test": list(self.test)}


@dataclass(frozen=True)
class GeneSplit:
    """Which panel genes are seen (trainable) and unseen (evaluated, zero-shot).

    ``val`` is a subset of ``seen`` held out from fitting for model selection.
    """

    index: int
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    val: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fit(self) -> tuple[str, ...]:
        """Seen genes minus the validation genes: what a zero-shot method fits on."""
        val = set(self.val)
        return tuple(g for g in self.seen if g not in val)


def slide_folds(
    slides: Sequence[tuple[str, str]],
    name: str,
    *,
    seed: int,
    test: Sequence[str] = (),
    val: Sequence[str] = (),
    n_val_slides: int = 1,
    k: int = 5,
) -> list[SlideFold]:
    """Build the slide folds of a split.

    Args:
        slides: (section name, patient) pairs in dataset order.
        name: ``loso`` (leave one section out), ``lopo`` (leave one patient out),
            ``holdout`` (``test`` sections, optional ``val`` sections), ``kfold`` (``k`` folds
            over patients).
        seed: Seeds the draw of validation slides from the training side.
        test: Test sections for ``holdout``.
        val: Validation sections for ``holdout``; drawn from the training side when empty.
        n_val_slides: How many validation sections to draw when not given.
        k: Number of patient folds for ``kfold``.
    """
    names = [s for s, _ in slides]
    patient_of = dict(slides)
    patients = list(dict.fromkeys(p for _, p in slides))
    if name == "loso":
        tests = [[s] for s in names]
    elif name == "lopo":
        if len(patients) < 2:
            raise ConfigError("split=lopo needs at least two patients",
                              fix="use split=loso or split=holdout")
        tests = [[s for s in names if patient_of[s] == p] for p in patients]
    elif name == "kfold":
        if k < 2 or k > len(patients):
            raise ConfigError(f"split=kfold needs 2 <= split.k <= {len(patients)} (patients)",
                              fix=f"set split.k between 2 and {len(patients)}")
        rng = np.random.default_rng(seed)
        order = [patients[i] for i in rng.permutation(len(patients))]
        groups = [order[i::k] for i in range(k)]
        tests = [[s for s in names if patient_of[s] in set(g)] for g in groups]
    elif name == "holdout":
        if not test:
            raise ConfigError("split=holdout needs split.test=[...]",
                              fix=f"e.g. split.test=[{names[-1]}]")
        unknown = [t for t in list(test) + list(val) if t not in patient_of]
        if unknown:
            raise ConfigError(f"unknown sections {unknown} in split.test/split.val",
                              fix=f"choose from {names}")
        if set(test) & set(val):
            raise ConfigError("split.test and split.val overlap", fix="make them disjoint")
        tests = [list(test)]
    else:
        raise ConfigError(f"unknown split {name!r}", fix=f"use one of {', '.join(SLIDE_SPLITS)}")

    folds = []
    for i, test_slides in enumerate(tests):
        rest = [s for s in names if s not in test_slides]
        if name == "holdout" and val:
            val_slides = list(val)
        else:
            rng = np.random.default_rng([seed, i])
            n_val = min(n_val_slides, max(len(rest) - 1, 0))
            val_slides = [rest[j] for j in sorted(rng.choice(len(rest), n_val, replace=False))]
        train = [s for s in rest if s not in val_slides]
        if not train:
            raise ConfigError(f"fold {i} of split={name} leaves no training section",
                              fix="use more sections or fewer validation sections")
        folds.append(SlideFold(i, tuple(train), tuple(val_slides), tuple(test_slides)))
    return folds


def read_gene_list(path: str | Path, what: str) -> list[str]:
    """Read one gene symbol a line (blank lines and ``#`` comments ignored)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"{what} file not found", where=str(p), fix="check the path") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{what} file is a directory", where=str(p),
                        fix="pass a text file with one gene symbol a line") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} file is not UTF-8 text", where=str(p),
                        fix="write one gene symbol a line") from exc
    except OSError as exc:
        raise DataError(f"cannot read the {what} file ({exc.strerror or exc})", where=str(p),
                        fix="check the path and its permissions") from exc
    genes = [ln.split("#", 1)[0].strip() for ln in lines]
    genes = [g for g in genes if g]
    if not genes:
        raise DataError(f"{what} file lists no genes", where=str(p),
                        fix="write one gene symbol a line")
    dupes = sorted({g for g in genes if genes.count(g) > 1})
    if dupes:
        raise DataError(f"{what} file repeats genes {dupes[:5]}", where=str(p),
                        fix="list each gene once")
    return genes


def gene_splits(
    panel: Sequence[str],
    train_mean: np.ndarray,
    name: str,
    *,
    seed: int,
    n_unseen: float = 0.25,
    k: int = 4,
    unseen_file: str | None = None,
    val_fraction: float = 0.2,
    with_val: bool = True,
) -> list[GeneSplit]:
    """Split the panel into seen and unseen genes.

    Args:
        panel: Panel genes.
        train_mean: Mean expression of each panel gene over TRAINING spots (``top_mean``).
        name: ``random`` (seeded), ``top_mean`` (the most expressed genes unseen, as SGN),
            ``kfold`` (every gene unseen exactly once over ``k`` splits), ``file``
            (``unseen_file``), or ``none`` (no unseen genes: the supervised track).
        n_unseen: Number of unseen genes (>= 1) or a fraction of the panel (< 1).
        val_fraction: Fraction of seen genes held out for model selection.
        with_val: Draw validation genes (zero-shot methods) or not.
    """
    panel = list(panel)
    if name not in GENE_SPLITS:
        raise ConfigError(f"unknown gene split {name!r}",
                          fix=f"use genes.split= one of {', '.join(GENE_SPLITS)}")
    count = int(round(n_unseen * len(panel))) if n_unseen < 1 else int(n_unseen)
    if name == "none":
        unseen_sets = [[]]
    elif name == "random":
        rng = np.random.default_rng(seed)
        unseen_sets = [[panel[i] for i in sorted(rng.choice(len(panel), min(count, len(panel)), replace=False))]]
    elif name == "top_mean":
        order = np.argsort(-np.asarray(train_mean), kind="stable")
        unseen_sets = [[panel[i] for i in sorted(order[:count])]]
    elif name == "kfold":
        if k < 2 or k > len(panel):
            raise ConfigError(f"genes.split=kfold needs 2 <= genes.k <= {len(panel)}",
                              fix="set genes.k, e.g. genes.k=4")
        perm = np.random.default_rng(seed).permutation(len(panel))
        unseen_sets = [[panel[i] for i in sorted(perm[j::k])] for j in range(k)]
    else:
        if not unseen_file:
            raise ConfigError("genes.split=file needs genes.unseen_file=PATH",
                              fix="write one symbol a line and pass genes.unseen_file=PATH")
        wanted = read_gene_list(unseen_file, "unseen-genes")
        missing = [g for g in wanted if g not in set(panel)]
        if missing:
            raise ConfigError(
                f"{len(missing)} unseen genes are not in the panel: {missing[:5]}",
                where=str(unseen_file),
                fix="list only panel genes (see the panel in the result JSON) or change genes.panel",
            )
        unseen_sets = [wanted]

    splits = []
    for i, unseen in enumerate(unseen_sets):
        unseen_set = set(unseen)
        seen = [g for g in panel if g not in unseen_set]
        if name != "none" and not unseen:
            raise ConfigError("the gene split leaves no unseen gene",
                              fix="raise genes.n_unseen or use genes.split=none")
        min_seen = 2 if with_val and name != "none" else 1
        if len(seen) < min_seen:
            raise ConfigError(f"the gene split leaves {len(seen)} seen genes",
                              fix="lower genes.n_unseen (zero-shot methods need seen genes to learn from)")
        val: list[str] = []
        if with_val and name != "none":
            n_val = min(max(1, int(round(val_fraction * len(seen)))), len(seen) - 1)
            rng = np.random.default_rng([seed, 7919, i])
            val = [seen[j] for j in sorted(rng.choice(len(seen), n_val, replace=False))]
        splits.append(GeneSplit(i, tuple(seen), tuple(unseen), tuple(val)))
    return splits
