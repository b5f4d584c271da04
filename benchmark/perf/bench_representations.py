"""Gene-representation load speed: a large user embedding table, cold and from the cache.

For each format (default ``npz,parquet,tsv,csv``) it writes a synthetic table of ``--genes``
genes (default 60,000, the size of a whole-genome table such as GenePT's) x ``--dims``
float32 dimensions (default 256) and times

* ``cold``: :func:`stbench.features.gene_tables.read_gene_table` -- parse and validate (NaN or
  inf, duplicates, ragged rows, non-numeric cells) of the whole file;
* ``first_run``: ``make_representation("table")`` with an empty feature cache plus building the
  panel's vectors (``--panel`` genes, default 785, the her2st literature panel's size): what the
  first run with a new file pays (hash, parse, validate, store in the cache);
* ``warm``: the same with the cache filled: what every later run pays (hash the file, read
  the parsed arrays from the cache, build the panel);

and the shipped ``go`` representation (load + 785-gene panel). Timings are the best of
``--repeats``, wall clock and process CPU, with the machine's load average recorded (the
project's machines are shared). The target (issue 16): a 60,000-gene table loads in < 2 s.

    python -m stbench.perf.bench_representations                      # 60k x 256, best of 3
    python -m stbench.perf.bench_representations --genes 500 --dims 8 --repeats 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stbench.perf._common import peak_rss_mb, timed, two_column_table

TARGET_SECONDS = 2.0
FORMATS = ("npz", "parquet", "tsv", "csv")


def write_table(path: Path, symbols: list[str], matrix: np.ndarray) -> None:
    """A table in ``path``'s format (text through pyarrow's fast writer when installed)."""
    from stbench.features.gene_tables import write_gene_table

    if path.suffix in (".tsv", ".csv"):
        try:
            import pyarrow as pa
            import pyarrow.csv as pacsv
        except ImportError:
            write_gene_table(path, symbols, matrix)
            return
        columns = {"symbol": pa.array(symbols)}
        columns.update({f"d{j}": pa.array(matrix[:, j]) for j in range(matrix.shape[1])})
        pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(
            delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        write_gene_table(path, symbols, matrix)


def _best(fn, repeats: int) -> tuple[float, float]:
    """(best wall, its CPU) seconds of ``fn`` over ``repeats`` calls."""
    runs = [timed(fn)[1:] for _ in range(repeats)]
    return min(runs)


def bench_format(path: Path, panel: list[str], repeats: int, workdir: Path) -> dict:
    """Cold parse, first run (empty cache) and warm run (cache filled) of one table file."""
    from stbench.features.cache import ArrayCache
    from stbench.features.gene_tables import read_gene_table
    from stbench.features.representations import RepresentationOptions, make_representation

    cold = _best(lambda: read_gene_table(path), repeats)
    caches = iter(range(10 ** 6))

    def first_run() -> None:
        cache = ArrayCache(workdir / f"cache-{next(caches)}")
        rep = make_representation("table", RepresentationOptions(embeddings=str(path),
                                                                 cache=cache))
        rep.build(panel).embed(panel)

    first = _best(first_run, repeats)
    warm_cache = ArrayCache(workdir / "cache-warm")
    make_representation("table", RepresentationOptions(embeddings=str(path), cache=warm_cache))

    def warm_run() -> None:
        rep = make_representation("table", RepresentationOptions(embeddings=str(path),
                                                                 cache=warm_cache))
        rep.build(panel).embed(panel)

    warm = _best(warm_run, repeats)
    return {"bytes": path.stat().st_size, "cold_wall_s": cold[0], "cold_cpu_s": cold[1],
            "first_run_wall_s": first[0], "first_run_cpu_s": first[1],
            "warm_wall_s": warm[0], "warm_cpu_s": warm[1],
            "pass_cold": cold[0] < TARGET_SECONDS, "pass_warm": warm[0] < TARGET_SECONDS}


def bench(args: argparse.Namespace) -> dict:
    """Every format and the shipped GO representation."""
    from stbench.features.representations import make_representation

    rng = np.random.default_rng(args.seed)
    symbols = [f"GENE{i:06d}" for i in range(args.genes)]
    matrix = rng.standard_normal((args.genes, args.dims)).astype(np.float32)
    panel = symbols[:: max(1, args.genes // args.panel)][: args.panel]
    out: dict = {"genes": args.genes, "dims": args.dims, "panel": len(panel),
                 "repeats": args.repeats, "formats": {}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        for fmt in args.formats.split(","):
            path = work / f"table.{fmt}"
            write_table(path, symbols, matrix)
            out["formats"][fmt] = bench_format(path, panel, args.repeats, work)
    go_panel = _go_panel(args.panel)
    wall, cpu = _best(lambda: make_representation("go").build(go_panel).embed(go_panel),
                      args.repeats)
    out["go"] = {"wall_s": wall, "cpu_s": cpu, "panel": len(go_panel)}
    out["loadavg"] = list(os.getloadavg())
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _go_panel(n: int) -> list[str]:
    from stbench.features.representations import go_table_path

    with np.load(go_table_path(), allow_pickle=False) as z:
        symbols = z["symbols"].tolist()
    return symbols[:: max(1, len(symbols) // n)][:n]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints a table and optionally writes ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genes", type=int, default=60_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--panel", type=int, default=785)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = bench(args)
    result["total_s"] = time.perf_counter() - started
    rows = [("table", f"{args.genes} genes x {args.dims} dims, panel {result['panel']}")]
    for fmt, r in result["formats"].items():
        rows.append((f"{fmt} ({r['bytes'] / 1e6:.0f} MB)",
                     f"cold {r['cold_wall_s']:.2f} s, first run {r['first_run_wall_s']:.2f} s, "
                     f"warm {r['warm_wall_s']:.2f} s (target < {TARGET_SECONDS:.0f} s)"))
    rows.append(("go (shipped)", f"{result['go']['wall_s']:.2f} s for {result['go']['panel']} genes"))
    rows.append(("load average", " ".join(f"{v:.1f}" for v in result["loadavg"])))
    print(two_column_table(rows))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
