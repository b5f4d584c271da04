"""Board rendering: number formatting, the markdown board, plots, the HTML page and the files.

Everything here reads a finished :class:`stbench.report.board.Board` and computes nothing
statistical: the only decisions are presentation ones (digits, stars for p-values, bold for the
best value of each metric).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stbench.report.board import (
    ABLATION_KEYS,
    ABLATION_METHOD,
    KIND_LABELS,
    LOWER_IS_BETTER,
    Board,
    Row,
)
from stbench.report.figures import KIND_COLOURS as _KIND_COLOURS
from stbench.report.figures import png
from stbench.report.runs import short_text
from stbench.report.stats import ALPHA, Stat

__all__ = [
    "best_values",
    "describe_protocol",
    "fmt_ci",
    "fmt_num",
    "fmt_p",
    "fmt_params",
    "fmt_stat",
    "plot_boxes",
    "plot_histograms",
    "legend",
    "render_description",
    "render_html",
    "render_markdown",
    "write_board",
]



# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt_num(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; an en dash when missing or not finite."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def fmt_stat(s: Stat | None, digits: int = 3) -> str:
    """``mean ± std``; the mean alone for a single unit; an en dash when empty."""
    if s is None or not s.n:
        return "–"
    if s.n == 1:  # one fold x one seed: there is no spread to show
        return fmt_num(s.mean, digits)
    return f"{fmt_num(s.mean, digits)} ± {fmt_num(s.std, digits)}"


def fmt_p(p: float | None) -> str:
    """A p-value with significance stars (* < 0.05, ** < 0.01, *** < 0.001)."""
    if p is None:
        return "n/a"
    stars = "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < ALPHA else ""
    text = f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"
    return f"{text}{stars}"


def fmt_params(params: dict) -> str:
    """Key parameters as ``k=v, ...``; ``defaults`` when there are none."""
    if not params:
        return "defaults"
    return ", ".join(f"{k}={short_text(v, 40)}" for k, v in params.items())


def fmt_ci(ci: tuple[float, float] | None) -> str:
    """A confidence interval as ``[lo, hi]``; "n/a" when there is none (fewer than two
    genes or sections: a zero-width interval would claim a precision the data cannot give)."""
    return "n/a" if ci is None else f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def best_values(board: Board) -> dict[str, float]:
    """The best mean of each metric over the board (direction from :data:`LOWER_IS_BETTER`)."""
    out = {}
    for m in board.metrics:
        vals = [r.metrics[m].mean for r in board.rows if m in r.metrics]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            out[m] = min(vals) if m in LOWER_IS_BETTER else max(vals)
    return out


def describe_protocol(board: Board) -> list[tuple[str, str]]:
    """The protocol of the board as (field, text) pairs for the page header."""
    p = board.protocol
    seeds = sorted({r.seed for row in board.rows for r in row.runs})
    pre = p.get("preprocess") or {}
    pre_text = ", ".join(f"{k}={v}" for k, v in pre.items()) if isinstance(pre, dict) else str(pre)
    gc = p.get("gene_config") or {}
    return [
        ("board", board.key),
        ("dataset", f"{p.get('dataset')} (version {p.get('dataset_version')})"),
        ("split", f"{p.get('split')} ({p.get('n_folds')} folds per seed)"),
        ("gene split", f"{p.get('gene_split')} (n_unseen={gc.get('n_unseen')}, k={gc.get('k')})"),
        ("panel", f"{p.get('panel')} ({p.get('n_panel')} genes)"),
        ("evaluated on", str(p.get("evaluated_on"))),
        ("preprocessing", pre_text),
        ("seeds", ", ".join(map(str, seeds))),
    ]


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def legend(board: Board) -> list[str]:
    """What each number of the board means (one paragraph per item, plain text)."""
    ref = board.reference
    n = max(len(board.rows) - 1, 1)
    return [
        "Rows: one per (method, configuration), named by the method and the settings that "
        "differ from its defaults (or from the other rows); `config` is the hash of every "
        "method-side setting.",
        "Metrics: mean ± standard deviation over folds × seeds (sample std; the mean alone for "
        f"one unit). Lower is better for {', '.join(sorted(LOWER_IS_BETTER))}; higher for the "
        "rest. Bold: the best value of the column.",
        f"Reference row: {ref.label if ref else '-'} ({board.reference_note}). Δ: difference "
        "in mean pcc_mean to it.",
        "p genes: paired Wilcoxon signed-rank test over every evaluated panel gene, pairing "
        "each gene's PCC (averaged over the sections and seeds where it was unseen, on the "
        "seeds both rows ran) with the reference's. p sections: the same over test sections "
        "(per-section PCC averaged over the units testing it); n/a with fewer than two "
        f"sections. Both are Holm-corrected across the {n} rows compared with the reference "
        "(separately per test); * p<0.05, ** p<0.01, *** p<0.001.",
        "CI genes / CI sections: 95 % percentile bootstrap intervals (2000 resamples, seed 0) "
        "of the row's mean per-gene PCC resampling genes, and of its mean per-section PCC "
        "resampling test sections; n/a with fewer than two genes or sections.",
        "MDE genes / MDE sections: the minimal difference detectable with 80 % power given "
        "the observed variance: for the n paired differences d (row − reference) with "
        "standard deviation s_d, the true mean difference δ at which a two-sided paired "
        f"t-test at α = 0.05/{n} (the strictest Holm step) rejects with probability 0.8, i.e. "
        "δ solving P(|T| > t(1−α/2, n−1)) = 0.8 for T noncentral t with n−1 degrees of "
        "freedom and noncentrality δ·√n/s_d; approximately δ ≈ (t(1−α/2, n−1) + t(0.8, n−1))"
        "·s_d/√n. A |Δ| below the MDE that is not significant is inconclusive, not a tie. "
        "n/a with fewer than three pairs.",
    ]


def _md_intro(board: Board) -> list[str]:
    """Title, protocol list and the legend."""
    lines = [f"# Leaderboard: {board.dataset}", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in describe_protocol(board)]
    lines += [""] + [f"{p}\n" for p in legend(board)]
    return lines


def _links_md(r: Row) -> str:
    """Markdown links to the row's MLflow runs (one per seed)."""
    return " ".join(f"[s{seed}]({url})" for seed, url in r.links) or "–"


