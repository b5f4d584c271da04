"""Board rendering: number formatting, the markdown board, plots, the HTML page and the files.

Everything here reads a finished :class:`stbench.report.board.Board` and computes nothing
statistical: the only decisions are presentation ones (digits, stars for p-values, bold for the
best value of each metric).
"""

from __future__ import annotations

import base64
import io
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
    "render_html",
    "render_markdown",
    "write_board",
]

_KIND_COLOURS = {"zero_shot": "#4477aa", "control": "#999933", "supervised": "#aa7744"}


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
    """A confidence interval as ``[lo, hi]``; an en dash when missing."""
    return "–" if ci is None else f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


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


def _md_intro(board: Board) -> list[str]:
    """Title, protocol list and the paragraph explaining the numbers."""
    lines = [f"# Leaderboard: {board.dataset}", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in describe_protocol(board)]
    ref = board.reference
    lines += [
        "",
        "Metrics: mean ± standard deviation over folds × seeds (sample std). Significance "
        f"against the reference row **{ref.label if ref else '-'}** ({board.reference_note}): "
        "paired Wilcoxon over genes (per-gene PCC averaged over folds and shared seeds) and "
        "over folds (per-fold pcc_mean), Holm-corrected across rows; * p<0.05, ** p<0.01, "
        "*** p<0.001. CI: 95 % bootstrap over test slides of the per-slide PCC. Lower is better "
        f"for {', '.join(sorted(LOWER_IS_BETTER))}; higher for the rest.",
        "",
    ]
    return lines


def _md_row(board: Board, r: Row, kind: str, best: dict[str, float]) -> str:
    """One table line of the main board (best values in bold)."""
    cells = [KIND_LABELS.get(kind, kind), f"**{r.method}**" if r.is_reference else r.method,
             f"`{r.config_hash}`",
             f"{len(r.seeds)} × {len(r.units) // max(len(r.seeds), 1)}"]
    for m in board.metrics:
        s = r.metrics.get(m)
        text = fmt_stat(s)
        if s is not None and m in best and s.mean == best[m]:
            text = f"**{text}**"
        cells.append(text)
    cells += [fmt_stat(r.runtime, 1), _md_escape(fmt_params(r.params)),
              "ref" if r.is_reference else fmt_num(r.delta, 4),
              "ref" if r.is_reference else f"{fmt_p(r.p_gene_holm)} (n={r.n_genes})",
              "ref" if r.is_reference else f"{fmt_p(r.p_fold_holm)} (n={r.n_folds})",
              fmt_ci(r.ci)]
    return "| " + " | ".join(cells) + " |"


def _md_table(board: Board, foot: dict[str, int]) -> list[str]:
    """The main table: header, alignment and one line per row, grouped by kind."""
    header = (["kind", "method", "config", "seeds × folds"]
              + [f"{m} [{foot[m]}]" for m in board.metrics]
              + ["runtime (s)", "key parameters", "Δ pcc_mean vs ref", "p genes (Holm)",
                 "p folds (Holm)", "95% CI (slides)"])
    aligns = ["---"] * 4 + ["---:"] * len(board.metrics) + ["---:", "---", "---:", "---:",
                                                              "---:", "---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    best = best_values(board)
    for kind in board.kinds:
        lines += [_md_row(board, r, kind, best) for r in board.rows_of(kind)]
    return lines


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


def _png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


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
    return _png(fig)


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
    return _png(fig)


def _template() -> Any:
    """The jinja2 template of the HTML page, with the formatting filters."""
    import importlib.resources

    from jinja2 import Environment, select_autoescape

    text = (importlib.resources.files("stbench.report") / "templates" / "leaderboard.html"
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
    return _template().render(
        board=board, kinds=board.kinds, kind_labels=KIND_LABELS, best=best_values(board),
        lower_is_better=LOWER_IS_BETTER, ablation_keys=ABLATION_KEYS,
        ablation_method=ABLATION_METHOD, protocol=describe_protocol(board),
        box_png=plot_boxes(board) if plots else None,
        hist_png=plot_histograms(board) if plots else None,
        other_pages=list(other_pages), isfinite=lambda x: x is not None and math.isfinite(x))


def write_board(board: Board, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``<dataset>.md``, ``<dataset>.html`` and ``index.html`` (same page, with links to
    the other ``*.html`` boards in ``out_dir``) atomically."""
    from stbench.run.result import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{board.dataset}.md"
    page = out / f"{board.dataset}.html"
    index = out / "index.html"
    others = sorted(p.name for p in out.glob("*.html")
                    if p.name not in ("index.html", page.name))
    write_atomic(md, render_markdown(board))
    html = render_html(board, others, plots=plots)
    write_atomic(page, html)
    write_atomic(index, html)
    mask = os.umask(0)
    os.umask(mask)
    for p in (md, page, index):  # write_atomic's temporary files are 0600; boards are public
        os.chmod(p, 0o666 & ~mask)
    return {"markdown": md, "html": page, "index": index}
