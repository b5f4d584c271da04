"""``shuffled_text``: any zero-shot method run with descriptions permuted among genes (control).

The wrapped method (``inner``, a registered method name, default ``bilinear``; its settings in
``inner_config``) is fitted and asked for predictions exactly as usual, but through a
:class:`~stbench.method.GeneText` in which every gene carries ANOTHER gene's description:
its text, pooled embedding and token states all come from ``perm[gene]``. The image and
expression data are untouched, so what the inner method still achieves is what it gets
without reading the right description (e.g. cellularity shared by all genes); the gap to the
unshuffled method is the value of the text.

The permutation is a seeded random DERANGEMENT (no gene keeps its own description) over ALL
genes in ``ctx.gene_text.descriptions`` (sorted by name, seed ``ctx.seed``), drawn once in
``fit``; the inner method keeps the shuffled ``GeneText`` it was given, so ``predict`` sees
the same permutation. Genes outside ``descriptions`` are left as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np

from stbench.errors import ConfigError
from stbench.ranges import violations
from stbench.method import Bundle, FitContext, GeneText, Method, MethodConfig, MethodMeta

#: Mixed into ``ctx.seed`` so the permutation's stream differs from the inner method's.
_PERMUTATION_SALT = 0x5EED_7E47


def derangement(n: int, rng: np.random.Generator, max_tries: int = 10_000) -> np.ndarray:
    """A uniform random permutation of ``range(n)`` with no fixed point (n >= 2).

    Rejection sampling (about e draws on average); ``n < 2`` gives the identity.
    """
    if n < 2:
        return np.arange(n)
    for _ in range(max_tries):
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p
    # Practically unreachable; a random n-cycle (Sattolo) is always a derangement.
    p = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))
        p[i], p[j] = p[j], p[i]
    return p


def shuffled_gene_text(base: GeneText, seed: int) -> tuple[GeneText, dict[str, str]]:
    """``base`` with descriptions permuted among its genes; also returns gene -> source gene."""
    genes = sorted(base.descriptions)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _PERMUTATION_SALT])
    perm = derangement(len(genes), rng)
    mapping = {g: genes[int(p)] for g, p in zip(genes, perm)}

    def src(names: list[str]) -> list[str]:
        return [mapping.get(n, n) for n in names]

    descriptions = {g: base.descriptions[mapping[g]] for g in genes}
    shuffled = GeneText(
        descriptions,
        embed=lambda names: base.embed(src(list(names))),
        token_states=lambda names: base.token_states(src(list(names))),
    )
    return shuffled, mapping


def inner_method_class(name: str) -> type[Method]:
    """The registered method ``name`` (a module-level hook, so tests can substitute it)."""
    from stbench.plugins import METHODS

    return METHODS.get(name)


class ShuffledText(Method):
    """Wraps a zero-shot method and feeds it permuted gene descriptions."""

    meta = MethodMeta(
        name="shuffled_text",
        kind="control",
        needs=frozenset({"image", "graph", "gene_text"}),
        citation="Control: the inner zero-shot method with gene descriptions permuted among genes",
        version="1",
        trained_on="seen",
    )

    @dataclass
    class Config(MethodConfig):
        """Settings.

        Attributes:
            inner: Registered name of the zero-shot method to wrap.
            inner_config: Overrides of the inner method's Config fields
                (e.g. ``method.inner_config.lam=10`` on the command line).
        """

        inner: str = "bilinear"
        inner_config: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006 (OmegaConf)

    @classmethod
    def needs_for(cls, config: Any = None) -> frozenset[str]:
        """Exactly the inner method's needs under the inner config (a true control)."""
        config = config if config is not None else cls.Config()
        inner = _inner_with_config(config)
        return inner.needs_for(inner.config) | {"gene_text"}

    def _make_inner(self) -> Method:
        return _inner_with_config(self.config)

    def fit(self, train: Bundle, val: Bundle | None, ctx: FitContext) -> None:
        if ctx.gene_text is None:
            raise RuntimeError("shuffled_text needs gene descriptions (ctx.gene_text)")
        self.inner_ = self._make_inner()
        self.gene_text_, self.permutation_ = shuffled_gene_text(ctx.gene_text, ctx.seed)
        self.inner_.fit(train, val, dataclasses.replace(ctx, gene_text=self.gene_text_))

    def predict(self, bundle: Bundle, genes: list[str]) -> np.ndarray:
        return self.inner_.predict(bundle, list(genes))


def _inner_with_config(config: Any) -> Method:
    """The wrapped method, built with ``config.inner_config`` over its defaults."""
    cls = inner_method_class(str(config.inner))
    meta = cls.meta
    if meta.trained_on != "seen" or "gene_text" not in meta.needs:
        raise ConfigError(
            f"shuffled_text wraps a method trained on seen genes that reads gene text; "
            f"{meta.name!r} is {meta.kind} (trained on {meta.trained_on}, needs "
            f"{sorted(meta.needs)})", fix="use method.inner= a zero-shot method, e.g. alignst")
    overrides = dict(config.inner_config or {})
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"method.inner_config sets {unknown}, which {meta.name}.Config does not have",
                          fix=f"see `stbench list methods {meta.name}` and its Config fields")
    inner_config = cls.Config(**overrides)
    for key, value, rng in violations(inner_config):
        raise ConfigError(f"bad configuration: method.inner_config.{key}={value} is out of range "
                          f"(valid: {rng})", fix=f"set method.inner_config.{key} to a value {rng}")
    return cls(inner_config)
