"""Leaderboards from recorded result JSONs: the one entry point, :func:`make_leaderboard`.

The work is split by job (this module only ties them together and re-exports their names, so
``from stbench.report.leaderboard import X`` keeps working):

* :mod:`stbench.report.runs`: the :class:`Run` / :class:`Unit` records, loading result JSONs,
  and which files may share a board (protocol, instance and configuration identity);
* :mod:`stbench.report.stats`: mean ± std, paired tests against the reference row, Holm and
  the bootstrap CI;
* :mod:`stbench.report.board`: :class:`Row`, :class:`Board` and :func:`build_board` (rows,
  aggregation, key parameters, ablations);
* :mod:`stbench.report.render`: number formatting, markdown, plots, HTML and
  :func:`write_board`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stbench.errors import UserError
from stbench.report.board import (
    ABLATION_KEYS,
    ABLATION_METHOD,
    KIND_LABELS,
    KIND_ORDER,
    LOWER_IS_BETTER,
    Board,
    Row,
    build_board,
    metric_order,
)
from stbench.report.render import (
    best_values,
    describe_protocol,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_params,
    fmt_stat,
    plot_boxes,
    plot_histograms,
    render_html,
    render_markdown,
    write_board,
)
from stbench.report.runs import (
    Run,
    Unit,
    config_hash,
    describe_difference,
    find_result_files,
    instance_of,
    load_run,
    load_runs,
    method_settings,
    protocol_key,
    protocol_of,
    select_board,
)
from stbench.report.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    Stat,
    mean_std,
    paired_fold_test,
    paired_gene_test,
)

__all__ = [
    "ABLATION_KEYS",
    "ABLATION_METHOD",
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "KIND_LABELS",
    "KIND_ORDER",
    "LOWER_IS_BETTER",
    "Board",
    "Row",
    "Run",
    "Stat",
    "Unit",
    "best_values",
    "build_board",
    "config_hash",
    "describe_difference",
    "describe_protocol",
    "find_result_files",
    "fmt_ci",
    "fmt_num",
    "fmt_p",
    "fmt_params",
    "fmt_stat",
    "instance_of",
    "load_run",
    "load_runs",
    "make_leaderboard",
    "mean_std",
    "method_settings",
    "metric_order",
    "paired_fold_test",
    "paired_gene_test",
    "plot_boxes",
    "plot_histograms",
    "protocol_key",
    "protocol_of",
    "render_html",
    "render_markdown",
    "select_board",
    "write_board",
]


def make_leaderboard(dataset: str, sources: Sequence[str | Path] = (), out_dir: str | Path | None
                     = "leaderboards", board: str | None = None, recorded: bool = True,
                     plots: bool = True) -> tuple[Board, dict[str, Path]]:
    """Load, check, aggregate and (if ``out_dir``) write the board of ``dataset``.

    Args:
        dataset: Dataset name; files of other datasets found in folders are skipped.
        sources: Extra result files or folders.
        out_dir: Where to write; ``None`` writes nothing.
        board: Board key when the results fall into several protocol groups.
        recorded: Also read ``leaderboards/results/<dataset>/`` (relative to the working
            directory) when it exists.
        plots: Embed the matplotlib plots in the HTML.

    Raises:
        UserError: Nothing to read, no results, or incompatible results.
    """
    srcs = [Path(s) for s in sources]
    default = Path("leaderboards") / "results" / dataset
    if recorded and default.is_dir():
        srcs.insert(0, default)
    if not srcs:
        raise UserError(f"no results to read for dataset {dataset!r}", where=str(default),
                        fix=f"record runs with `stbench run ... --dataset {dataset} --json "
                            f"{default}/NAME.json`, or pass --results DIR")
    runs, skipped = load_runs(srcs, dataset)
    b = build_board(runs, board, dataset=dataset, n_skipped=skipped, sources=[str(s) for s in srcs])
    paths = write_board(b, out_dir, plots=plots) if out_dir is not None else {}
    return b, paths
