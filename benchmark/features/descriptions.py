"""Gene descriptions for the zero-shot track.

Genes never seen in training are predicted from their text descriptions. stbench ships a table
of human gene descriptions (``stbench/datasets/gene_descriptions.tsv.gz``, built by the
source checkout's ``tools/build_gene_descriptions.py`` from NCBI Gene and the Gene Ontology;
see ``datasets/GENE_DESCRIPTIONS.md``), and a user may supply their own texts with
``genes.descriptions=PATH``. User texts take precedence over the shipped ones.

Symbols are resolved against the shipped table exactly first, then case-insensitively, then
through an alias (a previous symbol or synonym) that names exactly one gene.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from stbench.errors import DataError

TABLE_FILE = "gene_descriptions.tsv.gz"
#: Columns of the shipped table, in order.
COLUMNS: tuple[str, ...] = (
    "symbol",
    "aliases",
    "entrez_id",
    "name",
    "go_bp",
    "go_mf",
    "go_cc",
    "text",
)
_REBUILD = 'reinstall stbench, or rebuild it from a source checkout: ' \
    'pip install -e ".[build-genes]" && python tools/build_gene_descriptions.py'  # fmt: skip
_USER_FIX = (
    "pass genes.descriptions=PATH, a TSV file (symbol<TAB>description per line, optional "
    "header 'symbol<TAB>description') or a JSON file ({symbol: description}) that describes "
    "these symbols"
)
_SHOW_MISSING = 5


def shipped_table_path() -> Path:
    """Path of the gene-description table shipped inside the ``stbench.datasets`` package.

    Returns:
        The path of ``gene_descriptions.tsv.gz`` (it may not exist in a broken install).
    """
    return Path(str(resources.files("stbench.datasets") / TABLE_FILE))


class DescriptionTable:
    """Gene descriptions read from a table with the columns :data:`COLUMNS`.

    Args:
        path: A ``.tsv.gz`` (or plain ``.tsv``) file with the header :data:`COLUMNS`.

    Raises:
        DataError: The file is missing or not a valid description table.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: dict[str, dict[str, str]] = {}
        self._upper: dict[str, list[str]] = {}
        self._alias: dict[str, list[str]] = {}
        self._alias_upper: dict[str, list[str]] = {}
        for rec in self._read(self.path):
            symbol = rec["symbol"]
            if symbol in self._records:  # duplicate official symbol: keep the first row
                continue
            self._records[symbol] = rec
            self._upper.setdefault(symbol.upper(), []).append(symbol)
            for alias in filter(None, rec["aliases"].split("|")):
                _add_unique(self._alias, alias, symbol)
                _add_unique(self._alias_upper, alias.upper(), symbol)

    @staticmethod
    def _read(path: Path) -> list[dict[str, str]]:
        where = str(path)
        if not path.is_file():
            raise DataError("gene-description table not found", where=where, fix=_REBUILD)
        try:
            if path.name.endswith(".gz"):
                with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
                    text = fh.read()
            else:
                text = path.read_text(encoding="utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise DataError(
                f"cannot read the gene-description table: {exc}", where=where, fix=_REBUILD
            ) from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines or tuple(lines[0].split("\t")) != COLUMNS:
            raise DataError(
                f"gene-description table header is not {'<TAB>'.join(COLUMNS)}",
                where=where,
                fix=_REBUILD,
            )
        records = []
        for i, line in enumerate(lines[1:], start=2):
            cells = line.split("\t")
            if len(cells) != len(COLUMNS) or not cells[0] or not cells[-1]:
                raise DataError(
                    f"malformed row in the gene-description table (line {i})",
                    where=where,
                    fix=_REBUILD,
                )
            records.append(dict(zip(COLUMNS, cells)))
        return records

    @classmethod
    def shipped(cls) -> DescriptionTable:
        """The shipped table, loaded once per process.

        Returns:
            The :class:`DescriptionTable` of :func:`shipped_table_path`.
        """
        return _shipped_table()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.resolve(symbol) is not None

    @property
    def symbols(self) -> list[str]:
        """All official symbols, sorted."""
        return sorted(self._records)

    def resolve(self, symbol: str) -> str | None:
        """The official symbol for ``symbol``.

        Tries, in order: the exact symbol, the symbol ignoring case, an alias that names a
        single gene, and that alias ignoring case. An ambiguous step yields ``None``.

        Args:
            symbol: A gene symbol as a dataset spells it.

        Returns:
            The official symbol, or ``None`` if unknown or ambiguous.
        """
        symbol = symbol.strip()
        if not symbol:
            return None
        if symbol in self._records:
            return symbol
        upper = symbol.upper()
        hits = self._upper.get(upper)
        if hits:
            return hits[0] if len(hits) == 1 else None
        hits = self._alias.get(symbol)
        if hits:
            return hits[0] if len(hits) == 1 else None
        hits = self._alias_upper.get(upper)
        if hits:
            return hits[0] if len(hits) == 1 else None
        return None

    def lookup(self, symbol: str) -> str | None:
        """The description text of ``symbol``, as stored (it starts with the official symbol).

        Args:
            symbol: A gene symbol; resolved as in :meth:`resolve`.

        Returns:
            The text, or ``None`` if the symbol does not resolve.
        """
        official = self.resolve(symbol)
        return None if official is None else self._records[official]["text"]

    def record(self, symbol: str) -> dict[str, str]:
        """All columns of the gene ``symbol`` resolves to.

        Args:
            symbol: A gene symbol; resolved as in :meth:`resolve`.

        Returns:
            A new dict mapping each of :data:`COLUMNS` to its cell (lists stay ``|``-joined).

        Raises:
            DataError: The symbol is unknown or ambiguous.
        """
        official = self.resolve(symbol)
        if official is None:
            raise DataError(
                f"no gene description for {symbol!r} (unknown or ambiguous symbol)",
                where=str(self.path),
                fix=_USER_FIX,
            )
        return dict(self._records[official])

    def text_for(self, symbol: str) -> str | None:
        """The text for ``symbol``, starting with ``symbol`` as given.

        When the symbol resolved to a different official symbol, the text starts with
        ``"SYMBOL (OFFICIAL): ..."``.

        Args:
            symbol: A gene symbol as a dataset spells it.

        Returns:
            The text, or ``None`` if the symbol does not resolve.
        """
        official = self.resolve(symbol)
        if official is None:
            return None
        text = self._records[official]["text"]
        if symbol == official or not text.startswith(official):
            return text
        return f"{symbol} ({official}){text[len(official):]}"


