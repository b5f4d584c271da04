"""``stbench sweep``: the grid of methods x seeds (x extra overrides) as a Hydra multirun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stbench.errors import ConfigError
from stbench.run.config import with_default_split

LAUNCHERS = ("basic", "joblib", "submitit_slurm", "submitit_local")


def sweep_command(methods: list[str], dataset: str, seeds: list[int], overrides: list[str],
                  launcher: str = "joblib", jobs: int = 2, sweep_dir: str = "stbench-runs/sweeps",
                  show_config: bool = False) -> list[str]:
    """The ``python -m stbench.run.sweep_app -m ...`` command line of a sweep."""
    from stbench.plugins import DATASETS, METHODS

    if not methods:
        raise ConfigError("no methods given", fix="pass --methods a,b,c")
    for m in methods:
        METHODS.get(m)
    DATASETS.get(dataset)
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}", fix=f"use one of {', '.join(LAUNCHERS)}")
    args = [sys.executable, "-m", "stbench.run.sweep_app"]
    args += ["--cfg", "hydra"] if show_config else ["-m"]
    args += [f"method={','.join(methods)}", f"dataset={dataset}",
             f"seed={','.join(str(s) for s in seeds)}"]
    args += with_default_split(dataset, overrides)[:1] if not _chooses_split(overrides) else []
    args += [f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}/${{now:%Y-%m-%d_%H-%M-%S}}",
             "hydra.job.chdir=false"]
    if launcher == "joblib":
        args.append(f"hydra.launcher.n_jobs={jobs}")
    args += list(overrides)
    return args


def _chooses_split(overrides: list[str]) -> bool:
    return any(o.split("=", 1)[0].lstrip("+~") == "split" for o in overrides)


def run_sweep(args: list[str], summary: Path | None = None,
              progress: bool | None = None) -> int:
    """Run the multirun; return its exit code. On a terminal a bar counts the finished jobs
    (each job appends a line to the summary file, a temporary one unless ``summary``)."""
    import tempfile

    from stbench.run.progress import follow_jobs, multirun_size

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="stbench-sweep-") as tmp:
        path = summary if summary is not None else Path(tmp) / "summary.jsonl"
        env["STBENCH_SWEEP_SUMMARY"] = str(path)
        with follow_jobs(path, multirun_size(args), progress):
            return subprocess.call(args, env=env)
