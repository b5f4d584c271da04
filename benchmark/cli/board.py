"""``stbench leaderboard`` and ``stbench compare``.

Both are plain typer-annotated functions, so the main CLI can mount them as top-level commands
(``app.command("leaderboard")(leaderboard)``); :data:`app` holds them too. Errors are
:class:`stbench.errors.UserError` (exit code 2, one line, through ``stbench.cli.app.main``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Leaderboards and paired comparisons of recorded results.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

console = Console(soft_wrap=True)


def leaderboard(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name of the board."),
    out: Path = typer.Option(Path("leaderboards"), "--out", "-o",
                             help="Folder for <dataset>.md, <dataset>.html and index.html."),
    results_dir: Optional[list[Path]] = typer.Option(
        None, "--results", "-r", metavar="PATH",
        help="Extra result JSON files or folders (repeatable; they take precedence)."),
    board: Optional[str] = typer.Option(
        None, "--board", "-b",
        help="Board key (or prefix) when the results fall into several incompatible groups."),
    recorded: Optional[bool] = typer.Option(
        None, "--recorded/--no-recorded",
        help="Read the committed leaderboards/results/<dataset>/ (default: yes, except with "
             "--from-mlflow)."),
    store: Path = typer.Option(
        Path("stbench-runs"), "--store", metavar="DIR",
        help="The local tracking folder (tracking.dir): its results/<dataset>/ is read and its "
             "MLflow store links the rows and receives the board as experiment description."),
    use_store: bool = typer.Option(True, "--use-store/--no-store",
                                   help="Read the local store (default: yes)."),
    from_mlflow: Optional[str] = typer.Option(
        None, "--from-mlflow", metavar="URI",
        help="Build the board from the finished runs of an MLflow tracking server "
             "(http://host:port, sqlite:///...) instead of the local store."),
    experiment: Optional[str] = typer.Option(
        None, "--experiment", help="With --from-mlflow: only this experiment (name)."),
    mlflow_url: Optional[str] = typer.Option(
        None, "--mlflow-url", metavar="URL",
        help="The MLflow UI address used in row links (default: the --from-mlflow server, "
             "else http://127.0.0.1:5000 as `stbench ui` serves it)."),
    publish: bool = typer.Option(True, "--publish/--no-publish",
                                 help="Write the board into the MLflow experiment's description."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Embed the figures."),
) -> None:
    """Build the markdown and static HTML leaderboard of DATASET.

    Reads, with no flag, every finished run of the local store (stbench-runs/results/DATASET/)
    and the committed leaderboards/results/DATASET/; or an MLflow server with --from-mlflow.
    """
    from stbench.report.leaderboard import fmt_stat, make_leaderboard

    b, paths = make_leaderboard(
        dataset, list(results_dir or []), out, board=board,
        recorded=(not from_mlflow) if recorded is None else recorded, plots=plots,
        store=store if use_store else None, from_mlflow=from_mlflow, experiment=experiment,
        ui_base=mlflow_url, publish=publish)
    n_files = sum(len(r.runs) for r in b.rows)
    console.print(f"board {b.key} of {b.dataset}: {len(b.rows)} rows from {n_files} result files"
                  + (f" ({b.n_skipped} of other datasets skipped)" if b.n_skipped else "")
                  + (f" ({b.n_superseded} superseded by newer copies)" if b.n_superseded else ""),
                  markup=False, highlight=False)
    console.print(f"read: {', '.join(b.sources)}", markup=False, highlight=False)
    for r in b.rows:
        mark = " (reference)" if r.is_reference else ""
        pcc = fmt_stat(r.metrics.get("pcc_mean"))
        console.print(f"  {r.kind:<10} {r.label:<40} pcc_mean {pcc}{mark}",
                      markup=False, highlight=False)
    if len(b.boards) > 1:
        others = ", ".join(k for k in b.boards if k != b.key)
        console.print(f"other boards not shown: {others}")
    for p in paths.values():
        console.print(f"wrote {p}", markup=False, highlight=False)
    if b.published:
        console.print(f"board written to the description of MLflow experiment(s) "
                      f"{', '.join(b.published)}", markup=False, highlight=False)


def compare(
    run_a: Path = typer.Argument(..., help="Result JSON of run A."),
    run_b: Path = typer.Argument(..., help="Result JSON of run B."),
    json_path: Optional[Path] = typer.Option(None, "--json",
                                             help="Also write the comparison (JSON) here."),
) -> None:
    """Paired comparison of two recorded runs: per-gene Wilcoxon per fold and overall."""
    from stbench.report.compare import compare_files, format_comparison
    from stbench.run.result import dumps, write_atomic

    c = compare_files(run_a, run_b)
    format_comparison(c, console)
    if json_path:
        write_atomic(json_path, dumps(c))
        console.print(f"wrote {json_path}", markup=False, highlight=False)


app.command("leaderboard")(leaderboard)
app.command("compare")(compare)