def _md_row(board: Board, r: Row, kind: str, best: dict[str, float], links: bool) -> str:
    """One table line of the main board (best values in bold)."""
    name = _md_escape(r.label)
    cells = [KIND_LABELS.get(kind, kind), f"**{name}**" if r.is_reference else name,
             f"`{r.config_hash}`",
             f"{len(r.seeds)} × {len(r.units) // max(len(r.seeds), 1)}"]
    for m in board.metrics:
        s = r.metrics.get(m)
        text = fmt_stat(s)
        if s is not None and m in best and s.mean == best[m]:
            text = f"**{text}**"
        cells.append(text)
    ref = r.is_reference
    cells += [fmt_stat(r.runtime, 1),
              "ref" if ref else fmt_num(r.delta, 4),
              "ref" if ref else f"{fmt_p(r.p_gene_holm)} (n={r.n_genes})",
              "ref" if ref else f"{fmt_p(r.p_section_holm)} (n={r.n_sections_paired})",
              "ref" if ref else fmt_num(r.mde_gene, 4) if r.mde_gene is not None else "n/a",
              "ref" if ref else fmt_num(r.mde_section, 4) if r.mde_section is not None
              else "n/a",
              fmt_ci(r.ci_gene), fmt_ci(r.ci)]
    if links:
        cells.append(_links_md(r))
    return "| " + " | ".join(cells) + " |"


