"""Gene representations: how a zero-shot method sees a gene it never saw expressed.

A representation turns gene symbols into vectors (and, for text encoders, per-token states).
It is the second axis of the zero-shot track beside the method: the same method can be run
over text encoders of the shipped descriptions, a researcher's own embedding file, or the
Gene Ontology graph. Built-in representations (``stbench list representations``):

* ``minilm`` (default), ``hf``, ``open_clip``: neural text encoders over the gene descriptions
  (pooled vectors and token states; see :mod:`stbench.features.text_encoders`);
* ``tfidf``: a weight-free bag-of-words over the descriptions (pooled vectors only);
* ``table``: the user's embedding file ``genes.embeddings=PATH`` (``.tsv``/``.csv``/``.npz``/
  ``.parquet``, see :mod:`stbench.features.gene_tables`), pooled vectors only;
* ``go``: a structured Gene Ontology embedding shipped as ``datasets/gene_go_embeddings.npz``
  (annotated terms propagated to their ancestors, IDF-weighted, truncated SVD to 256 dims;
  built by ``tools/build_go_representation.py``), pooled vectors only.

Third-party packages add one through the ``stbench.representations`` entry-point group: a
subclass of :class:`GeneRepresentation` taking a :class:`RepresentationOptions`.

Every representation has a ``name``, a ``version`` and a content ``digest()`` (weights,
description table or embedding file); the run records them in the result JSON and MLflow.
A representation's vectors are computed once per (panel, representation version) and kept in
the feature cache (:class:`~stbench.features.cache.ArrayCache`); a parsed embedding table is
cached by the file's sha256, so a second run does not parse it again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stbench.errors import ConfigError, DataError
from stbench.features.cache import ArrayCache, cache_key
from stbench.features.gene_tables import GeneTable, file_digest, read_gene_table, table_format
from stbench.method import GeneText

#: Bumped when the code that turns inputs into vectors changes (part of every digest).
REPRESENTATIONS_CODE_VERSION = "1"
DEFAULT_REPRESENTATION = "minilm"
MISSING_MODES = ("error", "drop")
GO_TABLE_FILE = "gene_go_embeddings.npz"
_SHOW_MISSING = 5


@dataclass(frozen=True)
class RepresentationOptions:
    """What a representation may need from the run's settings.

    Attributes:
        model: ``genes.text_model``: the model of ``hf`` / ``open_clip``.
        embeddings: ``genes.embeddings``: the file of ``table``.
        descriptions: ``genes.descriptions``: the user's description file (text encoders).
        max_tokens: Token states are truncated to this many word pieces.
        cache: The feature cache (None: no caching).
    """

    model: str | None = None
    embeddings: str | None = None
    descriptions: str | None = None
    max_tokens: int = 128
    cache: ArrayCache | None = None


class GeneRepresentation(ABC):
    """Base class of gene representations.

    Subclasses set ``name``, ``version``, ``has_tokens`` and ``kind`` and implement
    :meth:`digest`, :meth:`coverage` and :meth:`build`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    has_tokens: ClassVar[bool] = False
    kind: ClassVar[str] = "text"

    def __init__(self, options: RepresentationOptions | None = None) -> None:
        self.options = options or RepresentationOptions()
        self.cache = self.options.cache if self.options.cache is not None else ArrayCache(enabled=False)
        self.missing = "error"
        self.dropped: set[str] = set()

    @abstractmethod
    def digest(self) -> str:
        """A short hash of everything that determines the vectors (weights, files, code)."""

    @abstractmethod
    def coverage(self, genes: list[str]) -> tuple[list[str], list[str]]:
        """``(covered, missing)``: the genes this representation has a vector for, and not."""

    @abstractmethod
    def build(self, genes: list[str]) -> GeneText:
        """A :class:`~stbench.method.GeneText` over ``genes`` (all covered)."""

    @property
    def source(self) -> str:
        """Where the vectors come from, for messages."""
        return f"representation {self.name}"

    def select_panel(self, panel: list[str]) -> list[str]:
        """The panel genes this representation covers, under ``self.missing``.

        Raises:
            DataError: Some genes are not covered and ``missing`` is ``error`` (the message
                says how many and names the first few).
        """
        covered, missing = self.coverage(list(panel))
        if not missing:
            return list(panel)
        if self.missing == "drop":
            self.dropped.update(missing)
            return covered
        shown = ", ".join(missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise DataError(f"{len(missing)} of {len(panel)} panel genes have no {self.name} "
                        f"representation: {shown}{more}", where=self.source,
                        fix="add them, or set genes.missing=drop to leave them out of the "
                            "evaluation")

    def record(self) -> dict[str, Any]:
        """Name, version, digest and coverage bookkeeping, for the result JSON and MLflow."""
        return {"name": self.name, "version": self.version, "digest": self.digest(),
                "kind": self.kind, "token_states": self.has_tokens, "missing": self.missing,
                "n_dropped": len(self.dropped), "dropped": sorted(self.dropped)}


# ---------------------------------------------------------------------------------------------
# Text encoders over the descriptions
# ---------------------------------------------------------------------------------------------


class TextRepresentation(GeneRepresentation):
    """A text encoder over the gene descriptions (shipped, or ``genes.descriptions``)."""

    encoder: ClassVar[str] = ""
    has_tokens = True

    def __init__(self, options: RepresentationOptions | None = None) -> None:
        super().__init__(options)
        self._neural = None
        self._digest: str | None = None

    @property
    def source(self) -> str:
        return str(self.options.descriptions or "the shipped gene descriptions")

    def text_encoder(self):
        """The neural text encoder (built once), or None for a weight-free one."""
        if self._neural is None:
            from stbench.features.text_encoders import make_text_encoder, text_encoder_kwargs

            kwargs = text_encoder_kwargs(self.encoder, self.options.model)
            self._neural = make_text_encoder(self.encoder, **kwargs)
        return self._neural

    def _weights_digest(self) -> str:
        """The encoder's digest; from the model's files alone where they are on disk (no
        model is loaded to name a cache entry), else from the loaded encoder."""
        digest = None
        if self._neural is None:
            from stbench.features.text_encoders import local_text_encoder_digest, text_encoder_kwargs

            kwargs = text_encoder_kwargs(self.encoder, self.options.model)
            digest = local_text_encoder_digest(self.encoder, **kwargs)
        return digest or self.text_encoder().digest()

    def digest(self) -> str:
        if self._digest is None:
            path = self.options.descriptions
            texts = file_digest(Path(path).expanduser()) if path and Path(path).expanduser().is_file() \
                else _shipped_descriptions_digest()
            parts = [self.name, self.version, REPRESENTATIONS_CODE_VERSION, self._weights_digest(),
                     texts, str(self.options.max_tokens)]
            self._digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
        return self._digest

    def coverage(self, genes: list[str]) -> tuple[list[str], list[str]]:
        from stbench.features.descriptions import coverage

        return coverage(list(genes), self.options.descriptions)

    def build(self, genes: list[str]) -> GeneText:
        from stbench.features.descriptions import descriptions_for
        from stbench.features.gene_text import build_gene_text

        descriptions = descriptions_for(list(genes), self.options.descriptions)
        neural = None if self.encoder == "tfidf" else _LazyTextEncoder(self)
        return build_gene_text(descriptions, self.encoder, model=self.options.model,
                               cache=self.cache, max_tokens=self.options.max_tokens,
                               neural=neural)

    def record(self) -> dict[str, Any]:
        out = super().record()
        if self.options.model and self.encoder in ("hf", "open_clip"):
            model = str(self.options.model)
            local = model.startswith(("/", "~", ".")) or Path(model).expanduser().exists()
            out["model"] = Path(model).name if local else model  # no local path in results
        return out


class _LazyTextEncoder:
    """A representation's neural encoder, built on first use: a run whose embeddings and
    token states are in the cache never loads the model. ``digest()`` is the encoder's."""

    def __init__(self, representation: TextRepresentation) -> None:
        self._representation = representation

    def digest(self) -> str:
        return self._representation._weights_digest()

    def embed(self, texts):
        return self._representation.text_encoder().embed(texts)

    def token_states(self, texts, max_length: int = 128):
        return self._representation.text_encoder().token_states(texts, max_length=max_length)


class MiniLMRepresentation(TextRepresentation):
    """all-MiniLM-L6-v2 over the gene descriptions (384-d, shipped offline; token states)."""

    name = encoder = "minilm"


class HFRepresentation(TextRepresentation):
    """A Hugging Face text encoder (genes.text_model=...) over the descriptions; token states."""

    name = encoder = "hf"


class OpenClipRepresentation(TextRepresentation):
    """An OpenCLIP text tower (genes.text_model=...) over the descriptions; token states."""

    name = encoder = "open_clip"


class TfidfRepresentation(TextRepresentation):
    """TF-IDF over the panel's descriptions (weight-free; pooled vectors only)."""

    name = encoder = "tfidf"
    has_tokens = False

    def _weights_digest(self) -> str:
        from stbench.features.gene_text import TFIDF_VERSION

        return f"tfidf-{TFIDF_VERSION}"


@lru_cache(maxsize=1)
def _shipped_descriptions_digest() -> str:
    from stbench.features.descriptions import shipped_table_path

    path = shipped_table_path()
    return file_digest(path) if path.is_file() else "missing"


# ---------------------------------------------------------------------------------------------
# Embedding tables: the user's file and the shipped GO embedding
# ---------------------------------------------------------------------------------------------


class TableRepresentation(GeneRepresentation):
    """The user's gene-embedding file (genes.embeddings=PATH: .tsv/.csv/.npz/.parquet)."""

    name = "table"
    kind = "table"

    def __init__(self, options: RepresentationOptions | None = None) -> None:
        super().__init__(options)
        self.path = self._path()
        self.table = cached_gene_table(self.path, self.cache)  # validated before any work
        self._index = {s: i for i, s in enumerate(self.table.symbols.tolist())}
        self._matches: dict[str, int | None] = {}

    def _path(self) -> Path:
        if not self.options.embeddings:
            raise ConfigError("genes.representation=table needs genes.embeddings=PATH",
                              fix="point genes.embeddings at a .tsv, .csv, .npz or .parquet file "
                                  "of gene vectors")
        return Path(str(self.options.embeddings)).expanduser()

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def dim(self) -> int:
        return self.table.dim

    def digest(self) -> str:
        parts = [self.name, self.version, REPRESENTATIONS_CODE_VERSION, self.table.digest]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _match(self, genes: list[str]) -> dict[str, int | None]:
        """Gene -> table row: the exact symbol, else the same official symbol (aliases)."""
        todo = [g for g in dict.fromkeys(genes) if g not in self._matches]
        for g in todo:
            self._matches[g] = self._index.get(g)
        unmatched = [g for g in todo if self._matches[g] is None]
        if unmatched:
            official = _official_rows(self.table.symbols)
            from stbench.features.descriptions import DescriptionTable

            names = DescriptionTable.shipped()
            for g in unmatched:
                resolved = names.resolve(g)
                self._matches[g] = official.get(resolved) if resolved else None
        return {g: self._matches[g] for g in genes}

    def coverage(self, genes: list[str]) -> tuple[list[str], list[str]]:
        rows = self._match(list(genes))
        return [g for g in genes if rows[g] is not None], [g for g in genes if rows[g] is None]

    def build(self, genes: list[str]) -> GeneText:
        genes = list(dict.fromkeys(genes))
        rows = self._match(genes)
        absent = [g for g in genes if rows[g] is None]
        if absent:
            raise DataError(f"{len(absent)} genes are not in the embedding table: "
                            f"{', '.join(absent[:_SHOW_MISSING])}", where=self.source,
                            fix="add them, or set genes.missing=drop")
        matrix = self.table.embeddings[[rows[g] for g in genes]]
        index = {g: i for i, g in enumerate(genes)}

        def embed(names: list[str]) -> np.ndarray:
            return matrix[[index[n] for n in names]]

        descriptions = {g: f"{g}: {self.name} gene representation" for g in genes}
        return GeneText(descriptions, embed=embed)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "dim": self.dim, "n_table_genes": len(self.table),
                "file": self.path.name, "sha256": self.table.digest}


