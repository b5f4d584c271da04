"""Leaderboard and paired comparison: compatibility, aggregation, statistics, rendering.

The fixtures under ``tests/data/results/`` are real result JSONs of the demo dataset, written by
(in an empty folder, then compacted with ``json.dumps(..., separators=(",", ":"))``)::

    for m in bilinear ridge mean_expression; do for s in 0 1; do
      stbench run --method $m --dataset demo --json ${m}_s$s.json --no-progress \\
          tracking.enabled=false seed=$s; done; done
"""

from __future__ import annotations

import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from stbench.cli.board import app
from stbench.report.compare import compare_files
from stbench.errors import UserError
from stbench.report.leaderboard import (
    build_board,
    config_hash,
    load_run,
    load_runs,
    make_leaderboard,
    protocol_key,
    render_html,
    render_markdown,
)
from stbench.protocol.metrics import holm
from stbench.run.result import validate_result

RESULTS = Path(__file__).parent / "data" / "results"
SLIDES = ["S1", "S2", "S3"]
PANEL = [f"G{i}" for i in range(8)]


def make_result(method: str, kind: str, seed: int, fold_pcc: list[float], *,
                gene_pcc: list[dict[str, float]] | None = None,
                unseen: list[str] | None = None, dataset_version: str = "1",
                method_config: dict | None = None, runtime: float = 10.0,
                slide_pcc: list[list[float]] | None = None) -> dict:
    """A schema-1 result with one fold per value of ``fold_pcc`` (loso over ``SLIDES``)."""
    unseen = list(unseen if unseen is not None else PANEL[:4])
    seen = [g for g in PANEL if g not in unseen]
    folds, split_folds = [], []
    for i, v in enumerate(fold_pcc):
        test = [SLIDES[i % len(SLIDES)]]
        train = [s for s in SLIDES if s not in test]
        split_folds.append({"fold": i, "train": train, "val": [], "test": test, "slide_fold": i,
                            "gene_split": 0, "genes": {"panel": len(PANEL), "seen": seen,
                                                       "unseen": unseen, "val": []}})
        genes = gene_pcc[i] if gene_pcc else {g: v for g in unseen}
        slides = slide_pcc[i] if slide_pcc else [v]
        folds.append({"fold": i, "metrics": {"pcc_mean": v, "pcc_pooled_mean": v / 2,
                                             "mse": 1.0 - v},
                      "counts": {"n_genes": len(genes)}, "runtime_s": runtime / len(fold_pcc),
                      "per_gene": {"gene": list(genes), "pcc": list(genes.values()),
                                   "pcc_pooled": list(genes.values())},
                      "per_slide": {"slide": [str(k) for k in range(len(slides))],
                                    "pcc": slides}})
    cfg = {"dataset": {"name": "toy", "root": "/somewhere", "n_slides": 3},
           "method": {"name": method, **(method_config or {})},
           "split": {"name": "loso", "test": [], "val": [], "n_val_slides": 0, "k": 5},
           "encoder": {"name": "handcrafted"},
           "genes": {"panel": "default", "panel_file": None, "n_hvg": 250, "split": "random",
                     "n_unseen": 0.5, "k": 4, "unseen_file": None, "val_fraction": 0.2,
                     "descriptions": None, "text_encoder": "tfidf"},
           "preprocess": {"target_sum": 1e4, "log1p": True, "min_spot_counts": 1},
           "features": {"patch_um": 112.0, "batch_size": 64}, "tuning": {"n_trials": 0},
           "tracking": {"enabled": False}, "cache": {"dir": None}, "seed": seed, "device": "cpu"}
    metrics = {m: float(np.mean([f["metrics"][m] for f in folds])) for m in folds[0]["metrics"]}
    result = {"schema": 1, "stbench_version": "0.1.0", "git_sha": None, "method": method,
              "method_kind": kind, "method_version": "1", "trained_on": "seen genes",
              "dataset": "toy", "dataset_version": dataset_version,
              "split": {"name": "loso", "folds": split_folds},
              "genes": {"panel": "all", "gene_split": "random", "n_panel": len(PANEL),
                        "seen": seen, "unseen": unseen, "evaluated_on": "unseen genes"},
              "seed": seed, "config": cfg,
              "preprocess": {"normalize_total": 1e4, "log1p": True, "min_spot_counts": 1},
              "folds": folds, "metrics": metrics, "metric_levels": {}, "runtime_s": runtime}
    validate_result(result)
    return result


