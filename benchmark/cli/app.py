"""The ``stbench`` command line.

Exit codes: 0 success; 2 bad input or configuration (one line: what, where, how to fix; a
traceback only with ``--debug``); 1 internal error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from stbench.errors import UserError

app = typer.Typer(help="stbench: benchmark spatial-transcriptomics prediction from H&E.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
list_app = typer.Typer(help="List registered plugins.", no_args_is_help=True)
app.add_typer(list_app, name="list")

out = Console(soft_wrap=True)


@app.command(context_settings={"allow_extra_args": False})
def run(
    method: str = typer.Option(..., "--method", "-m", help="Registered method name."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered dataset name."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides key=value."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the result JSON here."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run METHOD on DATASET over every fold of the split; record it in MLflow."""
    from stbench.run.config import compose
    from stbench.plugins import DATASETS, METHODS
    from stbench.run.runner import run as run_benchmark

    overrides = list(overrides or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"expected key=value overrides, got {bad[0]!r}",
                        fix="write settings as key=value, e.g. seed=1")
    _check_json_path(json_path)
    METHODS.get(method)
    DATASETS.get(dataset)
    cfg = compose([f"method={method}", f"dataset={dataset}", *overrides])
    result = run_benchmark(cfg, json_path=str(json_path) if json_path else None,
                           progress=False if no_progress else None)
    _print_summary(result, json_path)