def _add_unique(index: dict[str, list[str]], key: str, symbol: str) -> None:
    hits = index.setdefault(key, [])
    if symbol not in hits:
        hits.append(symbol)


@lru_cache(maxsize=1)
def _shipped_table() -> DescriptionTable:
    return DescriptionTable(shipped_table_path())


# ---------------------------------------------------------------------------------------------
# User description files
# ---------------------------------------------------------------------------------------------


def load_user_descriptions(path: str | Path) -> dict[str, str]:
    """Read a user file of gene descriptions (``genes.descriptions=PATH``).

    Formats, chosen by suffix:

    * ``.tsv``, ``.txt``, ``.tsv.gz``: two tab-separated columns, symbol and description, one
      gene per line; an optional first line ``symbol<TAB>description``; blank lines and lines
      starting with ``#`` are ignored.
    * ``.json``: an object ``{"SYMBOL": "description", ...}`` or a list of objects
      ``{"symbol": ..., "description": ...}``.

    Args:
        path: The file.

    Returns:
        Symbol (as written, whitespace-stripped) -> description, in file order.

    Raises:
        DataError: The file is missing, unreadable, empty or malformed, a symbol appears twice,
            or a symbol or description is empty.
    """
    p, where = Path(path), str(path)
    text, kind = _read_description_file(p, where)
    entries = _parse_json(text, where) if kind == "json" else _parse_tsv(text, where)
    if not entries:
        raise DataError(
            "gene-description file has no descriptions",
            where=where,
            fix="add one symbol and its description per gene",
        )
    return _checked_entries(entries, where)


def _read_description_file(p: Path, where: str) -> tuple[str, str]:
    """The file's text and its kind (``json`` or ``tsv``, by suffix)."""
    name = p.name.lower()
    if name.endswith(".json"):
        kind = "json"
    elif name.endswith((".tsv", ".txt", ".tsv.gz")):
        kind = "tsv"
    else:
        raise DataError(
            "unsupported gene-description file type (expected .tsv, .txt, .tsv.gz or .json)",
            where=where,
            fix="rename the file with one of these suffixes, in the matching format",
        )
    if not p.is_file():
        raise DataError(
            "gene-description file is a directory" if p.is_dir() else
            "gene-description file not found",
            where=where,
            fix="check genes.descriptions=PATH points to an existing file",
        )
    try:
        if name.endswith(".gz"):
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                return fh.read(), kind
        return p.read_text(encoding="utf-8"), kind
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the gene-description file: {exc}",
            where=where,
            fix="save it as UTF-8 text (gzip-compressed only if named .tsv.gz)",
        ) from exc


