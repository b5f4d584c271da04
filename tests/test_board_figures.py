"""The board's figures: predicted vs measured maps of the reference row's best and worst unseen
gene, and the per-method bar chart with confidence intervals; each produced and non-empty.

The maps are recorded by the runner (:mod:`stbench.run.maps`); here they are added to the real
demo results of ``tests/data/results`` from synthetic spot values, so that the figure can be
checked against known genes.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from stbench.report.figures import plot_bars, plot_maps, reference_maps
from stbench.report.leaderboard import load_runs, build_board, render_html
from stbench.run.maps import decode, encode, fold_maps, keep_extremes

RESULTS = Path(__file__).parent / "data" / "results"


def png_pixels(b64: str) -> np.ndarray:
    """The RGBA pixels of a base64 PNG."""
    from matplotlib.image import imread

    return imread(io.BytesIO(base64.b64decode(b64)), format="png")


def assert_real_picture(b64: str | None, min_bytes: int = 5000) -> None:
    assert b64, "no figure"
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > min_bytes
    px = png_pixels(b64)
    assert px.shape[0] > 100 and px.shape[1] > 100
    assert float(px[..., :3].std()) > 0.05  # not a blank canvas


def with_maps(data: dict, seed: int) -> dict:
    """A result whose folds record maps, as the runner writes them."""
    rng = np.random.default_rng(seed)
    for f in data["folds"]:
        genes = f["per_gene"]["gene"]
        n = 60
        xy = np.stack(np.meshgrid(np.arange(10), np.arange(6)), -1).reshape(-1, 2) * 100.0
        truth = rng.normal(size=(n, len(genes)))
        pred = truth * np.asarray(f["per_gene"]["pcc"]) + rng.normal(size=(n, len(genes)))
        f["maps"] = fold_maps(["S"] * n, xy, truth, pred, genes, f["per_gene"]["pcc"])
    keep_extremes(data["folds"])
    return data


@pytest.fixture()
def board(tmp_path):
    for p in RESULTS.glob("*.json"):
        data = json.loads(p.read_text())
        (tmp_path / p.name).write_text(json.dumps(with_maps(data, len(p.name))))
    runs, _ = load_runs([tmp_path], "demo")
    return build_board(runs, dataset="demo")


def test_encoding_round_trip_and_compact():
    v = np.linspace(-3, 3, 600)
    assert decode(encode(v, "f2"), "f2") == pytest.approx(v, abs=3e-3)
    assert len(encode(v, "f2")) < 1700  # 600 spots in about 1.6 kB


def test_a_result_keeps_only_its_best_and_worst_gene(board):
    ref = board.reference
    for run in ref.runs:
        kept = [(f["fold"], g) for f in run.data["folds"] for g in (f.get("maps") or {}).get(
            "genes", {})]
        assert 1 <= len(kept) <= 2
        pcc = {}
        for f in run.data["folds"]:
            for g, v in zip(f["per_gene"]["gene"], f["per_gene"]["pcc"]):
                pcc.setdefault(g, []).append(v)
        mean = {g: np.mean(v) for g, v in pcc.items()}
        recorded = {g for f in run.data["folds"] for g in (f.get("maps") or {}).get("genes", {})}
        assert max(mean[g] for g in recorded) >= np.median(list(mean.values()))


def test_maps_show_the_reference_rows_best_and_worst_gene(board):
    best, worst = reference_maps(board)
    overall = board.reference.gene_pcc()
    assert best.pcc_row == overall[best.gene] and worst.pcc_row == overall[worst.gene]
    assert best.pcc_row > worst.pcc_row
    assert best.measured.shape == best.predicted.shape == best.x.shape == (60,)
    assert_real_picture(plot_maps(board), 20_000)


def test_bar_chart_with_confidence_intervals(board):
    assert all(r.ci_gene is not None for r in board.rows)
    assert_real_picture(plot_bars(board))


def test_page_embeds_both_figures(board):
    html = render_html(board)
    assert 'id="plot-maps"' in html and 'id="plot-bars"' in html
    best, worst = reference_maps(board)
    assert best.gene in html and worst.gene in html
