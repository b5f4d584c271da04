"""Every numeric setting has a declared range, and a value outside it is refused before any work.

Table-driven over every numeric key of the harness's groups and of every registered plugin's
``Config``: a new key without a range fails ``test_every_numeric_setting_declares_a_range``.
"""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from stbench.errors import ConfigError
from stbench.plugins import DATASETS, ENCODERS, METHODS
from stbench.ranges import Range, numeric_fields_without_range, range_of, violations
from stbench.run import config as run_config

ROOT_GROUPS = {
    "split": run_config.SplitConfig, "genes": run_config.GenesConfig,
    "preprocess": run_config.PreprocessConfig, "features": run_config.FeaturesConfig,
    "tuning": run_config.TuningConfig, "tracking": run_config.TrackingConfig,
    "cache": run_config.CacheConfig, "": run_config.RootConfig,
}


def _plugin_configs() -> dict[str, type]:
    out = {}
    for registry, group in ((METHODS, "method"), (DATASETS, "dataset"), (ENCODERS, "encoder")):
        for name in registry.list():
            cfg = getattr(registry.get(name), "Config", None)
            if isinstance(cfg, type) and dataclasses.is_dataclass(cfg):
                out[f"{group}={name}"] = cfg
    return out


CONFIGS = {**{f"group:{k or 'root'}": v for k, v in ROOT_GROUPS.items()}, **_plugin_configs()}


def _bounded_keys() -> list[tuple[str, type, str, object]]:
    rows = []
    for label, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            rng = range_of(f)
            if rng is None:
                continue
            for bad in rng.outside():
                is_list = "list" in str(f.type).lower()
                if "int" in str(f.type) and "float" not in str(f.type):
                    bad = int(bad)
                rows.append((label, cls, f.name, [bad] if is_list else bad))
    return rows


BOUNDED = _bounded_keys()


@pytest.mark.parametrize("label", sorted(CONFIGS))
def test_every_numeric_setting_declares_a_range(label):
    assert numeric_fields_without_range(CONFIGS[label]) == []


def test_the_table_covers_every_plugin_and_group():
    keys = {(label, name) for label, _, name, _ in BOUNDED}
    assert len(keys) > 150, len(keys)  # ~190 numeric keys today
    assert {label for label, _ in keys} >= {"method=alignst", "method=sgn", "dataset=demo",
                                             "group:tuning", "group:genes", "group:root"}


@pytest.mark.parametrize("label,cls,name,bad", BOUNDED,
                         ids=[f"{r[0]}.{r[2]}={r[3]}" for r in BOUNDED])
def test_out_of_range_value_is_found(label, cls, name, bad):
    node = OmegaConf.structured(cls)
    node[name] = bad
    found = list(violations(node))
    assert [(key, value) for key, value, _ in found] == [(name, bad[0] if isinstance(bad, list) else bad)]
    default = OmegaConf.structured(cls)
    assert list(violations(default)) == []  # every default lies inside its range


@pytest.mark.parametrize("override,key,valid", [
    ("tuning.n_trials=-3", "tuning.n_trials=-3", ">= 0"),
    ("features.patch_um=-10", "features.patch_um=-10", "> 0"),
    ("threads=-1", "threads=-1", ">= 0"),
    ("genes.val_fraction=1.5", "genes.val_fraction=1.5", "[0, 1)"),
    ("method.lr=0", "method.lr=0", "> 0"),
    ("method.dropout=1", "method.dropout=1", "[0, 1)"),
    ("method.max_epochs=0", "method.max_epochs=0", ">= 1"),
    ("split.k=1", "split.k=1", ">= 2"),
])
def test_compose_refuses_with_key_value_and_range(override, key, valid):
    with pytest.raises(ConfigError) as err:
        run_config.compose(["method=sgn", "dataset=demo", override])
    message = str(err.value)
    assert key in message and f"valid: {valid}" in message, message


def test_the_cli_gives_exit_2_and_one_line(capsys):
    from stbench.cli.app import main

    code = main(["run", "--method", "bilinear", "--dataset", "demo", "tuning.n_trials=-3",
                 "tracking.enabled=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tuning.n_trials=-3" in err[0] and ">= 0" in err[0]


@pytest.mark.parametrize("spec,inside,outside", [
    ("> 0", [1e-9, 5], [0, -1]), (">= 1", [1, 2], [0.5, 0]), ("[0, 1)", [0, 0.5], [1, -0.1]),
    ("(0, 1]", [1, 0.1], [0, 1.1]), ("<= 3", [3, -5], [3.5]),
])
def test_range_parsing(spec, inside, outside):
    rng = Range.parse(spec)
    assert all(rng.contains(x) for x in inside)
    assert not any(rng.contains(x) for x in outside)
    assert not rng.contains(float("nan")) and not rng.contains(float("inf"))
    assert str(Range.parse(str(rng))) == str(rng)


def test_a_bad_range_spec_is_a_programming_error():
    with pytest.raises(ValueError):
        Range.parse("positive")