def _checked_entries(entries: list[tuple[str, str, str]], where: str) -> dict[str, str]:
    """Symbol -> description; empty symbols or descriptions and duplicates are DataErrors."""
    out: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    for symbol, description, loc in entries:
        symbol, description = symbol.strip(), " ".join(description.split())
        at = f"{where}:{loc[5:]}" if loc.startswith("line ") else where
        if not symbol:
            raise DataError(
                f"empty gene symbol ({loc})", where=at,
                fix="give every description a gene symbol",
            )  # fmt: skip
        if not description:
            raise DataError(
                f"empty description for {symbol!r} ({loc})",
                where=at,
                fix=f"write a description for {symbol} or remove it from the file",
            )
        if symbol in out:
            raise DataError(
                f"duplicate gene symbol {symbol!r} ({loc}; first at {seen_at[symbol]})",
                where=at,
                fix="keep one description per symbol",
            )
        out[symbol] = description
        seen_at[symbol] = loc
    return out


def _parse_tsv(text: str, where: str) -> list[tuple[str, str, str]]:
    entries: list[tuple[str, str, str]] = []
    first = True
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split("\t")
        if first:
            first = False
            if [c.strip().lower() for c in cells] == ["symbol", "description"]:
                continue
        if len(cells) != 2:
            raise DataError(
                f"expected 2 tab-separated columns (symbol, description), got {len(cells)}",
                where=f"{where}:{i}",
                fix="write one 'SYMBOL<TAB>description' per line, with no other tabs",
            )
        entries.append((cells[0], cells[1], f"line {i}"))
    return entries


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise _DuplicateKey(dupes[0])
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def _parse_json(text: str, where: str) -> list[tuple[str, str, str]]:
    fix = 'write {"SYMBOL": "description", ...} or [{"symbol": ..., "description": ...}, ...]'
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise DataError(
            f"duplicate gene symbol {exc.args[0]!r}", where=where,
            fix="keep one description per symbol",
        ) from exc  # fmt: skip
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc}", where=where, fix=fix) from exc
    entries: list[tuple[str, str, str]] = []
    if isinstance(data, dict):
        for symbol, description in data.items():
            if not isinstance(description, str):
                raise DataError(
                    f"description of {symbol!r} is not a string", where=where, fix=fix
                )
            entries.append((symbol, description, f"key {symbol!r}"))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("symbol"), str)
                or not isinstance(item.get("description"), str)
            ):
                raise DataError(
                    f"item {i} is not an object with string 'symbol' and 'description'",
                    where=where,
                    fix=fix,
                )
            entries.append((item["symbol"], item["description"], f"item {i}"))
    else:
        raise DataError("JSON must be an object or a list", where=where, fix=fix)
    return entries


# ---------------------------------------------------------------------------------------------
# Descriptions for a gene panel
# ---------------------------------------------------------------------------------------------


def descriptions_for(
    genes: list[str],
    user_file: str | Path | None = None,
    *,
    table: DescriptionTable | None = None,
) -> dict[str, str]:
    """The description text of every gene in ``genes``.

    A gene's text is the user's (exact symbol match in ``user_file``) if given, else the
    shipped one, which starts with the symbol as requested (``"FOO (BAR): ..."`` when ``FOO``
    resolved to the official symbol ``BAR``).

    Args:
        genes: Gene symbols as the dataset spells them.
        user_file: Optional user description file (see :func:`load_user_descriptions`).
        table: Table to use instead of the shipped one.

    Returns:
        Symbol (as requested) -> text, in the order of ``genes``.

    Raises:
        DataError: Some genes have no description (the message names them), or the user
            file is invalid.
    """
    user = load_user_descriptions(user_file) if user_file is not None else {}
    if table is None and any(g not in user for g in genes):
        table = DescriptionTable.shipped()
    out: dict[str, str] = {}
    missing: list[str] = []
    for gene in genes:
        if gene in out:
            continue
        text = user.get(gene)
        if text is None and table is not None:
            text = table.text_for(gene)
        if text is None:
            missing.append(gene)
        else:
            out[gene] = text
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise DataError(
            f"no description for {len(missing)} of {len(set(genes))} genes: {shown}{more}",
            where=str(user_file) if user_file is not None else None,
            fix=_USER_FIX,
        )
    return out


def coverage(
    symbols: list[str],
    user_file: str | Path | None = None,
    *,
    table: DescriptionTable | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``symbols`` into those with and without a description.

    Args:
        symbols: Gene symbols as a dataset spells them.
        user_file: Optional user description file (see :func:`load_user_descriptions`).
        table: Table to use instead of the shipped one.

    Returns:
        ``(covered, missing)``, each in the order of ``symbols``.

    Raises:
        DataError: The user file is invalid.
    """
    user = load_user_descriptions(user_file) if user_file is not None else {}
    if table is None and any(s not in user for s in symbols):
        table = DescriptionTable.shipped()
    covered: list[str] = []
    missing: list[str] = []
    for s in symbols:
        found = s in user or (table is not None and table.resolve(s) is not None)
        (covered if found else missing).append(s)
    return covered, missing


__all__ = [
    "COLUMNS",
    "DescriptionTable",
    "coverage",
    "descriptions_for",
    "load_user_descriptions",
    "shipped_table_path",
]