class GoRepresentation(TableRepresentation):
    """Gene Ontology embedding (propagated GO terms, IDF, SVD to 256 dims; shipped table)."""

    name = "go"
    kind = "structured"

    def _path(self) -> Path:
        path = go_table_path()
        if not path.is_file():
            raise ConfigError("the shipped GO representation is missing", where=str(path),
                              fix="reinstall stbench, or rebuild it: pip install -e "
                                  '".[build-genes]" && python tools/build_go_representation.py')
        return path

    @property
    def source(self) -> str:
        return "the shipped GO representation"

    def record(self) -> dict[str, Any]:
        out = super().record()
        out.pop("file", None)
        out["build"] = go_table_meta()
        return out


def go_table_path() -> Path:
    """Path of the shipped GO representation inside the ``stbench.datasets`` package."""
    return Path(str(resources.files("stbench.datasets") / GO_TABLE_FILE))


@lru_cache(maxsize=1)
def go_table_meta() -> dict[str, Any]:
    """The build record stored in the shipped GO table (sources, settings, variance)."""
    with np.load(go_table_path(), allow_pickle=False) as z:
        return json.loads(str(z["meta"])) if "meta" in z.files else {}


def _official_rows(symbols: np.ndarray) -> dict[str, int]:
    """Official symbol -> row for table symbols that resolve to exactly one row."""
    from stbench.features.descriptions import DescriptionTable

    names = DescriptionTable.shipped()
    out: dict[str, int] = {}
    clashes: set[str] = set()
    for i, s in enumerate(symbols.tolist()):
        official = names.resolve(s)
        if official is None:
            continue
        if official in out:
            clashes.add(official)
        out[official] = i
    exact = {s: i for i, s in enumerate(symbols.tolist())}
    for official in clashes:  # several rows: only the row named exactly counts
        if official in exact:
            out[official] = exact[official]
        else:
            out.pop(official)
    return out