def write(tmp_path: Path, name: str, result: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


def board_of(tmp_path: Path, results: dict[str, dict], **kw):
    for name, r in results.items():
        write(tmp_path, name, r)
    runs, _ = load_runs([tmp_path], "toy")
    return build_board(runs, dataset="toy", **kw)


def row(board, method):
    (r,) = [r for r in board.rows if r.method == method]
    return r


# ------------------------------------------------------------------------------ aggregation


def test_mean_and_std_over_folds_times_seeds_by_hand(tmp_path):
    b = board_of(tmp_path, {
        "a0.json": make_result("zs", "zero_shot", 0, [0.2, 0.4], runtime=10.0),
        "a1.json": make_result("zs", "zero_shot", 1, [0.3, 0.5], runtime=14.0),
    })
    (r,) = b.rows
    # units: 0.2, 0.4, 0.3, 0.5 -> mean 0.35; deviations ±0.15, ±0.05 -> var 0.05/3 (ddof=1)
    assert r.metrics["pcc_mean"].mean == pytest.approx(0.35)
    assert r.metrics["pcc_mean"].std == pytest.approx(math.sqrt(0.05 / 3))
    assert r.metrics["pcc_mean"].n == 4
    assert r.metrics["mse"].mean == pytest.approx(0.65)
    assert r.metrics["pcc_pooled_mean"].mean == pytest.approx(0.175)
    assert r.runtime.mean == pytest.approx(12.0)
    assert r.runtime.std == pytest.approx(math.sqrt(8.0))
    assert r.seeds == [0, 1] and len(r.units) == 4


def test_rows_are_method_and_config_hash(tmp_path):
    b = board_of(tmp_path, {
        "a.json": make_result("zs", "zero_shot", 0, [0.2, 0.4], method_config={"lam": 1.0}),
        "b.json": make_result("zs", "zero_shot", 0, [0.3, 0.3], method_config={"lam": 2.0}),
    })
    assert len(b.rows) == 2
    assert {tuple(r.params.items()) for r in b.rows} == {(("lam", 1.0),), (("lam", 2.0),)}
    assert len({r.config_hash for r in b.rows}) == 2


def test_row_names_show_run_settings_only_off_their_defaults(tmp_path):
    """On a board mixing representations and tuned rows, a row is named by what it changes
    (``zs (genes.representation=tfidf)``, ``zs (tuning.n_trials=12)``); the default row keeps
    the plain name, and every varying setting stays in the key parameters."""
    plain = make_result("zs", "zero_shot", 0, [0.2])
    plain["config"]["genes"]["representation"] = "minilm"
    tfidf = make_result("zs", "zero_shot", 0, [0.3])
    tfidf["config"]["genes"]["representation"] = "tfidf"
    tuned = make_result("zs", "zero_shot", 0, [0.4])
    tuned["config"]["genes"]["representation"] = "minilm"
    tuned["config"]["tuning"] = {"n_trials": 12, "sampler": "tpe", "seed": 0}
    older = make_result("ctl", "control", 0, [0.1])  # recorded before the representation key
    b = board_of(tmp_path, {"p.json": plain, "t.json": tfidf, "u.json": tuned, "o.json": older})
    names = {r.name for r in b.rows}
    assert names == {"zs", "zs (genes.representation=tfidf)", "zs (tuning.n_trials=12)", "ctl"}
    by_name = {r.name: r for r in b.rows}
    assert by_name["zs"].params["genes.representation"] == "minilm"
    assert by_name["zs (tuning.n_trials=12)"].params["tuning.sampler"] == "tpe"


def test_settings_at_their_registered_default_do_not_split_rows():
    """A result recorded before a Config field existed hashes like one that records the
    field at its default (the same configuration); a non-default value still differs."""
    older = make_result("bilinear", "zero_shot", 0, [0.2], method_config={"lam": 0.1})
    newer = make_result("bilinear", "zero_shot", 1, [0.2], method_config={
        "lam": 0.1, "lam_grid": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "mean_lam": 1.0})
    assert config_hash(older) == config_hash(newer)
    other = make_result("bilinear", "zero_shot", 0, [0.2], method_config={"mean_lam": 2.0})
    assert config_hash(other) != config_hash(older)
    # a method not registered here keeps every setting
    assert config_hash(make_result("zs", "zero_shot", 0, [0.2], method_config={"lam": 1.0})) \
        != config_hash(make_result("zs", "zero_shot", 0, [0.2]))


def test_config_hash_ignores_seed_bookkeeping_and_idle_tuning():
    a = make_result("zs", "zero_shot", 0, [0.2])
    b = make_result("zs", "zero_shot", 1, [0.2])
    b["config"]["tracking"] = {"enabled": True, "dir": "elsewhere"}
    b["config"]["device"] = "cuda"
    b["config"]["tuning"] = {"n_trials": 0, "sampler": "tpe"}
    assert config_hash(a) == config_hash(b)
    b["config"]["tuning"] = {"n_trials": 5, "sampler": "tpe"}
    assert config_hash(a) != config_hash(b)
    c = make_result("zs", "zero_shot", 0, [0.2])
    c["config"]["encoder"] = {"name": "uni"}
    assert config_hash(a) != config_hash(c)
    d = make_result("zs", "zero_shot", 0, [0.2])
    d["config"]["dataset"]["root"] = "/other/machine"
    assert protocol_key(a) == protocol_key(d)


# ------------------------------------------------------------------------------ compatibility


def test_incompatible_dataset_version_refused_naming_both_files(tmp_path):
    write(tmp_path, "old.json", make_result("zs", "zero_shot", 0, [0.2, 0.4]))
    write(tmp_path, "new.json", make_result("sup", "supervised", 0, [0.3, 0.5],
                                            dataset_version="2"))
    runs, _ = load_runs([tmp_path], "toy")
    with pytest.raises(UserError) as exc:
        build_board(runs, dataset="toy")
    msg = exc.value.one_line()
    assert "\n" not in msg and exc.value.exit_code == 2
    assert "old.json" in msg and "new.json" in msg
    assert "dataset_version" in msg and "--board" in msg
    # --board picks one group
    key = protocol_key(json.loads((tmp_path / "new.json").read_text()))
    b = build_board(runs, board=key[:5], dataset="toy")
    assert [r.method for r in b.rows] == ["sup"] and len(b.boards) == 2
    with pytest.raises(UserError, match="not found"):
        build_board(runs, board="zzzz", dataset="toy")


@pytest.mark.parametrize("change", ["split", "gene_split", "panel", "preprocess", "n_folds"])
def test_other_protocol_differences_refused(tmp_path, change):
    a = make_result("zs", "zero_shot", 0, [0.2, 0.4])
    b = make_result("sup", "supervised", 0, [0.3, 0.5])
    if change == "split":
        b["split"]["name"] = b["config"]["split"]["name"] = "holdout"
    elif change == "gene_split":
        b["genes"]["gene_split"] = b["config"]["genes"]["split"] = "top_mean"
    elif change == "panel":
        b["genes"]["n_panel"] = 9
    elif change == "preprocess":
        b["preprocess"]["log1p"] = False
    else:
        b = make_result("sup", "supervised", 0, [0.3, 0.5, 0.1])
    with pytest.raises(UserError, match="incompatible results"):
        board_of(tmp_path, {"a.json": a, "b.json": b})


def test_same_seed_different_unseen_genes_refused(tmp_path):
    a = make_result("zs", "zero_shot", 0, [0.2, 0.4], unseen=PANEL[:4])
    b = make_result("sup", "supervised", 0, [0.3, 0.5], unseen=PANEL[4:])
    with pytest.raises(UserError) as exc:
        board_of(tmp_path, {"a.json": a, "b.json": b})
    msg = exc.value.one_line()
    assert "a.json" in msg and "b.json" in msg and "seed 0" in msg and "unseen" in msg


def test_different_seeds_may_draw_different_genes(tmp_path):
    b = board_of(tmp_path, {
        "a0.json": make_result("zs", "zero_shot", 0, [0.2, 0.4], unseen=PANEL[:4]),
        "a1.json": make_result("zs", "zero_shot", 1, [0.3, 0.5], unseen=PANEL[4:]),
        "s0.json": make_result("sup", "supervised", 0, [0.5, 0.5], unseen=PANEL[:4]),
        "s1.json": make_result("sup", "supervised", 1, [0.6, 0.6], unseen=PANEL[4:]),
    })
    assert [r.method for r in b.rows] == ["zs", "sup"]
    assert row(b, "zs").n_genes == 0 and row(b, "sup").n_genes == 8


def test_duplicate_seed_of_a_row_refused(tmp_path):
    r = make_result("zs", "zero_shot", 0, [0.2, 0.4])
    with pytest.raises(UserError, match="duplicate results"):
        board_of(tmp_path, {"a.json": r, "copy.json": copy.deepcopy(r)})


def test_folders_skip_other_datasets_but_named_files_refuse(tmp_path):
    write(tmp_path, "a.json", make_result("zs", "zero_shot", 0, [0.2]))
    other = make_result("zs", "zero_shot", 0, [0.2])
    other["dataset"] = "elsewhere"
    p = write(tmp_path, "other.json", other)
    runs, skipped = load_runs([tmp_path], "toy")
    assert len(runs) == 1 and skipped == 1
    with pytest.raises(UserError, match="elsewhere"):
        load_runs([p], "toy")


def test_bad_files_are_user_errors(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json"):
        load_run(tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text('{"schema": 1}')
    with pytest.raises(UserError, match="lacks keys"):
        load_run(tmp_path / "partial.json")
    with pytest.raises(UserError, match="no result JSON"):
        build_board([], dataset="toy")
    with pytest.raises(UserError, match="not found"):
        load_runs([tmp_path / "missing"], "toy")


# ------------------------------------------------------------------------------ statistics


def _gene_values(seed: int, shift: float, n_folds: int = 2) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{g: float(rng.uniform(0.0, 0.6) + shift) for g in PANEL[:4]} for _ in range(n_folds)]


def test_reference_is_best_zero_shot_and_holm_applied(tmp_path):
    genes_ref = [{"G0": 0.50, "G1": 0.60, "G2": 0.70, "G3": 0.80}, {"G0": 0.52, "G1": 0.62,
                                                                    "G2": 0.72, "G3": 0.82}]
    genes_b = [{"G0": 0.30, "G1": 0.61, "G2": 0.40, "G3": 0.79}, {"G0": 0.20, "G1": 0.60,
                                                                  "G2": 0.50, "G3": 0.80}]
    genes_c = [{"G0": 0.90, "G1": 0.95, "G2": 0.99, "G3": 0.91}, {"G0": 0.90, "G1": 0.92,
                                                                  "G2": 0.93, "G3": 0.94}]
    mean = lambda gs: float(np.mean([np.mean(list(g.values())) for g in gs]))  # noqa: E731
    b = board_of(tmp_path, {
        "ref.json": make_result("best_zs", "zero_shot", 0, [0.65, 0.67], gene_pcc=genes_ref),
        "b.json": make_result("worse_zs", "zero_shot", 0, [0.525, 0.525], gene_pcc=genes_b),
        "c.json": make_result("oracle", "supervised", 0, [0.9375, 0.9225], gene_pcc=genes_c),
    })
    ref = row(b, "best_zs")
    # the supervised 'oracle' is better, but the reference is the best zero-shot row
    assert b.reference is ref and ref.is_reference
    # by hand: per-gene PCC averaged over the two folds, aligned by gene, Wilcoxon, then Holm
    avg = {name: {g: (gs[0][g] + gs[1][g]) / 2 for g in PANEL[:4]}
           for name, gs in (("ref", genes_ref), ("b", genes_b), ("c", genes_c))}
    ref_v = [avg["ref"][g] for g in PANEL[:4]]
    p_b = stats.wilcoxon([avg["b"][g] for g in PANEL[:4]], ref_v).pvalue
    p_c = stats.wilcoxon([avg["c"][g] for g in PANEL[:4]], ref_v).pvalue
    rb, rc = row(b, "worse_zs"), row(b, "oracle")
    assert rb.p_gene == pytest.approx(p_b) and rc.p_gene == pytest.approx(p_c)
    adj = holm([p_b, p_c])
    assert rb.p_gene_holm == pytest.approx(adj[0]) and rc.p_gene_holm == pytest.approx(adj[1])
    lo, hi = sorted([p_b, p_c])
    assert max(rb.p_gene_holm, rc.p_gene_holm) == pytest.approx(max(2 * lo, hi))
    assert rb.n_genes == 4 and rb.n_folds == 2
    assert rb.delta == pytest.approx(mean(genes_b) - mean(genes_ref))
    assert ref.p_gene is None and ref.delta is None


def test_fold_level_test_pairs_seed_and_fold(tmp_path):
    ref = [make_result("a", "zero_shot", s, [0.5 + 0.01 * s, 0.6, 0.7]) for s in (0, 1)]
    oth = [make_result("b", "zero_shot", s, [0.1, 0.2 + 0.01 * s, 0.25]) for s in (0, 1)]
    b = board_of(tmp_path, {"a0.json": ref[0], "a1.json": ref[1], "b0.json": oth[0],
                            "b1.json": oth[1]})
    x = [0.1, 0.2, 0.25, 0.1, 0.21, 0.25]
    y = [0.5, 0.6, 0.7, 0.51, 0.6, 0.7]
    assert row(b, "b").n_folds == 6
    assert row(b, "b").p_fold == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert row(b, "b").p_fold_holm == pytest.approx(row(b, "b").p_fold)  # family of one


def test_bootstrap_ci_over_named_slides(tmp_path):
    b = board_of(tmp_path, {"a.json": make_result("zs", "zero_shot", 0, [0.2, 0.4, 0.6])})
    (r,) = b.rows
    assert set(r.slide_pcc()) == set(SLIDES)  # per-slide indices mapped to the fold's test slides
    lo, hi = r.ci
    assert 0.2 <= lo <= 0.4 <= hi <= 0.6


def test_ablation_table_for_alignst_switches(tmp_path):
    base = {"dim": 128, "nuclei": True, "prompt_rounds": 2, "gene_interaction": True,
            "lambda_align": 0.1}
    b = board_of(tmp_path, {
        "full.json": make_result("alignst", "zero_shot", 0, [0.5, 0.6], method_config=base),
        "nonuc.json": make_result("alignst", "zero_shot", 0, [0.4, 0.5],
                                  method_config={**base, "nuclei": False}),
        "noprompt.json": make_result("alignst", "zero_shot", 0, [0.45, 0.5],
                                     method_config={**base, "prompt_rounds": 0}),
        "wide.json": make_result("alignst", "zero_shot", 0, [0.3, 0.3],
                                 method_config={**base, "dim": 256}),
    })
    (ab,) = b.ablations
    assert len(ab["entries"]) == 3
    assert ab["full"].method_config["nuclei"] is True and ab["entries"][0]["is_full"]
    assert {e["switches"]["nuclei"] for e in ab["entries"]} == {True, False}
    md = render_markdown(b)
    assert "| nuclei | prompt_rounds | gene_interaction | lambda_align |" in md
    html = render_html(b, plots=False)
    assert html.count('class="ablation-row"') == 3 and 'class="note empty"' not in html


def test_no_ablation_section_content_without_alignst(tmp_path):
    b = board_of(tmp_path, {"a.json": make_result("zs", "zero_shot", 0, [0.2])})
    assert b.ablations == []
    assert "No `alignst` rows" in render_markdown(b)
    assert 'class="note empty"' in render_html(b, plots=False)


# ------------------------------------------------------------------------------ rendering


class _Cells(HTMLParser):
    """Collect board rows and their data-metric cells."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.headers: dict[str, str] = {}
        self.in_table = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "leaderboard":
            self.in_table = True
        if not self.in_table:
            return
        if tag == "th" and "data-metric" in a:
            self.headers[a["data-metric"]] = a.get("title", "")
        if tag == "tr" and "board-row" in (a.get("class") or ""):
            self.rows.append({"method": a["data-method"], "kind": a["data-kind"]})
        if tag == "td" and "data-metric" in a and self.rows:
            self.rows[-1][a["data-metric"]] = a.get("data-value")

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False


def test_markdown_has_one_row_per_method_and_levels(tmp_path):
    b, paths = make_leaderboard("demo", [RESULTS], tmp_path / "out", recorded=False, plots=False)
    md = paths["markdown"].read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "`" in ln]
    assert len(table) == 3
    for method in ("bilinear", "ridge", "mean_expression"):
        assert sum(f" {method} " in ln or f"**{method}**" in ln for ln in table) == 1
    assert "pcc_mean [1]" in md and "1. `pcc_mean`: Pearson r per gene within each test slide" in md
    # rows grouped by kind: zero-shot, control, supervised
    kinds = [ln.split("|")[1].strip() for ln in table]
    assert kinds == ["zero-shot", "control", "supervised"]


def test_real_fixtures_aggregate_to_the_recorded_numbers(tmp_path):
    b, _ = make_leaderboard("demo", [RESULTS], None, recorded=False)
    for r in b.rows:
        files = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{r.method}_s*.json"))]
        units = [f["metrics"]["pcc_mean"] for d in files for f in d["folds"]]
        assert r.metrics["pcc_mean"].mean == pytest.approx(np.mean(units))
        assert r.metrics["pcc_mean"].std == pytest.approx(np.std(units, ddof=1))
        # folds are equally many per seed, so the mean of the recorded run means agrees too
        assert r.metrics["pcc_mean"].mean == pytest.approx(np.mean([d["metrics"]["pcc_mean"]
                                                                    for d in files]))
    assert b.reference.method == "bilinear"
    assert row(b, "mean_expression").p_gene_holm < 0.05


def test_html_table_ids_values_and_static(tmp_path):
    b, paths = make_leaderboard("demo", [RESULTS], tmp_path, recorded=False)
    html = paths["html"].read_text()
    index = paths["index"].read_text()
    assert 'href="demo.html"' in index and "<table id=\"leaderboard\"" not in index
    parser = _Cells()
    parser.feed(html)
    assert [r["method"] for r in parser.rows] == [r.method for r in b.rows]
    for parsed, r in zip(parser.rows, b.rows):
        assert float(parsed["pcc_mean"]) == pytest.approx(r.metrics["pcc_mean"].mean, rel=1e-9)
    assert "Pearson r per gene within each test slide" in parser.headers["pcc_mean"]
    # bars, box plot and histograms; no maps: these fixtures predate the recorded maps
    assert html.count("data:image/png;base64,") == 3 and 'id="maps-note"' in html
    # fully static: no external resources
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script src" not in html


def test_cli_leaderboard_and_compare(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "--dataset", "demo", "--results", str(RESULTS),
                              "--out", str(tmp_path), "--no-plots", "--no-recorded",
                              "--no-store", "--no-publish"])  # whatever ./stbench-runs holds
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo.md").exists() and (tmp_path / "index.html").exists()
    assert "3 rows from 6 result files" in res.output
    res = runner.invoke(app, ["compare", str(RESULTS / "bilinear_s0.json"),
                              str(RESULTS / "ridge_s0.json"), "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert "verdict: ridge (seed 0) beats bilinear (seed 0)" in res.output
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["winner"] == "b" and len(c["folds"]) == 4
    res = runner.invoke(app, ["compare", str(RESULTS / "bilinear_s0.json"),
                              str(RESULTS / "ridge_s1.json")])
    assert isinstance(res.exception, UserError)
    assert "seeds 0 and 1" in str(res.exception)


# ------------------------------------------------------------------------------ compare


def test_compare_by_hand(tmp_path):
    ga = [{"G0": 0.5, "G1": 0.6, "G2": 0.7, "G3": 0.8}, {"G0": 0.4, "G1": 0.5, "G2": 0.6,
                                                          "G3": 0.75}]
    gb = [{"G0": 0.3, "G1": 0.55, "G2": 0.5, "G3": 0.1}, {"G0": 0.45, "G1": 0.2, "G2": 0.3,
                                                           "G3": 0.7}]
    pa = write(tmp_path, "a.json", make_result("a", "zero_shot", 0, [0.65, 0.5625], gene_pcc=ga))
    pb = write(tmp_path, "b.json", make_result("b", "zero_shot", 0, [0.3625, 0.4125], gene_pcc=gb))
    c = compare_files(pa, pb)
    assert c["winner"] == "a"
    f0, f1 = c["folds"]
    assert f0["diff"] == pytest.approx(0.65 - 0.3625) and f1["diff"] == pytest.approx(0.15)
    p0 = stats.wilcoxon(list(ga[0].values()), list(gb[0].values())).pvalue
    p1 = stats.wilcoxon(list(ga[1].values()), list(gb[1].values())).pvalue
    assert f0["p"] == pytest.approx(p0) and f1["p"] == pytest.approx(p1)
    assert [f0["p_holm"], f1["p_holm"]] == pytest.approx(list(holm([p0, p1])))
    avg_a = [(ga[0][g] + ga[1][g]) / 2 for g in PANEL[:4]]
    avg_b = [(gb[0][g] + gb[1][g]) / 2 for g in PANEL[:4]]
    assert c["overall"]["gene_p"] == pytest.approx(stats.wilcoxon(avg_a, avg_b).pvalue)
    mse = {m["metric"]: m for m in c["metrics"]}["mse"]
    assert mse["lower_is_better"] and mse["better"] == "a"
    assert c["overall"]["folds_won_a"] == 2


def test_compare_refuses_other_dataset_version(tmp_path):
    pa = write(tmp_path, "a.json", make_result("a", "zero_shot", 0, [0.5]))
    pb = write(tmp_path, "b.json", make_result("b", "zero_shot", 0, [0.4], dataset_version="2"))
    with pytest.raises(UserError) as exc:
        compare_files(pa, pb)
    msg = exc.value.one_line()
    assert "a.json" in msg and "b.json" in msg and "dataset_version" in msg


def test_render_html_escapes_names(tmp_path):
    b = board_of(tmp_path, {"a.json": make_result("zs<b>", "zero_shot", 0, [0.2])})
    html = render_html(b, plots=False)
    assert "zs<b>" not in html and "zs&lt;b&gt;" in html


def test_a_single_unit_shows_no_spread():
    from stbench.report.leaderboard import Stat, fmt_stat

    assert fmt_stat(Stat(0.0848, 0.0, 1)) == "0.085"
    assert fmt_stat(Stat(0.35, 0.1291, 4)) == "0.350 ± 0.129"