@app.command()
def features(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered dataset name."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides key=value."),
    kinds: str = typer.Option("image,nuclei,graph,gene_text", "--kinds",
                              help="Feature kinds to compute."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Compute (or load from the cache) every feature of DATASET's sections."""
    from stbench.cli.features import precompute

    summary = precompute(dataset, list(overrides or []), frozenset(kinds.split(",")),
                         progress=False if no_progress else None)
    for line in summary:
        out.print(line)


cache_app = typer.Typer(help="The content-addressed feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(directory: Optional[Path] = typer.Option(None, "--dir")) -> None:
    """Entries and size per feature kind."""
    from stbench.features.cache import ArrayCache

    cache = ArrayCache(directory)
    table = Table(title=f"feature cache {cache.dir}")
    for c in ("kind", "entries", "MB"):
        table.add_column(c)
    for kind, n, size in cache.summary():
        table.add_row(kind, str(n), f"{size / 1e6:.1f}")
    out.print(table)


@cache_app.command("clear")
def cache_clear(directory: Optional[Path] = typer.Option(None, "--dir"),
                kind: Optional[str] = typer.Option(None, help="Only this feature kind.")) -> None:
    """Delete cached features."""
    from stbench.features.cache import ArrayCache

    removed = ArrayCache(directory).clear(kind)
    out.print(f"removed {removed} entries")


@app.command()
def sweep(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    methods: str = typer.Option("", "--methods",
                                help="Comma-separated method names (with --protocol: only these rows)."),
    seeds: str = typer.Option("", "--seeds", help="Comma-separated seeds (default 0)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides for every job."),
    protocol: str = typer.Option("", "--protocol",
                                 help="A named protocol instead of --methods (e.g. full)."),
    rows: str = typer.Option("", "--rows", help="Only these row groups of the protocol."),
    launcher: str = typer.Option("joblib", help="basic | joblib | submitit_slurm | submitit_local"),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Parallel local jobs (joblib)."),
    show_config: bool = typer.Option(False, "--show-config",
                                     help="Print the launcher config instead of running."),
) -> None:
    """Run METHODS x SEEDS (or a named --protocol) on DATASET; complete runs are skipped."""
    from stbench.run.sweep import run_sweep, sweep_command

    seed_list = _int_list(seeds, "--seeds")
    extra = list(overrides or [])
    if protocol:
        from stbench.run.protocols import get_protocol, protocol_jobs

        plan = protocol_jobs(get_protocol(protocol), dataset, extra,
                             groups=_names(rows) or None, seeds=seed_list or None)
    else:
        if rows:
            raise UserError("--rows needs --protocol", fix="add --protocol full or drop --rows")
        plan = [(None, extra, seed_list or [0])]
        if not _names(methods):
            raise UserError("no methods given", fix="pass --methods a,b,c or --protocol full")
    only = set(_names(methods)) if protocol else None
    for group, group_overrides, group_seeds in plan:
        names = list(group.methods) if group is not None else _names(methods)
        if only is not None and _names(methods):
            names = [m for m in names if m in only]
            if not names:
                continue
        args = sweep_command(names, dataset, group_seeds, group_overrides, launcher=launcher,
                             jobs=jobs, show_config=show_config)
        if group is not None:
            out.print(f"protocol {protocol}: row group {group.name} ({', '.join(names)})")
        code = run_sweep(args)
        if code:
            raise UserError(f"the sweep failed (exit code {code})", fix="see the job errors above")


def _names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(s) for s in _names(text)]
    except ValueError as exc:
        raise UserError(f"bad {option} {text!r}", fix="write integers, e.g. --seeds 0,1,2") from exc


def _check_json_path(json_path: Optional[Path]) -> None:
    """Refuse a ``--json`` path that cannot be written before the run, not after it."""
    if json_path is None:
        return
    fix = "pass a file path whose folder exists or can be created, e.g. --json result.json"
    if json_path.is_dir():
        raise UserError("--json names a directory", where=str(json_path), fix=fix)
    for parent in json_path.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError("--json path lies under a file", where=str(parent), fix=fix)
            break


def _print_summary(result: dict, json_path: Optional[Path]) -> None:
    table = Table(title=f"{result['method']} ({result['method_kind']}) on {result['dataset']}, "
                        f"split {result['split']['name']}, {len(result['folds'])} folds, "
                        f"evaluated on {result['genes']['evaluated_on']}")
    table.add_column("metric")
    table.add_column("mean over folds", justify="right")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    out.print(f"runtime: {result['runtime_s']:.1f} s")
    mlflow = result.get("mlflow") or {}
    if mlflow.get("run_id"):
        out.print(f"MLflow run {mlflow['run_id']} in {mlflow['tracking_uri']} (view: stbench ui)")
    if json_path:
        out.print(f"result JSON: {json_path}")


def _plugin_table(kind: str, pattern: str) -> Table:
    from stbench.plugins import DATASETS, ENCODERS, METHODS, REPRESENTATIONS

    registry = {"methods": METHODS, "datasets": DATASETS, "encoders": ENCODERS,
                "representations": REPRESENTATIONS}[kind]
    table = Table(title=f"registered {kind}")
    if kind == "methods":
        columns = ("name", "kind", "trained on", "needs", "citation")
    elif kind == "datasets":
        columns = ("name", "version", "platform", "default split", "licence", "citation")
    elif kind == "representations":
        columns = ("name", "version", "kind", "token states", "description")
    else:
        columns = ("name", "dim", "input px", "description")
    for c in columns:
        table.add_column(c, overflow="fold")
    for name in registry.list(pattern):
        try:
            plugin = registry.get(name)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
            table.add_row(name, f"[red]failed to import: {exc}[/red]")
            continue
        if kind == "methods":
            m = plugin.meta
            table.add_row(name, m.kind, m.trained_on + " genes", ", ".join(sorted(m.needs)) or "-",
                          m.citation)
        elif kind == "datasets":
            c = plugin.card
            table.add_row(name, c.version, c.platform, c.default_split, c.licence, c.citation)
        elif kind == "representations":
            doc = (plugin.__doc__ or "").strip().splitlines()
            table.add_row(name, str(getattr(plugin, "version", "-")),
                          str(getattr(plugin, "kind", "-")),
                          "yes" if getattr(plugin, "has_tokens", False) else "no (pooled)",
                          doc[0] if doc else "")
        else:
            doc = (plugin.__doc__ or "").strip().splitlines()
            table.add_row(name, str(getattr(plugin, "dim", "")) or "-",
                          str(getattr(plugin, "input_size", "-")), doc[0] if doc else "")
    return table


@list_app.command("methods")
def list_methods(pattern: str = typer.Argument("*", help="Glob, e.g. 'align*'.")) -> None:
    """Registered methods with kind, genes trained on, needs and citation."""
    out.print(_plugin_table("methods", pattern))


@list_app.command("datasets")
def list_datasets(pattern: str = typer.Argument("*")) -> None:
    """Registered datasets with version, platform, default split, licence and citation."""
    out.print(_plugin_table("datasets", pattern))


@list_app.command("encoders")
def list_encoders(pattern: str = typer.Argument("*")) -> None:
    """Registered image encoders."""
    out.print(_plugin_table("encoders", pattern))


@list_app.command("representations")
def list_representations(pattern: str = typer.Argument("*")) -> None:
    """Registered gene representations (genes.representation=NAME) of the zero-shot track."""
    out.print(_plugin_table("representations", pattern))


@app.command()
def ui(
    directory: Path = typer.Option(Path("stbench-runs"), "--dir", help="The tracking folder."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(5000, help="Port."),
    experiment: Optional[str] = typer.Option(
        None, "--experiment", help="Print only this experiment's leaderboard address."),
    open_browser: bool = typer.Option(False, "--open",
                                      help="Open the leaderboard in the web browser."),
) -> None:
    """Start the MLflow UI on the local store and print each experiment's leaderboard address
    (runs sorted by pcc_mean, descending, key metrics as columns)."""
    from stbench.run.tracking import store_uri

    db = directory / "mlflow.db"
    if not db.exists():
        raise UserError("no MLflow store found", where=str(db),
                        fix="run `stbench run ...` first or pass --dir to the tracking folder")
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    urls = _leaderboard_urls(store_uri(directory), base, experiment)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri(directory),
           "--host", host, "--port", str(port), "--workers", "1"]
    bound = "" if base.startswith(f"http://{host}:") else f", bound to {host}:{port}"
    out.print(f"MLflow UI on {base}{bound} (Ctrl-C to stop)", markup=False, highlight=False)
    for name, url in urls:
        out.print(f"leaderboard {name}: {url}", markup=False, highlight=False)
    sys.stdout.flush()
    if open_browser and urls:
        _open_when_up(base, urls[0][1])
    os.execve(sys.executable, cmd, env)  # the UI replaces this process: signals reach it


def _leaderboard_urls(uri: str, base: str, experiment: Optional[str]) -> list[tuple[str, str]]:
    """``(experiment name, leaderboard address)`` of the store's stbench experiments, each
    set up as a leaderboard first (kind tag and saved view, for stores written earlier)."""
    from stbench.run.tracking import client_for, leaderboard_url, set_up_leaderboard

    client = client_for(uri)
    found = [e for e in client.search_experiments()
             if e.name != "Default" and (experiment is None or e.name == experiment)]
    if experiment is not None and not found:
        raise UserError(f"no experiment {experiment!r} in the store", where=uri,
                        fix="leave out --experiment to list them all")
    urls = []
    for e in sorted(found, key=lambda e: e.name):
        set_up_leaderboard(client, e.experiment_id)
        urls.append((e.name, leaderboard_url(base, e.experiment_id)))
    return urls


def _open_when_up(base: str, url: str) -> None:
    """Open ``url`` in the browser from a detached helper once ``base`` answers."""
    import subprocess

    script = ("import time, urllib.request, webbrowser\n"
              "for _ in range(120):\n"
              "    try:\n"
              f"        urllib.request.urlopen({base + '/health'!r}, timeout=2); break\n"
              "    except OSError:\n"
              "        time.sleep(1)\n"
              f"webbrowser.open({url!r})\n")
    subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _mount_subcommands() -> None:
    from stbench.cli.genes import app as genes_app

    from stbench.cli.board import compare, leaderboard
    from stbench.cli.data import app as data_app

    app.command("leaderboard")(leaderboard)
    app.command("compare")(compare)

    app.add_typer(genes_app, name="genes", help="Gene descriptions: show, coverage.")
    app.add_typer(data_app, name="data", help="Datasets: download, info.")


_mount_subcommands()


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM raises SystemExit so that runs in progress are marked FAILED, not left RUNNING."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _click_exceptions() -> tuple[type, ...]:
    """Click's exception base: the installed click's and the copy typer may vendor."""
    import click

    bases: list[type] = [click.ClickException]
    vendored = getattr(getattr(typer, "_click", None), "exceptions", None)
    if vendored is not None and hasattr(vendored, "ClickException"):
        bases.append(vendored.ClickException)
    return tuple(bases)


def usage_error_line(exc: Exception) -> str:
    """One line for a command-line usage error: the problem, the closest valid name (or the
    valid ones) and the usage line of the command it concerns."""
    import difflib

    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    if "Did you mean" not in message and "Possible options" not in message and ctx is not None:
        wrong = getattr(exc, "option_name", None) or _quoted(message)
        valid = _valid_names(ctx, option=bool(getattr(exc, "option_name", None)))
        close = difflib.get_close_matches(wrong or "", valid, n=1, cutoff=0.5) if wrong else []
        if close:
            message += f" Did you mean {close[0]!r}?"
        elif valid and ("No such" in message):
            message += f" Valid: {', '.join(valid)}."
    if ctx is None:
        return f"{message} (see `stbench --help`)"
    usage = " ".join(ctx.get_usage().split())
    return f"{message} ({usage[0].lower()}{usage[1:]}; add --help for more)"


def _quoted(message: str) -> str | None:
    import re

    found = re.search(r"'([^']+)'", message)
    return found.group(1) if found else None


def _valid_names(ctx, option: bool) -> list[str]:
    """Sub-command names of ``ctx``'s command, or its long option names."""
    command = ctx.command
    if option:
        return sorted(o for p in command.params for o in getattr(p, "opts", []) if o.startswith("--"))
    return sorted(getattr(command, "commands", {}) or {})


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (0 ok, 2 bad input, 1 internal)."""
    import click

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    _exit_cleanly_on_sigterm()
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="stbench", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        err.print(f"error: {exc.one_line()}", markup=False)
        return exc.exit_code
    except (click.exceptions.Exit, getattr(typer, "Exit", click.exceptions.Exit)) as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (click.exceptions.Abort, getattr(typer, "Abort", click.exceptions.Abort)):
        err.print("aborted", markup=False)
        return 130
    except _click_exceptions() as exc:
        if debug:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `stbench list` alone: its help
            out.print(exc.ctx.get_help(), markup=False, highlight=False)  # type: ignore[attr-defined]
            return 2
        err.print(f"error: {usage_error_line(exc)}", markup=False)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
        if debug:
            raise
        return _internal_error(exc, err)
    return 0


def _internal_error(exc: Exception, err: Console) -> int:
    """Report an unexpected exception in one line: 2 when the environment is the user's to fix
    (a full disk, a read-only folder), else 1."""
    from stbench.errors import environment_error

    user = environment_error(exc)
    if user is not None:
        err.print(f"error: {user.one_line()}", markup=False)
        return user.exit_code
    message = " ".join(str(exc).split())  # one line, whatever the exception says
    err.print(f"internal error: {type(exc).__name__}: {message} (rerun with --debug for the "
              "traceback)", markup=False)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