#: Bumped when the table reader's output for the same bytes changes (cache key).
TABLE_READER_VERSION = "1"


def cached_gene_table(path: Path, cache: ArrayCache) -> GeneTable:
    """A validated :class:`GeneTable`, parsed once per file content and kept in ``cache``.

    The cache is keyed by the file's sha256: a changed file is parsed (and validated) again.
    """
    table_format(path)  # a pickle or an unknown suffix fails before the file is read
    if not path.is_file():
        raise DataError("embedding table not found", where=str(path),
                        fix="set genes.embeddings=PATH to an existing .tsv/.csv/.npz/.parquet file")
    digest = file_digest(path)
    key = cache_key(kind="gene_table", digest=digest, reader=TABLE_READER_VERSION)
    parsed: dict[str, GeneTable] = {}

    def parse() -> GeneTable:
        if "table" not in parsed:
            parsed["table"] = read_gene_table(path, digest)
        return parsed["table"]

    symbols = cache.get_or_compute("gene_table_symbols", key, lambda: parse().symbols)
    matrix = cache.get_or_compute("gene_table_embeddings", key, lambda: parse().embeddings)
    return GeneTable(np.asarray(symbols).astype(str), np.asarray(matrix, np.float32), str(path),
                     digest)


# ---------------------------------------------------------------------------------------------
# From the run's settings
# ---------------------------------------------------------------------------------------------


