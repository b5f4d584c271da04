"""Gene text for methods: descriptions with pooled embeddings and token states.

This builds the text-encoder representations (``minilm``, ``tfidf``, ``hf``, ``open_clip``);
:mod:`stbench.features.representations` chooses among every representation (text encoders,
embedding tables, the Gene Ontology) and records which one a run used.

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


#: Bumped when the TF-IDF settings change (part of the ``tfidf`` representation's digest).
TFIDF_VERSION = "1"


def build_gene_text(descriptions: dict[str, str], encoder: str = "tfidf", *,
                    model: str | None = None, cache=None, max_tokens: int = 128,
                    neural: TextEncoder | None = None) -> GeneText:
    """A :class:`GeneText` over ``descriptions`` with the named text encoder.

    The representations of :mod:`stbench.features.representations` call this for the text
    encoders; other representations build their :class:`GeneText` themselves.

    Args:
        descriptions: Gene -> description (the run's panel).
        encoder: ``tfidf`` (weight-free, pooled only), ``minilm`` (all-MiniLM-L6-v2, shipped
            offline; pooled and token states), ``hf`` (``model`` = a local folder or hub id,
            e.g. BioBERT) or ``open_clip`` (``model`` = architecture or ``hf-hub:...``).
        model: The model for ``hf`` / ``open_clip``.
        cache: A :class:`stbench.features.cache.ArrayCache`; embeddings are cached by the
            texts' content and the encoder's version or weight digest.
        max_tokens: Token states are truncated to this many word pieces.
        neural: An already built neural encoder (then ``model`` is not used).

    Returns:
        The gene text; ``token_states`` only for neural encoders that have them.
    """
    from stbench.features.cache import ArrayCache, cache_key

    genes = list(descriptions)
    texts = [descriptions[g] for g in genes]
    index = {g: i for i, g in enumerate(genes)}
    store = cache if cache is not None else ArrayCache(enabled=False)
    if encoder == "tfidf":
        key = cache_key(texts=texts, encoder="tfidf", version=TFIDF_VERSION)
        matrix = store.get_or_compute("text_pooled", key,
                                      lambda: TfidfTextEncoder(texts).embed(texts))

        def embed(names: list[str]) -> np.ndarray:
            return matrix[[index[n] for n in names]]

        return GeneText(descriptions, embed=embed)
    if neural is None:
        neural = _make_neural(encoder, model)
    return _neural_gene_text(descriptions, neural, encoder, store, max_tokens)


def _make_neural(encoder: str, model: str | None) -> TextEncoder:
    """The neural text encoder ``encoder`` (with ``model`` for ``hf`` / ``open_clip``)."""
    from stbench.features.text_encoders import make_text_encoder, text_encoder_kwargs

    return make_text_encoder(encoder, **text_encoder_kwargs(encoder, model))


def _neural_gene_text(descriptions: dict[str, str], neural, encoder: str, store,
                      max_tokens: int) -> GeneText:
    """Pooled embeddings and token states of ``neural``, cached by texts and weights digest."""
    from stbench.features.cache import cache_key

    genes = list(descriptions)
    texts = [descriptions[g] for g in genes]
    index = {g: i for i, g in enumerate(genes)}
    key = cache_key(texts=texts, encoder=encoder, digest=neural.digest(), max_tokens=max_tokens)
    memo: dict[str, np.ndarray] = {}

    def pooled() -> np.ndarray:
        if "pooled" not in memo:
            memo["pooled"] = store.get_or_compute("text_pooled", key, lambda: neural.embed(texts))
        return memo["pooled"]

    def tokens() -> tuple[np.ndarray, np.ndarray]:
        if "states" not in memo:
            computed: dict[str, np.ndarray] = {}

            def states() -> np.ndarray:
                s, m = neural.token_states(texts, max_length=max_tokens)
                computed["mask"] = m
                return s.astype(np.float16)

            memo["states"] = store.get_or_compute("text_tokens", key, states)
            memo["mask"] = store.get_or_compute(
                "text_tokens_mask", key,
                lambda: computed["mask"] if "mask" in computed
                else neural.token_states(texts, max_length=max_tokens)[1])
        return memo["states"], memo["mask"]

    def embed(names: list[str]) -> np.ndarray:
        return pooled()[[index[n] for n in names]]

    def token_states(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        states, mask = tokens()
        rows = [index[n] for n in names]
        m = mask[rows]
        t = int(m.sum(1).max()) if len(rows) and m.size else 0
        return states[rows][:, :t].astype(np.float32), m[:, :t]

    has_tokens = hasattr(neural, "token_states")
    return GeneText(descriptions, embed=embed, token_states=token_states if has_tokens else None)
