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
    render_description,
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
                     plots: bool = True, *, store: str | Path | None = None,
                     from_mlflow: str | None = None, experiment: str | None = None,
                     ui_base: str | None = None, publish: bool = True,
                     ) -> tuple[Board, dict[str, Path]]:
    """Load, check, aggregate and (if ``out_dir``) write the board of ``dataset``.

    Args:
        dataset: Dataset name; files of other datasets found in folders are skipped.
        sources: Extra result files or folders (highest precedence).
        out_dir: Where to write; ``None`` writes nothing.
        board: Board key when the results fall into several protocol groups.
        recorded: Also read ``leaderboards/results/<dataset>/`` (relative to the working
            directory) when it exists.
        plots: Embed the matplotlib plots in the HTML.
        store: The local tracking folder whose ``results/<dataset>/`` is read and whose
            ``mlflow.db`` gives the row links (``None``: not read).
        from_mlflow: Read the finished runs of an MLflow tracking server instead of the local
            store and the committed folder (named ``sources`` are still read).
        experiment: With ``from_mlflow``: only this experiment.
        ui_base: The MLflow UI address used in links (default: the server, or the address
            ``stbench ui`` serves).
        publish: Write the board into the description of the MLflow experiments holding its
            runs (when ``out_dir`` is set and the store is known).

    Raises:
        UserError: Nothing to read, no results, or incompatible results.
    """
    from stbench.report.sources import gather, link_runs, load_mlflow_runs, publish_board

    if from_mlflow:
        src = load_mlflow_runs(from_mlflow, dataset, experiment, ui_base=ui_base)
        if sources:
            named, skipped = load_runs(list(sources), dataset)
            src.runs, src.n_skipped = named + src.runs, src.n_skipped + skipped
            src.sources = [str(p) for p in sources] + src.sources
    else:
        src = gather(dataset, list(sources), store, recorded, ui_base)
    experiments = link_runs(src)
    b = build_board(src.runs, board, dataset=dataset, n_skipped=src.n_skipped,
                    sources=src.sources)
    b.n_superseded = src.n_superseded
    paths = write_board(b, out_dir, plots=plots) if out_dir is not None else {}
    if publish and out_dir is not None and src.store_uri:
        ids = experiments or _experiment_named(src.store_uri, f"stbench-{dataset}")
        b.published = publish_board(src.store_uri, ids, render_description(b))
    return b, paths


def _experiment_named(uri: str, name: str) -> list[str]:
    """The id of the experiment ``name`` in the store, if it exists."""
    from stbench.run.tracking import client_for

    try:
        exp = client_for(uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - no store, no description
        return []
    return [exp.experiment_id] if exp is not None else []
