"""Paired comparisons between named result files of a board, Holm-corrected.

For each pair ``A:B`` (result-file stems, seeds pooled by the prefix before ``_s<seed>``), the
per-gene PCC and per-gene gene-specific PCC are averaged over the (seed, fold) units of the
seeds both rows share, aligned by gene, and tested with the paired Wilcoxon test; the p-values
of each metric are Holm-corrected over the pairs. This is how the answer tables of
``leaderboards/README.md`` are made::

    python tools/paired_rows.py leaderboards/results/her2st-full \\
        alignst:sgn alignst:seen_mean alignst:alignst_shuffled_text
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from stbench.protocol.metrics import holm, paired_wilcoxon

_SEED = re.compile(r"^(?P<row>.+)_s(?P<seed>\d+)$")


@functools.lru_cache(maxsize=None)
def per_gene(folder: Path, row: str, field: str) -> dict[int, dict[str, float]]:
    """``seed -> gene -> mean over that seed's folds`` of ``per_gene[field]`` for ``row`` (read
    once per process; callers do not modify it)."""
    out: dict[int, dict[str, float]] = {}
    for path in sorted(folder.glob(f"{row}_s*.json")):
        match = _SEED.match(path.stem)
        if not match or match["row"] != row:
            continue
        acc: dict[str, list[float]] = defaultdict(list)
        for fold in json.loads(path.read_text())["folds"]:
            pg = fold.get("per_gene") or {}
            for gene, value in zip(pg.get("gene", []), pg.get(field, [])):
                if value is not None and math.isfinite(float(value)):
                    acc[str(gene)].append(float(value))
        out[int(match["seed"])] = {g: float(np.mean(v)) for g, v in acc.items()}
    return out


def shared_seeds(folder: Path, a: str, b: str) -> list[int]:
    """The seeds for which both rows have a result file."""
    seeds = sorted(set(per_gene(folder, a, "pcc")) & set(per_gene(folder, b, "pcc")))
    if not seeds:
        raise SystemExit(f"{a} and {b} share no seed in {folder}")
    return seeds


def paired(folder: Path, a: str, b: str, field: str, only: list[int] | None = None
           ) -> tuple[float, float, int, list[int]]:
    """``(mean a - b, Wilcoxon p, genes, seeds)`` over genes, on the seeds both rows share
    (``only``: these of them)."""
    ga, gb = per_gene(folder, a, field), per_gene(folder, b, field)
    seeds = [s for s in shared_seeds(folder, a, b) if only is None or s in only]

    def averaged(rows: dict[int, dict[str, float]]) -> dict[str, float]:
        acc: dict[str, list[float]] = defaultdict(list)
        for s in seeds:
            for g, v in rows[s].items():
                acc[g].append(v)
        return {g: float(np.mean(v)) for g, v in acc.items()}

    va, vb = averaged(ga), averaged(gb)
    genes = sorted(set(va) & set(vb))
    xa = np.array([va[g] for g in genes])
    xb = np.array([vb[g] for g in genes])
    return float(np.mean(xa - xb)), float(paired_wilcoxon(xa, xb)[1]), len(genes), seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of result JSONs named ROW_sSEED.json")
    parser.add_argument("pairs", nargs="+", help="ROW_A:ROW_B (file stems without _sSEED)")
    parser.add_argument("--per-seed", action="store_true",
                        help="also one line per shared seed (Holm then runs over every line)")
    args = parser.parse_args(argv)
    lines: list[tuple[str, str, list[int] | None]] = []
    for a, b in (p.split(":", 1) for p in args.pairs):
        if args.per_seed:
            lines += [(a, b, [s]) for s in shared_seeds(args.folder, a, b)]
        lines.append((a, b, None))
    table = {}
    for field in ("pcc", "pcc_specific"):
        results = [paired(args.folder, a, b, field, only) for a, b, only in lines]
        adjusted = holm([r[1] for r in results])
        table[field] = [(r[0], p, r[2], r[3]) for r, p in zip(results, adjusted)]
    print("| comparison | seeds | genes | Δ pcc | Holm p | Δ pcc_specific | Holm p |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for i, (a, b, _) in enumerate(lines):
        d, p, n, seeds = table["pcc"][i]
        ds, ps, _, _ = table["pcc_specific"][i]
        print(f"| {a} vs {b} | {','.join(map(str, seeds))} | {n} | {d:+.4f} | {p:.2g} | "
              f"{ds:+.4f} | {ps:.2g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
