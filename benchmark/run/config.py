"""Hydra configuration: schemas, config groups and composition behind our own CLI.

Config groups: ``dataset``, ``method`` and ``encoder`` are generated from the registered
plugins' ``Config`` dataclasses (so third-party plugins get typed, validated settings);
``split`` comes from :data:`SPLIT_PRESETS`; ``genes``, ``preprocess``, ``features``,
``tuning``, ``tracking`` and ``cache`` are typed nodes of the root schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from stbench.errors import ConfigError
from stbench.ranges import bounded

CONF_DIR = Path(__file__).with_name("conf")


@dataclass
class SplitConfig:
    """Slide folds: ``name`` is loso | lopo | holdout | kfold."""

    name: str = "loso"
    test: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    n_val_slides: int = bounded(1, ">= 0")
    k: int = bounded(5, ">= 2")


SPLIT_PRESETS = {name: SplitConfig(name=name) for name in ("loso", "lopo", "holdout", "kfold")}


@dataclass
class GenesConfig:
    """Panel, gene split (zero-shot track), gene descriptions and gene representation.

    ``representation`` names a registered gene representation (``stbench list
    representations``): ``minilm`` | ``tfidf`` | ``hf`` | ``open_clip`` (text encoders of the
    descriptions; ``text_model`` for hf/open_clip), ``table`` (the file ``embeddings``) or
    ``go``. ``missing``: ``error`` stops on panel genes the representation lacks, ``drop``
    leaves them out of the run. ``text_encoder`` is deprecated (it sets the representation).
    """

    panel: str = "default"
    panel_file: Optional[str] = None
    n_hvg: int = bounded(250, ">= 1")
    split: str = "random"
    n_unseen: float = bounded(0.25, "> 0")
    k: int = bounded(4, ">= 2")
    unseen_file: Optional[str] = None
    val_fraction: float = bounded(0.2, "[0, 1)")
    descriptions: Optional[str] = None
    representation: str = "minilm"
    embeddings: Optional[str] = None
    missing: str = "error"
    text_encoder: Optional[str] = None  # deprecated: use representation
    text_model: Optional[str] = None
    max_tokens: int = bounded(128, ">= 1")


@dataclass
class PreprocessConfig:
    """Expression normalisation (recorded in every result)."""

    target_sum: float = bounded(1e4, "> 0")
    log1p: bool = True
    min_spot_counts: int = bounded(1, ">= 0")


@dataclass
class FeaturesConfig:
    """Spot patches (physical side in microns), nuclei and spot-graph settings."""

    patch_um: float = bounded(112.0, "> 0")
    batch_size: int = bounded(64, ">= 1")
    max_nuclei: int = bounded(32, ">= 1")
    knn_k: int = bounded(5, ">= 1")
    grid_max_neighbors: int = bounded(5, ">= 1")


@dataclass
class TuningConfig:
    """Optuna tuning, nested in each outer fold (0 trials: the method's defaults).

    ``storage``: an Optuna storage URL; default SQLite ``<tracking.dir>/optuna.db``.
    ``sampler``: tpe (seeded) | random | grid. ``pruner``: median | halving | none.
    ``seed``: the sampler's seed. When set, the study of an outer fold no longer depends on
    the run's ``seed``: runs of other seeds with the same outer fold (same sections, same
    seen genes) share it, so the budget is spent once per outer fold and its best
    configuration is reused (the full protocol's tuned rows).
    """

    n_trials: int = bounded(0, ">= 0")
    seed: Optional[int] = bounded(None, ">= 0")
    storage: Optional[str] = None
    sampler: str = "tpe"
    pruner: str = "median"


@dataclass
class TrackingConfig:
    """MLflow: the embedded SQLite store under ``dir`` unless ``uri`` is set."""

    enabled: bool = True
    dir: str = "stbench-runs"
    uri: Optional[str] = None
    experiment: Optional[str] = None


@dataclass
class CacheConfig:
    """Feature cache folder (default ``~/.cache/stbench``, or ``$STBENCH_CACHE``)."""

    dir: Optional[str] = None
    enabled: bool = True


@dataclass
class RootConfig:
    """The whole run configuration.

    ``split_seed``: the seed of the data splits (validation sections, k-fold slide folds, the
    gene split and its validation genes); default the run's ``seed``. Fixing it keeps the same
    outer folds for every seed, so seeds vary only the models (the full protocol).
    """

    dataset: Any = MISSING
    method: Any = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    encoder: Any = MISSING
    genes: GenesConfig = field(default_factory=GenesConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    seed: int = bounded(0, ">= 0")
    split_seed: Optional[int] = bounded(None, ">= 0")
    device: str = "cpu"
    resume: bool = True
    threads: int = bounded(0, ">= 0")
    explain_genes: int = bounded(2, ">= 0")


def _named_node(name: str, config_cls: type) -> type:
    """A dataclass with the plugin's fields plus ``name`` (so the choice is recorded)."""
    fields = [("name", str, dataclasses.field(default=name))]
    return dataclasses.make_dataclass(f"{config_cls.__name__}_{name}", fields, bases=(config_cls,))


def _default_choices() -> dict[str, str]:
    """The plugin chosen per group when no override names one (``conf/config.yaml``)."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").get("defaults", [])
    return {k: str(v) for item in defaults if isinstance(item, DictConfig)
            for k, v in item.items() if k in ("dataset", "method", "encoder")}


def register_configs(chosen: dict[str, str] | None = None) -> None:
    """Store the root schema and the plugins' config nodes in Hydra's ConfigStore.

    Args:
        chosen: Group -> plugin name selected for this run: only those (or the group's
            default) are imported and stored, so composing a run does not import every
            registered plugin. None stores every plugin that imports (for multiruns over
            several methods); a broken third-party plugin is then left out.
    """
    from hydra.core.config_store import ConfigStore

    from stbench.data import DatasetConfig
    from stbench.method import MethodConfig
    from stbench.plugins import DATASETS, ENCODERS, METHODS

    cs = ConfigStore.instance()
    cs.store(name="stbench_schema", node=RootConfig)
    for name, preset in SPLIT_PRESETS.items():
        cs.store(group="split", name=name, node=preset)
    defaults = _default_choices()
    for registry, group, base in (
        (METHODS, "method", MethodConfig),
        (DATASETS, "dataset", DatasetConfig),
        (ENCODERS, "encoder", object),
    ):
        only = None if chosen is None else chosen.get(group, defaults.get(group))
        for name in registry.list() if only is None else [only]:
            try:
                plugin = registry.get(name)
            except Exception:  # a broken third-party plugin must not break other runs
                if only is not None:
                    raise
                continue
            cfg_cls = getattr(plugin, "Config", None)
            if not (isinstance(cfg_cls, type) and dataclasses.is_dataclass(cfg_cls)):
                cfg_cls = dataclasses.make_dataclass(f"{group}_{name}_Config", [], bases=())
            cs.store(group=group, name=name, node=_named_node(name, cfg_cls))


def with_default_split(dataset: str, overrides: list[str]) -> list[str]:
    """``overrides`` with ``split=<the dataset card's default split>`` first unless a split is
    chosen: the one place the default split is applied (library, CLI and sweeps)."""
    if any(o.split("=", 1)[0].lstrip("+~") == "split" for o in overrides):
        return list(overrides)
    from stbench.plugins import DATASETS

    return [f"split={DATASETS.get(dataset).card.default_split}", *overrides]


def compose(overrides: list[str]) -> DictConfig:
    """Compose the run config from ``conf/config.yaml`` and ``overrides``.

    The dataset card's default split applies unless ``split=`` is given; only the chosen
    plugins are imported.

    Raises:
        ConfigError: On an unknown key, a wrong type, or an unknown group option.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    chosen = dict(o.split("=", 1) for o in overrides
                  if o.split("=", 1)[0] in ("method", "dataset", "encoder") and "=" in o)
    register_configs(chosen)
    overrides = with_default_split(chosen.get("dataset", _default_choices()["dataset"]), overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad configuration: {_first_line(exc)}",
                          fix="check the key=value overrides (`stbench run --help`)") from exc
    except ValueError as exc:
        raise ConfigError(f"bad configuration: {_first_line(exc)}",
                          fix="check the key=value overrides") from exc
    finally:
        GlobalHydra.instance().clear()
    check_schema(cfg)
    check_ranges(cfg)
    return cfg


def check_ranges(cfg: DictConfig) -> None:
    """Refuse a numeric setting outside its declared range (:mod:`stbench.ranges`).

    Raises:
        ConfigError: Naming the key, the value and the valid range.
    """
    from stbench.ranges import violations

    for key, value, rng in violations(cfg):
        raise ConfigError(f"bad configuration: {key}={value} is out of range (valid: {rng})",
                          fix=f"set {key} to a value {rng}")


def check_schema(node: DictConfig, prefix: str = "") -> None:
    """Refuse settings the schema does not know (``+key=v``) or lacks (``~key=v``).

    Hydra's ``+`` adds a key even to a typed node and ``~`` deletes one; either would be
    silently ignored or crash the run later, so every node typed by a dataclass must hold
    exactly that dataclass's fields.

    Raises:
        ConfigError: Naming the first unknown or removed key.
    """
    typ = OmegaConf.get_type(node)
    if isinstance(typ, type) and dataclasses.is_dataclass(typ):
        names = [f.name for f in dataclasses.fields(typ)]
        extra = [k for k in node.keys() if k not in names]
        if extra:
            raise ConfigError(f"bad configuration: unknown setting '{prefix}{extra[0]}'",
                              fix="check the key=value overrides (`stbench run --help`); "
                                  "'+key=value' cannot add settings")
        missing = [k for k in names if k not in node]
        if missing:
            raise ConfigError(f"bad configuration: setting '{prefix}{missing[0]}' was removed",
                              fix="do not delete settings with '~key'; set a value instead")
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_schema(child, f"{prefix}{key}.")


def _first_line(exc: BaseException) -> str:
    """A one-line summary of a Hydra/OmegaConf error, with its cause where it says more."""
    import re

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return f"unknown setting {unknown.group(1)!r}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        text += ": " + str(cause).strip().splitlines()[0]
    return text


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (saved with every run)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