def warn(message: str) -> None:
    """One line on stderr (the CLI's warnings)."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def representation_name(genes: Any) -> str:
    """The representation chosen by a ``genes`` config node.

    ``genes.text_encoder`` (deprecated) still works: it names the representation, with a
    one-line deprecation warning on stderr.

    Raises:
        ConfigError: ``text_encoder`` and ``representation`` name different representations.
    """
    chosen = str(getattr(genes, "representation", None) or DEFAULT_REPRESENTATION)
    old = getattr(genes, "text_encoder", None)
    if not old:
        return chosen
    old = str(old)
    if chosen not in (DEFAULT_REPRESENTATION, old):
        raise ConfigError(f"genes.text_encoder={old} contradicts genes.representation={chosen}",
                          fix="drop genes.text_encoder (deprecated); genes.representation "
                              "chooses the representation")
    warn(f"genes.text_encoder is deprecated; use genes.representation={old}")
    return old


def make_representation(name: str, options: RepresentationOptions | None = None,
                        missing: str = "error") -> GeneRepresentation:
    """The registered representation ``name`` built with ``options``.

    Raises:
        UnknownNameError: No representation has that name.
        ConfigError: ``missing`` is neither ``error`` nor ``drop``.
    """
    from stbench.plugins import REPRESENTATIONS

    if missing not in MISSING_MODES:
        raise ConfigError(f"unknown genes.missing={missing!r}",
                          fix="use genes.missing=error (stop) or genes.missing=drop")
    rep = REPRESENTATIONS.get(name)(options or RepresentationOptions())
    rep.missing = missing
    return rep


def representation_from_config(genes: Any, cache: ArrayCache | None = None) -> GeneRepresentation:
    """The representation of a run's ``genes`` settings (validated, tables read)."""
    options = RepresentationOptions(
        model=getattr(genes, "text_model", None), embeddings=getattr(genes, "embeddings", None),
        descriptions=getattr(genes, "descriptions", None),
        max_tokens=int(getattr(genes, "max_tokens", 128)), cache=cache)
    return make_representation(representation_name(genes), options,
                               str(getattr(genes, "missing", "error") or "error"))


__all__ = [
    "DEFAULT_REPRESENTATION", "GeneRepresentation", "GoRepresentation", "HFRepresentation",
    "MiniLMRepresentation", "OpenClipRepresentation", "RepresentationOptions",
    "TableRepresentation", "TextRepresentation", "TfidfRepresentation", "cached_gene_table",
    "go_table_path", "make_representation", "representation_from_config",
    "representation_name",
]
