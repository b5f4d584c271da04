"""Text encoders for gene descriptions.

``tfidf`` is a weight-free bag-of-words encoder (sublinear TF-IDF over word uni- and bigrams,
L2-normalised), fitted on the descriptions of the run's panel genes only: it reads text, never
expression, so fitting it on unseen genes' descriptions is legitimate in the zero-shot track.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np

from stbench.method import GeneText


class TextEncoder(ABC):
    """Encodes gene descriptions."""

    name: str = "text"

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """Pooled embedding per text, (n, d) float32."""


class TfidfTextEncoder(TextEncoder):
    """TF-IDF over the corpus given at construction (word uni- and bigrams)."""

    name = "tfidf"

    def __init__(self, corpus: list[str], max_features: int = 4096) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(
            preprocessor=_strip_symbol,
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=1,
            max_features=max_features,
            stop_words="english",
        )
        self._vectorizer.fit(corpus)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._vectorizer.transform(texts).toarray().astype(np.float32)


def _strip_symbol(text: str) -> str:
    """Drop the leading ``SYMBOL:`` so the gene's own name does not act as a one-hot id."""
    return re.sub(r"^[^:]{1,40}:\s*", "", text).lower()


def build_gene_text(descriptions: dict[str, str], encoder: str = "tfidf") -> GeneText:
    """A :class:`GeneText` over ``descriptions`` with the named text encoder.

    Embeddings are computed once per gene and memoised.
    """
    genes = list(descriptions)
    if encoder != "tfidf":
        from stbench.errors import ConfigError

        raise ConfigError(f"unknown text encoder {encoder!r}", fix="use text_encoder=tfidf")
    enc = TfidfTextEncoder([descriptions[g] for g in genes])
    matrix = enc.embed([descriptions[g] for g in genes])
    index = {g: i for i, g in enumerate(genes)}

    def embed(names: list[str]) -> np.ndarray:
        return matrix[[index[n] for n in names]]

    return GeneText(descriptions, embed=embed)