def _md_table(board: Board, foot: dict[str, int]) -> list[str]:
    """The main table: header, alignment and one line per row, grouped by kind."""
    links = any(r.links for r in board.rows)
    header = (["kind", "method", "config", "seeds × folds"]
              + [f"{m} [{foot[m]}]" for m in board.metrics]
              + ["runtime (s)", "Δ pcc_mean vs ref", "p genes (Holm)", "p sections (Holm)",
                 "MDE genes", "MDE sections", "95% CI genes", "95% CI sections"]
              + (["MLflow"] if links else []))
    aligns = (["---"] * 4 + ["---:"] * len(board.metrics) + ["---:"] * 6 + ["---"] * 2
              + (["---"] if links else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    best = best_values(board)
    for kind in board.kinds:
        lines += [_md_row(board, r, kind, best, links) for r in board.rows_of(kind)]
    lines += ["", "Key parameters of each row:", ""]
    lines += [f"- {_md_escape(r.label)} `{r.config_hash}`: {_md_escape(fmt_params(r.params))}"
              for r in board.rows]
    return lines


def render_description(board: Board) -> str:
    """The board as the MLflow experiment's description: protocol, the headline table
    (method, pcc_mean, CIs, tests against the reference) and the legend, in markdown."""
    lines = [f"**stbench leaderboard: {board.dataset}** (board `{board.key}`, refreshed by "
             "`stbench leaderboard`)", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in describe_protocol(board)]
    lines += ["", "| method | kind | seeds | pcc_mean | 95% CI genes | Δ vs ref | p genes (Holm) "
              "| MDE genes |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in board.rows:
        ref = r.is_reference
        lines.append("| " + " | ".join([
            f"**{_md_escape(r.label)}**" if ref else _md_escape(r.label),
            KIND_LABELS.get(r.kind, r.kind), ",".join(map(str, r.seeds)),
            fmt_stat(r.metrics.get("pcc_mean")), fmt_ci(r.ci_gene),
            "ref" if ref else fmt_num(r.delta, 4), "ref" if ref else fmt_p(r.p_gene_holm),
            "ref" if ref else fmt_num(r.mde_gene, 4)]) + " |")
    lines += [""] + [f"{p}\n" for p in legend(board)]
    return "\n".join(lines)


def _md_ablation(ab: dict[str, Any]) -> list[str]:
    """One ablation table: the variants of one ALIGN-ST configuration."""
    lines = [f"Variants of `{ab['full'].config_hash}` (reference: every module on).", "",
             "| " + " | ".join([*ABLATION_KEYS, "config", "pcc_mean", "pcc_pooled_mean",
                                "Δ pcc_mean", "p genes (Holm)"]) + " |",
             "|" + "|".join(["---"] * (len(ABLATION_KEYS) + 1) + ["---:"] * 4) + "|"]
    for e in ab["entries"]:
        r = e["row"]
        lines.append("| " + " | ".join(
            [*(str(e["switches"][k]) for k in ABLATION_KEYS), f"`{r.config_hash}`",
             fmt_stat(r.metrics.get("pcc_mean")), fmt_stat(r.metrics.get("pcc_pooled_mean")),
             "ref" if e["is_full"] else fmt_num(e["delta"], 4),
             "ref" if e["is_full"] else f"{fmt_p(e['p_gene_holm'])} (n={e['n_genes']})"])
            + " |")
    lines.append("")
    return lines


def _md_ablations(board: Board) -> list[str]:
    """The ALIGN-ST ablation section (a note when there is nothing to ablate)."""
    lines = ["", "## ALIGN-ST ablation", ""]
    if not board.ablations:
        lines.append(f"No `{ABLATION_METHOD}` rows that differ only in "
                     f"{', '.join('method.' + k for k in ABLATION_KEYS)}.")
    for ab in board.ablations:
        lines += _md_ablation(ab)
    return lines


def render_markdown(board: Board) -> str:
    """The ``<dataset>.md`` board: one table row per (method, configuration)."""
    foot = {m: i + 1 for i, m in enumerate(board.metrics)}
    lines = _md_intro(board) + _md_table(board, foot)
    lines += ["", "Metric levels:", ""]
    lines += [f"{foot[m]}. `{m}`: {board.metric_levels[m]}" for m in board.metrics]
    lines += _md_ablations(board)
    if len(board.boards) > 1:
        others = ", ".join(f"{k} ({n} file{'s' * (n != 1)})"
                           for k, n in board.boards.items() if k != board.key)
        lines += ["", f"Other boards for this dataset (not shown; `--board KEY`): {others}."]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Plots and HTML
# --------------------------------------------------------------------------------------------


def plot_boxes(board: Board) -> str | None:
    """Box plot of per-gene PCC (mean over units), one box per row; base64 PNG."""
    from matplotlib.figure import Figure

    data = [(r.label, list(r.gene_pcc().values())) for r in board.rows]
    data = [(lab, v) for lab, v in data if v]
    if not data:
        return None
    fig = Figure(figsize=(7.5, 0.45 * len(data) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([v for _, v in data][::-1], vert=False, showmeans=True)
    ax.set_yticks(range(1, len(data) + 1), [lab for lab, _ in data][::-1])
    ax.axvline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("per-gene PCC (mean over folds × seeds)")
    ax.set_title(f"{board.dataset}: per-gene PCC by method")
    return png(fig)


def plot_histograms(board: Board) -> str | None:
    """Per-row histograms of per-gene PCC on a shared axis; base64 PNG."""
    from matplotlib.figure import Figure

    data = [(r, list(r.gene_pcc().values())) for r in board.rows]
    data = [(r, v) for r, v in data if v]
    if not data:
        return None
    ncols = min(3, len(data))
    nrows = math.ceil(len(data) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.3 * nrows))
    lo = min(min(v) for _, v in data)
    bins = np.linspace(min(lo, 0.0), 1.0, 26)
    for i, (r, v) in enumerate(data):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.hist(v, bins=bins, color=_KIND_COLOURS.get(r.kind, "#777777"))
        ax.axvline(float(np.mean(v)), color="k", lw=1)
        ax.set_title(r.label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("per-gene PCC", fontsize=8)
    fig.tight_layout()
    return png(fig)


def _template(name: str = "leaderboard.html") -> Any:
    """A jinja2 template of the package, with the formatting filters."""
    import importlib.resources

    from jinja2 import Environment, select_autoescape

    text = (importlib.resources.files("stbench.report") / "templates" / name
            ).read_text(encoding="utf-8")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["stat"] = fmt_stat
    env.filters["pval"] = fmt_p
    env.filters["ci"] = fmt_ci
    env.filters["params"] = fmt_params
    env.filters["canon"] = lambda v: json.dumps(v, indent=1, sort_keys=True, default=str)
    return env.from_string(text)


def render_html(board: Board, other_pages: Sequence[str] = (), plots: bool = True) -> str:
    """The static HTML page (inline CSS, base64 PNG plots, a tiny sort script; no network)."""
    from stbench.report.figures import plot_bars, plot_maps, reference_maps

    return _template().render(
        board=board, kinds=board.kinds, kind_labels=KIND_LABELS, best=best_values(board),
        lower_is_better=LOWER_IS_BETTER, ablation_keys=ABLATION_KEYS,
        ablation_method=ABLATION_METHOD, protocol=describe_protocol(board),
        legend=legend(board), links=any(r.links for r in board.rows),
        bars_png=plot_bars(board) if plots else None,
        maps_png=plot_maps(board) if plots else None,
        maps=reference_maps(board) if plots else None,
        box_png=plot_boxes(board) if plots else None,
        hist_png=plot_histograms(board) if plots else None,
        other_pages=list(other_pages), isfinite=lambda x: x is not None and math.isfinite(x))


def _boards_in(out: Path) -> list[dict[str, str]]:
    """The board pages in ``out`` and its sub-folders (one level): href, dataset, key, rows."""
    import re

    found = []
    for page in sorted([*out.glob("*.html"), *out.glob("*/*.html")]):
        if page.name == "index.html":
            continue
        try:
            head = page.read_text(encoding="utf-8")[:200_000]
        except OSError:
            continue
        table = re.search(r'<table id="leaderboard"[^>]*data-dataset="([^"]*)"[^>]*'
                          r'data-board="([^"]*)"', head)
        if table is None:
            continue
        found.append({"href": page.relative_to(out).as_posix(), "dataset": table.group(1),
                      "key": table.group(2), "rows": str(head.count('class="board-row')),
                      "protocol": _protocol_line(head)})
    return found


def _protocol_line(html: str) -> str:
    """"split ..., gene split ..." read back from a board page's protocol list."""
    import re

    fields = dict(re.findall(r'<dd data-field="([^"]+)">([^<]*)</dd>', html))
    return "; ".join(f"{k} {fields[k]}" for k in ("split", "gene split", "seeds") if k in fields)


def write_board(board: Board, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``<dataset>.md``, ``<dataset>.html`` and ``index.html`` (the list of every board
    page in ``out_dir`` and its sub-folders) atomically."""
    from stbench.run.result import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{board.dataset}.md"
    page = out / f"{board.dataset}.html"
    index = out / "index.html"
    others = sorted(p.name for p in out.glob("*.html")
                    if p.name not in ("index.html", page.name))
    write_atomic(md, render_markdown(board))
    write_atomic(page, render_html(board, others, plots=plots))
    write_atomic(index, _template("index.html").render(boards=_boards_in(out)))
    mask = os.umask(0)
    os.umask(mask)
    for p in (md, page, index):  # write_atomic's temporary files are 0600; boards are public
        os.chmod(p, 0o666 & ~mask)
    return {"markdown": md, "html": page, "index": index}
