"""User gene-embedding tables: reading and validating ``.tsv``/``.csv``, ``.npz`` and ``.parquet``.

A table maps gene symbols to fixed-length vectors (a GenePT, scGPT or any other gene embedding
a researcher holds as a file):

* ``.tsv`` / ``.csv`` (optionally ``.gz``): the symbol, then one column per dimension; an
  optional header line (recognised when its first cell is empty or a word such as ``symbol`` or
  ``gene``, when none of its other cells is a number, or when they are (at least 8) column
  numbers ``0..d-1`` / ``1..d`` as ``DataFrame.to_csv`` writes them);
* ``.npz``: arrays ``symbols`` (strings) and ``embeddings`` (genes x dims, numeric), read with
  ``allow_pickle=False``;
* ``.parquet`` (needs ``pyarrow``): the first column holds the symbols, then either one
  numeric column per dimension or a single list column of vectors.

Nothing is ever unpickled. Every table is validated before any work: an empty table, a ragged
row, a non-numeric cell, a NaN or infinite value or a duplicate symbol is a
:class:`~stbench.errors.DataError` (exit code 2) naming the file and the row.

Text tables are parsed by pandas' C reader (a 60,000 x 256 table in about a second); only when
that parse finds a problem does a line-by-line scan run to name the first bad line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stbench.errors import ConfigError, DataError

#: First cells that mark a header line.
HEADER_WORDS = frozenset({"", "symbol", "symbols", "gene", "genes", "gene_symbol", "gene_name",
                          "genename", "hgnc_symbol", "name", "id", "gene_id", "index", "#symbol"})
TEXT_SUFFIXES = {".tsv": "\t", ".tab": "\t", ".txt": "\t", ".csv": ","}
#: Largest magnitude a float32 holds.
_F32_MAX = float(np.finfo(np.float32).max)
_INT = re.compile(r"^\s*\d+\s*$")
_FIX = ("write one row per gene: the symbol, then one finite number per dimension, every row "
        "with the same number of values and every symbol once")
_PICKLE_FIX = ("stbench never unpickles an input; convert it with your own Python to .npz "
               "(np.savez(PATH, symbols=np.array(genes, dtype=str), embeddings=matrix)), "
               "see the README section 'Gene representations'")


@dataclass(frozen=True)
class GeneTable:
    """A validated gene-embedding table.

    Attributes:
        symbols: Gene symbols, unique, in file order.
        embeddings: ``(len(symbols), dim)`` float32, every value finite.
        path: The file it was read from.
        digest: sha256 of the file's bytes.
    """

    symbols: np.ndarray
    embeddings: np.ndarray
    path: str
    digest: str

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 4 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def table_format(path: str | Path) -> str:
    """``tsv``, ``csv``, ``npz`` or ``parquet`` from the file name.

    Raises:
        DataError: A pickle, or a suffix this reader does not know.
    """
    name = Path(path).name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    suffix = Path(stem).suffix
    if suffix in TEXT_SUFFIXES:
        return "csv" if suffix == ".csv" else "tsv"
    if suffix in (".npz", ".parquet", ".pq") and not name.endswith(".gz"):
        return "parquet" if suffix in (".parquet", ".pq") else "npz"
    if suffix in (".pkl", ".pickle", ".pck", ".joblib"):
        raise DataError("a pickled embedding table cannot be read", where=str(path),
                        fix=_PICKLE_FIX)
    raise DataError(f"unknown embedding table format {suffix or '(no suffix)'!r}",
                    where=str(path), fix="use .tsv, .csv (optionally .gz), .npz or .parquet")


def read_gene_table(path: str | Path, digest: str | None = None) -> GeneTable:
    """Read and validate a gene-embedding table.

    Args:
        path: The table file (format from its suffix, see the module docstring).
        digest: Its sha256 when already known (saves hashing it again).

    Returns:
        The validated table.

    Raises:
        DataError: The file is missing, unreadable, empty or malformed (naming the row).
        ConfigError: A ``.parquet`` file while ``pyarrow`` is not installed.
    """
    path = Path(path).expanduser()
    kind = table_format(path)
    if not path.is_file():
        raise DataError("embedding table not found", where=str(path),
                        fix="set genes.embeddings=PATH to an existing .tsv/.csv/.npz/.parquet file")
    if kind == "npz":
        symbols, matrix = _read_npz(path)
    elif kind == "parquet":
        symbols, matrix = _read_parquet(path)
    else:
        symbols, matrix = _read_text(path, "," if kind == "csv" else "\t")
    return GeneTable(symbols, matrix, str(path), digest or file_digest(path))


# ---------------------------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------------------------


def _fail(what: str, path: Path, row: str) -> DataError:
    return DataError(what, where=f"{path}, {row}", fix=_FIX)


def _check(symbols: np.ndarray, matrix: np.ndarray, path: Path, label) -> None:
    """Empty table, empty or duplicate symbols, non-finite values; ``label(i)`` names row ``i``."""
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise _fail("the embedding table is empty (no gene rows)", path, "row 1")
    if matrix.shape[1] == 0:
        raise _fail("the embedding table has no embedding column", path, label(0))
    blank = np.flatnonzero(np.char.str_len(symbols.astype(str)) == 0)
    if blank.size:
        raise _fail("empty gene symbol", path, label(int(blank[0])))
    dup = _first_duplicate(symbols)
    if dup is not None:
        first = int(np.flatnonzero(symbols == symbols[dup])[0])
        raise _fail(f"duplicate symbol {symbols[dup]!r} (first at {label(first)})", path,
                    label(dup))
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise _fail(f"NaN or infinite value for {symbols[i]!r}", path, label(i))


def _first_duplicate(symbols: np.ndarray) -> int | None:
    """Index of the first row whose symbol appeared on an earlier row, or None."""
    _, first, counts = np.unique(symbols, return_index=True, return_counts=True)
    if (counts == 1).all():
        return None
    seen: set[str] = set()
    for i, s in enumerate(symbols.tolist()):
        if s in seen:
            return i
        seen.add(s)
    return None  # pragma: no cover - unique said otherwise


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``symbols`` and ``embeddings`` of an ``.npz`` (no pickle), validated."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"symbols", "embeddings"} <= keys:
                raise DataError(f"the .npz lacks {sorted({'symbols', 'embeddings'} - keys)} "
                                f"(it has {sorted(keys)})", where=str(path),
                                fix="np.savez(PATH, symbols=np.array(genes, dtype=str), "
                                    "embeddings=matrix)")
            symbols, matrix = z["symbols"], z["embeddings"]
    except DataError:
        raise
    except ValueError as exc:  # an object array: reading it would unpickle
        raise DataError(f"the .npz holds a pickled object array ({exc})", where=str(path),
                        fix="save symbols as np.array(genes, dtype=str) and embeddings as a "
                            "numeric 2-D array") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read the .npz ({exc})", where=str(path),
                        fix="write it with np.savez or np.savez_compressed") from exc
    if symbols.dtype.kind == "S":
        symbols = np.char.decode(symbols, "utf-8")
    if symbols.dtype.kind != "U" or symbols.ndim != 1:
        raise DataError(f"'symbols' must be a 1-D string array, not {symbols.dtype}{symbols.shape}",
                        where=str(path), fix="np.array(genes, dtype=str)")
    if matrix.dtype.kind not in "fiu" or matrix.ndim != 2:
        raise _fail(f"'embeddings' must be a numeric 2-D array, not {matrix.dtype} of shape "
                    f"{matrix.shape}", path, "row 1")
    if len(symbols) != matrix.shape[0]:
        row = min(len(symbols), matrix.shape[0]) + 1
        raise _fail(f"'symbols' has {len(symbols)} entries but 'embeddings' {matrix.shape[0]} rows",
                    path, f"row {row}")
    matrix = _to_float32(matrix)

    def label(i: int) -> str:
        return f"row {i + 1}"

    _check(symbols, matrix, path, label)
    return symbols, matrix


def _to_float32(matrix: np.ndarray) -> np.ndarray:
    """float32, with values beyond the float32 range becoming inf (caught as non-finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(matrix, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# .parquet
# ---------------------------------------------------------------------------------------------


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``.parquet`` table: symbol column, then numeric columns or one list column."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError("reading a .parquet embedding table needs pyarrow", where=str(path),
                          fix="`pip install pyarrow`, or save the table as .npz or .tsv") from exc
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read the .parquet file ({exc})", where=str(path),
                        fix="write it with DataFrame.to_parquet") from exc
    if table.num_columns < 2:
        raise _fail("a parquet table needs a symbol column and embedding columns", path, "row 1")
    first = table.column(0)
    if not (pa.types.is_string(first.type) or pa.types.is_large_string(first.type)):
        raise _fail(f"the first column ({table.column_names[0]!r}) must hold gene symbols "
                    f"(strings), not {first.type}", path, "row 1")
    symbols = np.asarray(first.to_pylist(), dtype=object)
    nulls = np.flatnonzero(np.asarray(first.is_null()))
    if nulls.size:
        raise _fail("missing gene symbol", path, f"row {int(nulls[0]) + 1}")
    symbols = symbols.astype(str)
    rest = table.drop_columns([table.column_names[0]])
    if rest.num_columns == 1 and pa.types.is_list(rest.column(0).type) or (
            rest.num_columns == 1 and pa.types.is_large_list(rest.column(0).type)):
        matrix = _parquet_lists(rest.column(0), path)
    else:
        matrix = _parquet_wide(rest, path)

    def label(i: int) -> str:
        return f"row {i + 1}"

    _check(symbols, matrix, path, label)
    return symbols, matrix


