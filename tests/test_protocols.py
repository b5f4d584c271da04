"""The named full protocol: its grid, the slide split it picks, and a tuning budget spent once
per outer fold and reused by the other seeds (never across different outer folds)."""

from __future__ import annotations

import json

import optuna
import pytest

from stbench.cli.app import main
from stbench.errors import ConfigError
from stbench.run.protocols import FULL, ZERO_SHOT_TUNABLE, get_protocol, protocol_jobs


def test_full_protocol_grid():
    jobs = protocol_jobs(FULL, "demo", ["threads=0"], n_patients=2)
    by_name = {g.name: (g, o, s) for g, o, s in jobs}
    assert set(by_name) == {"default", "tuned", "supervised",
                            *(f"shuffled_{m}" for m in ZERO_SHOT_TUNABLE)}
    for _, overrides, seeds in jobs:
        assert seeds == [0, 1, 2]
        assert {"split=loso", "genes.split=kfold", "genes.k=4", "split_seed=0"} <= set(overrides)
        assert "threads=0" in overrides and "threads=1" not in overrides  # the user's setting wins
    tuned_group, tuned, _ = by_name["tuned"]
    assert set(tuned_group.methods) == set(ZERO_SHOT_TUNABLE)
    assert {"tuning.sampler=tpe", "tuning.seed=0"} <= set(tuned)
    assert set(by_name["default"][0].methods) >= set(ZERO_SHOT_TUNABLE) | {"seen_mean", "mean_expression"}
    for inner in ZERO_SHOT_TUNABLE:
        group, overrides, _ = by_name[f"shuffled_{inner}"]
        assert group.methods == ("shuffled_text",) and f"method.inner={inner}" in overrides


def test_lopo_where_three_patients_exist():
    assert "split=lopo" in protocol_jobs(FULL, "demo", [], n_patients=3)[0][1]
    assert "split=loso" in protocol_jobs(FULL, "demo", [], n_patients=2)[0][1]


def test_unknown_protocol_and_rows_are_bad_input():
    with pytest.raises(ConfigError):
        get_protocol("fulll")
    with pytest.raises(ConfigError):
        protocol_jobs(FULL, "demo", [], groups=["tunned"], n_patients=2)


def _trials(store) -> dict[str, int]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{store / 'optuna.db'}")
    return {s.study_name: len(storage.get_all_trials(s._study_id))
            for s in optuna.get_all_study_summaries(storage)}


@pytest.mark.slow
@pytest.mark.integration
def test_tuning_budget_spent_once_per_outer_fold_and_reused(in_tmp, capsys):
    base = ["run", "--method", "bilinear", "--dataset", "demo", "encoder=handcrafted",
            "dataset.n_spots=80", "dataset.n_genes=60",
            "genes.representation=tfidf", "split=holdout", "split.test=[P2_B]", "genes.split=kfold",
            "genes.k=2", "split_seed=0", "tuning.n_trials=2", "tuning.seed=0",
            "--no-progress"]
    assert main([*base, "seed=0", "--json", "s0.json"]) == 0, capsys.readouterr().err
    after_first = _trials(in_tmp / "stbench-runs")
    assert len(after_first) == 2 and set(after_first.values()) == {2}  # 2 outer folds x 2 trials
    assert main([*base, "seed=1", "--json", "s1.json"]) == 0, capsys.readouterr().err
    assert _trials(in_tmp / "stbench-runs") == after_first  # reused: no new study, no new trial
    s0, s1 = (json.loads((in_tmp / f"s{i}.json").read_text()) for i in (0, 1))
    assert s0["best_params"] == s1["best_params"] and all(s0["best_params"])
    from stbench.run.portable import local_paths_in

    assert local_paths_in(s0) == [] and s0["folds"][0]["tuning"]["storage"] is None
    assert s0["split"]["folds"][0]["genes"]["unseen"] == s1["split"]["folds"][0]["genes"]["unseen"]
    # without split_seed the outer folds differ by seed: a new study per fold, never shared
    other = [a for a in base if a != "split_seed=0"]
    assert main([*other, "seed=2"]) == 0, capsys.readouterr().err
    assert len(_trials(in_tmp / "stbench-runs")) == 4
