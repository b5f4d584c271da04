"""Named evaluation protocols: the grid of rows x seeds a board is made of, as one command.

``stbench sweep --protocol full --dataset her2st`` runs :data:`FULL`: every section held out
once (LOPO on datasets with at least three patients, else LOSO), a 4-fold gene split so that
every panel gene is unseen exactly once per seed (the same outer folds for every seed:
``split_seed=0``, so seeds vary the models only), seeds 0, 1, 2, and these rows:

* every zero-shot method with its defaults (the untuned reference) and tuned with the same
  Optuna budget (same trials, sampler and sampler seed), nested in each outer fold and scored
  on its validation sections and validation genes; the budget is spent once per outer fold and
  the chosen configuration reused for the other seeds (``tuning.seed``);
* the controls: ``seen_mean``, ``mean_expression`` and ``shuffled_text`` around every
  zero-shot method (row group ``shuffled_<method>``: the same model reading permuted
  descriptions), so each one can be tested against its own control;
* the supervised references, scored on the same unseen genes (they were trained on them).

Each row group is one Hydra multirun (:mod:`stbench.run.sweep`); complete runs are skipped, so
an interrupted protocol resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from stbench.errors import ConfigError

ZERO_SHOT_TUNABLE = ("alignst", "sgn", "genequery", "bilinear", "textknn")
CONTROLS = ("seen_mean", "mean_expression")
SUPERVISED = ("ridge", "stnet", "histogene", "bleep", "hist2st")
TUNING_TRIALS = 12


@dataclass(frozen=True)
class RowGroup:
    """Methods that share their extra settings (one multirun)."""

    name: str
    methods: tuple[str, ...]
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A named grid: common settings, seeds and row groups."""

    name: str
    description: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    groups: tuple[RowGroup, ...]

    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]


FULL = Protocol(
    name="full",
    description="every section held out once x 4 gene folds x seeds 0,1,2; default and tuned "
                "zero-shot rows, controls, supervised references",
    seeds=(0, 1, 2),
    overrides=("genes.split=kfold", "genes.k=4", "split_seed=0", "split.n_val_slides=1",
               "threads=1"),
    groups=(
        RowGroup("default", ZERO_SHOT_TUNABLE + CONTROLS),
        RowGroup("tuned", ZERO_SHOT_TUNABLE,
                 (f"tuning.n_trials={TUNING_TRIALS}", "tuning.sampler=tpe", "tuning.seed=0")),
        *(RowGroup(f"shuffled_{inner}", ("shuffled_text",), (f"method.inner={inner}",))
          for inner in ZERO_SHOT_TUNABLE),
        RowGroup("supervised", SUPERVISED),
    ),
)

PROTOCOLS = {p.name: p for p in (FULL,)}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ConfigError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}", fix=f"use one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def slide_split_for(n_patients: int) -> str:
    """LOPO where at least three patients exist (no same-patient section in training), else
    LOSO (the board says that other sections of the test patient stay in training)."""
    return "lopo" if n_patients >= 3 else "loso"


def count_patients(dataset: str, overrides: list[str]) -> int:
    """Patients in the sections the run would load (reads the dataset once)."""
    from omegaconf import OmegaConf

    from stbench.plugins import DATASETS
    from stbench.run.config import compose

    cfg = compose([f"dataset={dataset}", "method=mean_expression",
                   *[o for o in overrides if o.startswith(("dataset.", "+dataset."))]])
    slides = DATASETS.get(dataset)(OmegaConf.to_object(cfg.dataset)).load()
    return len({s.patient for s in slides})


def protocol_jobs(protocol: Protocol, dataset: str, overrides: list[str], *,
                  groups: list[str] | None = None, seeds: list[int] | None = None,
                  n_patients: int | None = None) -> list[tuple[RowGroup, list[str], list[int]]]:
    """``(group, overrides, seeds)`` per multirun of the protocol on ``dataset``.

    Args:
        protocol: The protocol.
        dataset: Registered dataset name.
        overrides: The user's extra settings (e.g. ``dataset.root=...``); they win.
        groups: Run only these row groups (default: all).
        seeds: Other seeds than the protocol's.
        n_patients: Patients of the dataset (counted from the data when None).
    """
    wanted = groups or protocol.group_names()
    unknown = sorted(set(wanted) - set(protocol.group_names()))
    if unknown:
        raise ConfigError(f"unknown row group(s) {unknown} of protocol {protocol.name!r}",
                          fix=f"use some of {', '.join(protocol.group_names())}")
    if n_patients is None:
        n_patients = count_patients(dataset, overrides)
    user_keys = {o.split("=", 1)[0] for o in overrides}
    common = [f"split={slide_split_for(n_patients)}", *protocol.overrides]
    common = [o for o in common if o.split("=", 1)[0] not in user_keys] + list(overrides)
    return [(g, common + list(g.overrides), list(seeds or protocol.seeds))
            for g in protocol.groups if g.name in wanted]
