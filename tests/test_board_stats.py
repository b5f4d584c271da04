"""The board's statistics against scipy and simulation: paired tests over genes and sections,
Holm across rows, bootstrap CIs over genes and sections, the minimal detectable difference,
and how the board shows them ("n/a" where one section leaves nothing to resample)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stbench.protocol.metrics import holm
from stbench.report.leaderboard import render_html, render_markdown
from stbench.report.stats import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_mean_ci,
    minimal_detectable_difference,
)
from test_leaderboard import SLIDES, board_of, make_result, row

GENES = [f"G{i}" for i in range(4)]


# ------------------------------------------------------------------------------ MDE


@pytest.mark.parametrize("n, sd, alpha", [(30, 0.1, 0.05), (12, 0.05, 0.05 / 3),
                                          (200, 0.2, 0.01)])
def test_mde_has_80_percent_power_in_simulation(n, sd, alpha):
    mde = minimal_detectable_difference(sd, n, alpha)
    rng = np.random.default_rng(0)
    sims = 4000
    d = rng.normal(mde, sd, size=(sims, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    power = float(np.mean(p < alpha))
    assert power == pytest.approx(0.8, abs=0.025)  # binomial s.e. 0.006
    # and the textbook approximation (t quantiles) is close to the exact value
    approx = (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert mde == pytest.approx(approx, rel=0.05)


def test_mde_scales_with_sd_over_root_n_and_edges():
    a = minimal_detectable_difference(0.1, 50)
    assert minimal_detectable_difference(0.2, 50) == pytest.approx(2 * a)
    assert minimal_detectable_difference(0.1, 200) < a / 1.9
    assert minimal_detectable_difference(0.1, 2) is None
    assert minimal_detectable_difference(0.0, 10) == 0.0
    assert minimal_detectable_difference(float("nan"), 10) is None


# ------------------------------------------------------------------------------ bootstrap


def test_bootstrap_mean_ci_is_the_percentile_bootstrap():
    v = np.random.default_rng(1).normal(0.3, 0.1, size=40)
    lo, hi = bootstrap_mean_ci(v)
    idx = np.random.default_rng(0).integers(0, v.size, size=(BOOTSTRAP_RESAMPLES, v.size))
    means = v[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    # scipy's percentile bootstrap (other random draws) agrees to resampling noise
    ref = stats.bootstrap((v,), np.mean, method="percentile", n_resamples=20000,
                          random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.006) and hi == pytest.approx(ref.high, abs=0.006)


def test_bootstrap_needs_two_values():
    assert bootstrap_mean_ci([0.4]) is None
    assert bootstrap_mean_ci([]) is None


# ------------------------------------------------------------------------------ board


def _slide_results(tmp_path, shift_b: float, shift_c: float):
    """Three rows on LOSO over three sections; per-section and per-gene values by hand."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.6, size=(3, 4))  # folds x genes

    def rows(shift, noise_seed):
        noise = np.random.default_rng(noise_seed).normal(0, 0.05, size=base.shape)
        vals = base + shift + noise
        genes = [{g: float(v) for g, v in zip(GENES, fold)} for fold in vals]
        return genes, [[float(np.mean(fold))] for fold in vals]

    out = {}
    for name, kind, shift, s in (("ref", "zero_shot", 0.0, 1), ("b", "zero_shot", shift_b, 2),
                                 ("c", "control", shift_c, 3)):
        genes, slides = rows(shift, s)
        fold_pcc = [sl[0] for sl in slides]
        out[f"{name}.json"] = make_result(name, kind, 0, fold_pcc, gene_pcc=genes,
                                          unseen=GENES, slide_pcc=slides)
    return board_of(tmp_path, out), out


def test_section_and_gene_tests_match_scipy_and_holm(tmp_path):
    b, files = _slide_results(tmp_path, -0.05, -0.2)
    ref, rb, rc = row(b, "ref"), row(b, "b"), row(b, "c")
    assert b.reference is ref

    def per_section(name):
        return [f["per_slide"]["pcc"][0] for f in files[f"{name}.json"]["folds"]]

    def per_gene(name):
        folds = files[f"{name}.json"]["folds"]
        return [np.mean([f["per_gene"]["pcc"][i] for f in folds]) for i in range(len(GENES))]

    p_sec = [stats.wilcoxon(per_section(n), per_section("ref")).pvalue for n in ("b", "c")]
    p_gen = [stats.wilcoxon(per_gene(n), per_gene("ref")).pvalue for n in ("b", "c")]
    assert [rb.p_section, rc.p_section] == pytest.approx(p_sec)
    assert [rb.p_section_holm, rc.p_section_holm] == pytest.approx(list(holm(p_sec)))
    assert [rb.p_gene_holm, rc.p_gene_holm] == pytest.approx(list(holm(p_gen)))
    assert rb.n_sections_paired == 3 and set(ref.slide_pcc()) == set(SLIDES)
    # MDE over genes and sections, at 0.05 / (2 rows compared)
    d_gene = np.array(per_gene("b")) - np.array(per_gene("ref"))
    assert rb.mde_gene == pytest.approx(
        minimal_detectable_difference(float(np.std(d_gene, ddof=1)), 4, 0.025))
    d_sec = np.array(per_section("b")) - np.array(per_section("ref"))
    assert rb.mde_section == pytest.approx(
        minimal_detectable_difference(float(np.std(d_sec, ddof=1)), 3, 0.025))
    # CIs over genes and over sections
    assert rb.ci == pytest.approx(bootstrap_mean_ci(per_section("b")))
    assert rb.ci_gene == pytest.approx(bootstrap_mean_ci(per_gene("b")))
    md = render_markdown(b)
    assert "MDE genes" in md and "95% CI sections" in md and "noncentral t" in md


def test_one_test_section_shows_na_not_a_zero_width_interval(tmp_path):
    one = make_result("zs", "zero_shot", 0, [0.4])  # one fold, one test section
    other = make_result("ctl", "control", 0, [0.1])
    b = board_of(tmp_path, {"a.json": one, "b.json": other})
    r = row(b, "zs")
    assert r.n_sections == 1 and r.ci is None
    assert row(b, "ctl").p_section is None and row(b, "ctl").mde_section is None
    md = render_markdown(b)
    line = next(ln for ln in md.splitlines() if ln.startswith("| zero-shot"))
    assert line.rstrip(" |").endswith("| n/a")  # the section CI; genes are four here
    html = render_html(b, plots=False)
    assert "n/a <small>(1 section)</small>" in html


def test_variant_rows_are_named_by_what_differs(tmp_path):
    b = board_of(tmp_path, {
        "a.json": make_result("zs", "zero_shot", 0, [0.2, 0.4], method_config={"lam": 1.0}),
        "b.json": make_result("zs", "zero_shot", 0, [0.3, 0.3], method_config={"lam": 2.0}),
        "c.json": make_result("ctl", "control", 0, [0.1, 0.1]),
    })
    assert sorted(r.label for r in b.rows) == ["ctl", "zs (lam=1.0)", "zs (lam=2.0)"]
    assert "| zs (lam=2.0) |" in render_markdown(b)


def test_alignst_variant_named_against_the_plugin_defaults():
    from stbench.report.board import default_label

    alignst = make_result("alignst", "zero_shot", 0, [0.3], method_config={"prompt_rounds": 0})
    assert default_label(alignst) == "alignst (prompt_rounds=0)"
    assert default_label(make_result("alignst", "zero_shot", 0, [0.3])) == "alignst"