def _parquet_lists(column, path: Path) -> np.ndarray:
    """Stack a list<number> column; ragged or null rows name their row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if not (pa.types.is_floating(column.type.value_type) or pa.types.is_integer(column.type.value_type)):
        raise _fail(f"the vector column holds {column.type.value_type}, not numbers", path, "row 1")
    lengths = np.asarray(pc.list_value_length(column).fill_null(-1))
    if lengths.size == 0:
        raise _fail("the embedding table is empty (no gene rows)", path, "row 1")
    bad = np.flatnonzero(lengths != lengths[0])
    if lengths[0] < 0 or bad.size:
        i = 0 if lengths[0] < 0 else int(bad[0])
        raise _fail(f"ragged row: {max(int(lengths[i]), 0)} values where row 1 has "
                    f"{int(lengths[0])}", path, f"row {i + 1}")
    values = column.flatten()
    if values.null_count:
        i = int(np.flatnonzero(np.asarray(values.is_null()))[0]) // max(int(lengths[0]), 1)
        raise _fail("missing value", path, f"row {i + 1}")
    flat = values.to_numpy(zero_copy_only=False)
    return _to_float32(flat.reshape(len(lengths), int(lengths[0])))


def _parquet_wide(table, path: Path) -> np.ndarray:
    """One numeric column per dimension; a non-numeric or null cell names its row."""
    import pandas as pd
    import pyarrow as pa

    for name, column in zip(table.column_names, table.columns):
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            values = pd.to_numeric(pd.Series(column.to_pylist(), dtype=object), errors="coerce")
            i = int(np.flatnonzero(values.isna().to_numpy())[0]) if values.isna().any() else 0
            raise _fail(f"non-numeric cell in column {name!r} ({column.type})", path,
                        f"row {i + 1}")
        if column.null_count:
            i = int(np.flatnonzero(np.asarray(column.is_null()))[0])
            raise _fail(f"missing value in column {name!r}", path, f"row {i + 1}")
    if table.num_rows == 0:
        raise _fail("the embedding table is empty (no gene rows)", path, "row 1")
    return _to_float32(np.column_stack([c.to_numpy() for c in table.columns]))


# ---------------------------------------------------------------------------------------------
# .tsv / .csv
# ---------------------------------------------------------------------------------------------


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def is_header(cells: list[str]) -> bool:
    """Whether the first line of a text table is a header (see the module docstring)."""
    if not cells:
        return False
    if cells[0].strip().lower() in HEADER_WORDS:
        return True
    rest = [c.strip() for c in cells[1:]]
    if rest and not any(_is_number(c) for c in rest):
        return True
    if len(rest) >= 8 and all(_INT.match(c) for c in rest):  # column numbers, not a vector
        numbers = [int(c) for c in rest]
        return numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[0] in (0, 1)
    return False


def _first_line(path: Path, sep: str) -> list[str] | None:
    """The cells of the first non-blank line, or None for an empty file."""
    try:
        with _open_text(path) as fh:
            for cells in csv.reader(fh, delimiter=sep):
                if cells and any(c.strip() for c in cells):
                    return cells
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise DataError(f"cannot read the embedding table ({exc})", where=str(path),
                        fix="pass a UTF-8 text table") from exc
    return None


def _read_text(path: Path, sep: str) -> tuple[np.ndarray, np.ndarray]:
    """Fast columnar parse; on any sign of trouble, :func:`_scan_text` names the bad line."""
    first = _first_line(path, sep)
    if first is None:
        raise _fail("the embedding table is empty (no gene rows)", path, "line 1")
    header = is_header(first)
    parsed = _fast_text(path, sep, header, len(first))
    if parsed is None:
        return _scan_text(path, sep, header)
    symbols, matrix = parsed
    expected = len(first) - 1 if header else None
    if (matrix.shape[1] == 0 or (expected is not None and matrix.shape[1] != expected)
            or not np.isfinite(matrix).all() or _first_duplicate(symbols) is not None
            or (np.char.str_len(symbols) == 0).any()):
        return _scan_text(path, sep, header)
    return symbols, matrix


def _fast_text(path: Path, sep: str, header: bool,
               width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(symbols, float32 matrix) by pyarrow's CSV reader (pandas' without pyarrow), or None
    when the file does not parse as one symbol column and ``width - 1`` numeric columns."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return _fast_text_pandas(path, sep, header)
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(autogenerate_column_names=True,
                                                 skip_rows=1 if header else 0),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(column_types={
                "f0": pa.string(), **{f"f{j}": pa.float32() for j in range(1, width)}},
                                                 null_values=[""], strings_can_be_null=True))
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return None
    columns = table.columns
    if len(columns) < 2 or any(c.null_count for c in columns) or not all(
            pa.types.is_floating(c.type) or pa.types.is_integer(c.type) for c in columns[1:]):
        return None
    symbols = np.asarray(columns[0].to_pylist(), dtype=str)
    matrix = np.empty((table.num_rows, len(columns) - 1), np.float32)
    for j, column in enumerate(columns[1:]):
        matrix[:, j] = _to_float32(column.to_numpy())
    return np.char.strip(symbols), matrix


def _fast_text_pandas(path: Path, sep: str, header: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The pandas fallback of :func:`_fast_text`."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep=sep, header=None, skiprows=1 if header else 0,
                            dtype={0: str}, keep_default_na=False, na_values=[""],
                            engine="c", low_memory=False)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    values = frame.iloc[:, 1:]
    if not all(d.kind in "fiu" for d in values.dtypes) or frame.iloc[:, 0].isna().any():
        return None
    return np.char.strip(frame.iloc[:, 0].to_numpy().astype(str)), _to_float32(values.to_numpy())


def _scan_text(path: Path, sep: str, header: bool) -> tuple[np.ndarray, np.ndarray]:
    """Line-by-line parse that raises on the first bad line (named by its line number)."""
    symbols: list[str] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    width: tuple[int, int] | None = None  # (values per row, line that set it)
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep)
        for cells in reader:
            line = reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue
            if header:
                header, width = False, (len(cells) - 1, line)
                continue
            where = f"line {line}"
            if width is None:
                width = (len(cells) - 1, line)
            if len(cells) - 1 != width[0]:
                raise _fail(f"ragged row: {len(cells) - 1} values where line {width[1]} has "
                            f"{width[0]}", path, where)
            symbol = cells[0].strip()
            if not symbol:
                raise _fail("empty gene symbol", path, where)
            if symbol in seen:
                raise _fail(f"duplicate symbol {symbol!r} (first on line {seen[symbol]})", path,
                            where)
            seen[symbol] = line
            rows.append(_parse_cells(cells[1:], path, where, symbol))
            symbols.append(symbol)
    if not rows:
        raise _fail("the embedding table is empty (no gene rows)", path, "line 1")
    if width is not None and width[0] == 0:
        raise _fail("the embedding table has no embedding column", path, f"line {width[1]}")
    return np.asarray(symbols, dtype=str), np.asarray(rows, dtype=np.float32)


def _parse_cells(cells: list[str], path: Path, where: str, symbol: str) -> list[float]:
    out = []
    for j, cell in enumerate(cells, start=2):
        try:
            value = float(cell)
        except ValueError:
            raise _fail(f"non-numeric cell {cell.strip()[:30]!r} in column {j} of {symbol!r}",
                        path, where) from None
        if not math.isfinite(value) or abs(value) > _F32_MAX:
            raise _fail(f"NaN or infinite value {cell.strip()!r} in column {j} of {symbol!r}",
                        path, where)
        out.append(value)
    return out


def write_gene_table(path: str | Path, symbols: list[str], embeddings: np.ndarray) -> Path:
    """Write a table in the format of ``path``'s suffix (for tests, tools and conversions)."""
    path = Path(path)
    kind = table_format(path)
    matrix = np.asarray(embeddings)
    if kind == "npz":
        np.savez(path, symbols=np.asarray(symbols, dtype=str), embeddings=matrix)
    elif kind == "parquet":
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=[f"d{j}" for j in range(matrix.shape[1])])
        frame.insert(0, "symbol", list(symbols))
        frame.to_parquet(path, index=False)
    else:
        sep = "," if kind == "csv" else "\t"
        buf = io.StringIO()
        for s, row in zip(symbols, matrix):
            buf.write(sep.join([s, *(repr(float(v)) for v in row)]) + "\n")
        data = buf.getvalue().encode()
        path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


__all__ = ["GeneTable", "file_digest", "is_header", "read_gene_table", "table_format",
           "write_gene_table"]
