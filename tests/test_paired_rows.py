"""tools/paired_rows.py: per-gene paired tests between result rows, seeds pooled, Holm."""

from __future__ import annotations

import json

import numpy as np
import pytest
from project_tools import load_tool


def _tool():
    return load_tool("paired_rows")


def _write(folder, stem: str, folds: list[dict[str, tuple[float, float]]]) -> None:
    """A result file whose folds hold ``gene -> (pcc, pcc_specific)``."""
    out = []
    for genes in folds:
        names = list(genes)
        out.append({"per_gene": {"gene": names, "pcc": [genes[g][0] for g in names],
                                 "pcc_specific": [genes[g][1] for g in names]}})
    (folder / f"{stem}.json").write_text(json.dumps({"folds": out}))


def test_pairs_average_folds_and_shared_seeds_then_holm(tmp_path, capsys):
    tool = _tool()
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]
    base = {g: float(rng.normal(0.1, 0.05)) for g in genes}
    # row a beats b by 0.05 on every gene (split over two gene folds); c equals b
    half = len(genes) // 2
    for stem, shift in (("a_s0", 0.05), ("b_s0", 0.0), ("c_s0", 0.0), ("b_s1", 0.0)):
        folds = [{g: (base[g] + shift, base[g] / 2) for g in genes[:half]},
                 {g: (base[g] + shift, base[g] / 2) for g in genes[half:]}]
        _write(tmp_path, stem, folds)
    delta, p, n, seeds = tool.paired(tmp_path, "a", "b", "pcc")
    assert n == 40 and seeds == [0]  # seed 1 of b has no partner in a
    assert delta == pytest.approx(0.05) and p < 1e-6
    assert tool.paired(tmp_path, "a", "b", "pcc_specific")[0] == pytest.approx(0.0)
    assert tool.main([str(tmp_path), "a:b", "a:c"]) == 0
    table = capsys.readouterr().out
    assert "| a vs b | 0 | 40 | +0.0500 |" in table and "| a vs c |" in table
    with pytest.raises(SystemExit, match="share no seed"):
        tool.paired(tmp_path, "a", "missing", "pcc")


def test_per_seed_lines_then_the_pooled_line(tmp_path, capsys):
    tool = _tool()
    genes = [f"G{i}" for i in range(30)]
    base = {g: 0.01 * i for i, g in enumerate(genes)}
    # a beats b by 0.1 on seed 0 and ties on seed 1
    for stem, shift in (("a_s0", 0.1), ("b_s0", 0.0), ("a_s1", 0.0), ("b_s1", 0.0)):
        _write(tmp_path, stem, [{g: (base[g] + shift, base[g]) for g in genes}])
    assert tool.paired(tmp_path, "a", "b", "pcc", only=[0])[0] == pytest.approx(0.1)
    assert tool.paired(tmp_path, "a", "b", "pcc", only=[1])[0] == pytest.approx(0.0)
    assert tool.paired(tmp_path, "a", "b", "pcc")[0] == pytest.approx(0.05)
    assert tool.main([str(tmp_path), "a:b", "--per-seed"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| a vs b")]
    assert [ln.split("|")[2].strip() for ln in lines] == ["0", "1", "0,1"]
    assert "+0.1000" in lines[0] and "+0.0500" in lines[2]
