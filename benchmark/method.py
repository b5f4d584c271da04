"""The method plugin interface.

A method is a class with ``meta`` (a :class:`MethodMeta`), an optional nested ``Config``
dataclass of hyperparameter defaults, and ``fit`` / ``predict``. The harness, not the method,
decides which genes' expression a method sees:

* ``zero_shot`` methods get the expression of SEEN genes only (the harness slices the matrix
  before the method receives it) and predict unseen genes from their descriptions;
* ``supervised`` references are trained on every panel gene;
* ``control`` methods declare which of the two they receive in ``MethodMeta.trained_on``.

Methods never compute metrics: the harness's evaluator does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

MethodKind = Literal["zero_shot", "supervised", "control"]
TrainedOn = Literal["seen", "all"]


@dataclass(frozen=True)
class MethodMeta:
    """What a method is, for the registry, the CLI and the leaderboards.

    Attributes:
        name: Registry name.
        kind: ``zero_shot``, ``supervised`` or ``control``.
        needs: Feature kinds the method consumes (``image``, ``nuclei``, ``graph``,
            ``gene_text``).
        citation: Where the method comes from.
        version: Bumped whenever the method's results may change.
        trained_on: ``seen`` (only seen genes' expression) or ``all`` (every panel gene).
            Zero-shot methods must be ``seen``; supervised ones are ``all``.
    """

    name: str
    kind: MethodKind
    needs: frozenset[str] = frozenset({"image"})
    citation: str = ""
    version: str = "1"
    trained_on: TrainedOn = "seen"

    def __post_init__(self) -> None:
        if self.kind not in ("zero_shot", "supervised", "control"):
            raise ValueError(f"unknown method kind {self.kind!r}")
        if self.kind == "zero_shot" and self.trained_on != "seen":
            raise ValueError("a zero_shot method can only be trained on seen genes")
        if self.kind == "supervised" and self.trained_on != "all":
            raise ValueError("a supervised method is trained on all panel genes")


@dataclass
class SlideView:
    """What a method sees of one slide.

    Attributes:
        name: Slide name.
        patient: Patient id.
        features: Feature kind -> array, filled for the kinds in ``MethodMeta.needs``:
            ``image`` (n_spots, d) float32 pooled patch embedding;
            ``nuclei`` (n_spots, max_nuclei, n_features) float32 per-nucleus features
            (see ``stbench.features.nuclei.NUCLEUS_FEATURES``) with ``nuclei_mask``
            (n_spots, max_nuclei) bool (True = a real nucleus);
            ``graph`` gives ``edges_grid`` and ``edges_knn``, (2, n_edges) int64 (source,
            target) spot indices local to the slide: grid neighbours and image-feature kNN.
        spatial: (n_spots, 2) pixel coordinates (x, y).
        grid: (n_spots, 2) array coordinates (col, row).
        expression: (n_spots, n_genes) log-normalised expression of the bundle's genes,
            or ``None`` where the method may not see it (test slides).
        microns_per_pixel: Pixel size.
    """

    name: str
    patient: str
    features: dict[str, Any]
    spatial: np.ndarray
    grid: np.ndarray
    expression: np.ndarray | None
    microns_per_pixel: float = 1.0

    @property
    def n_spots(self) -> int:
        return int(self.spatial.shape[0])


@dataclass
class Bundle:
    """A set of slides and the genes whose expression they carry."""

    slides: list[SlideView]
    genes: list[str]

    @property
    def n_spots(self) -> int:
        return sum(s.n_spots for s in self.slides)

    def stack(self, kind: str) -> np.ndarray:
        """Concatenate a per-spot feature over slides, in slide order."""
        return np.concatenate([np.asarray(s.features[kind]) for s in self.slides], axis=0)

    def expression(self) -> np.ndarray:
        """Concatenated expression (n_spots, n_genes); raises if hidden."""
        if any(s.expression is None for s in self.slides):
            raise RuntimeError("expression is not available in this bundle")
        return np.concatenate([s.expression for s in self.slides], axis=0)  # type: ignore[misc]

    def slide_index(self) -> np.ndarray:
        """Per-spot index of its slide in ``slides``."""
        return np.concatenate([np.full(s.n_spots, i) for i, s in enumerate(self.slides)])


class GeneText:
    """Gene descriptions and their embeddings, for every gene a method may be asked about.

    Text is not expression: zero-shot methods may read descriptions of unseen genes.
    """

    def __init__(
        self,
        descriptions: dict[str, str],
        embed: Callable[[list[str]], np.ndarray] | None = None,
        token_states: Callable[[list[str]], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.descriptions = descriptions
        self._embed = embed
        self._token_states = token_states

    def text(self, genes: list[str]) -> list[str]:
        return [self.descriptions[g] for g in genes]

    def embed(self, genes: list[str]) -> np.ndarray:
        """Pooled embedding per gene, (n_genes, d)."""
        if self._embed is None:
            raise RuntimeError("no text encoder configured")
        return self._embed(genes)

    def token_states(self, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-token states (n_genes, n_tokens, d) and mask (n_genes, n_tokens)."""
        if self._token_states is None:
            raise RuntimeError("the configured text encoder has no token states")
        return self._token_states(genes)


@dataclass
class FitContext:
    """Everything the harness gives a method beside the data.

    Attributes:
        seed: Seed for every random number generator of the method.
        gene_text: Descriptions/embeddings of the panel's genes (seen and unseen).
        val_genes: Genes whose validation-slide expression is in ``val`` for model selection
            (drawn from the seen genes for zero-shot methods).
        device: ``cpu`` or ``cuda``.
        log_metric: Callback ``(name, value, step)`` recorded in MLflow (epoch curves).
        progress: Callback factory for progress bars: ``progress(description, total)``
            returns an ``advance(n=1)`` callable.
        workdir: A folder for artifacts (plots) the method wants recorded.
        report: ``report(value, step)`` of an intermediate validation score (e.g. PCC per
            epoch); under tuning it may raise ``optuna.TrialPruned`` to stop a bad trial.
    """

    seed: int = 0
    gene_text: GeneText | None = None
    val_genes: list[str] = field(default_factory=list)
    device: str = "cpu"
    log_metric: Callable[[str, float, int], None] = lambda name, value, step: None
    progress: Callable[[str, int], Callable[..., None]] = lambda desc, total: (lambda n=1: None)
    workdir: str | None = None
    report: Callable[[float, int], None] = lambda value, step: None


@dataclass
class MethodConfig:
    """Base class of method configs (hyperparameter defaults)."""


class Method(ABC):
    """Base class of method plugins."""

    meta: ClassVar[MethodMeta]
    Config: ClassVar[type] = MethodConfig

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def needs_for(cls, config: Any = None) -> frozenset[str]:
        """The feature kinds the method consumes under ``config`` (default ``meta.needs``).

        Override when a setting switches a feature off (or a wrapper inherits its inner
        method's needs): the harness computes exactly these kinds and records them.
        """
        return frozenset(cls.meta.needs)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna search space: return config overrides sampled from ``trial``."""
        return {}

    @abstractmethod
    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        """Learn from ``train`` (expression of the allowed genes); select models on ``val``."""

    @abstractmethod
    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        """Predict (n_spots, len(genes)) log-normalised expression for ``bundle``'s spots."""
