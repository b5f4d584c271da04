"""Whole-run cost of the neural zero-shot methods against the ``seen_mean`` control, side by side.

One call runs, one child process each and one after the other, ``seen_mean`` and the neural
zero-shot methods (``alignst``, ``sgn``, ``genequery`` by default) with the SAME command line
as :mod:`stbench.perf.bench_runs` (her2st holdout, ``split.test=[C5]``, ``threads=1``, a fresh
tracking folder, ``resume=false``) on a WARM feature cache, and prints for each the child's CPU
time (user + system, ``os.wait4``), wall time, peak RSS, ``pcc_mean`` and the ratio of its CPU
and wall time to ``seen_mean``'s. Issue 14's target is ``cpu / seen_mean <= 3``.

    python -m stbench.perf.bench_zero_shot --cache-dir /tmp/stbench-perf-cache
    python -m stbench.perf.bench_zero_shot --methods alignst --repeat 2 --json out.json
    python -m stbench.perf.bench_zero_shot --pythonpath /path/to/other/tree   # before/after

``--pythonpath`` puts another copy of the package first on the children's ``PYTHONPATH`` (a
folder holding ``stbench/``), so one call can time an older tree with the same harness.
The cache must already hold the features (run any method once with ``STBENCH_CACHE`` set,
or ``python -m stbench.perf.bench_runs --mode cold --cache-dir DIR``): a cold cache would time
feature extraction, not training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from stbench.perf._common import two_column_table
from stbench.perf.bench_runs import _result_fields, stbench_command, timed_run

CONTROL = "seen_mean"
DEFAULT_METHODS = ("alignst", "sgn", "genequery")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shared = os.environ.get("STBENCH_SHARED", "/work/shared")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS))
    p.add_argument("--dataset", default="her2st")
    p.add_argument("--root", default=f"{shared}/data/her2st", help="dataset.root ('' = none)")
    p.add_argument("--split", default="holdout")
    p.add_argument("--test", nargs="*", default=["C5"], help="split.test slides")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="runs per method (the fastest CPU counts)")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides key=value (all runs)")
    p.add_argument("--cache-dir", default=os.environ.get("STBENCH_CACHE", "/tmp/stbench-perf-cache"))
    p.add_argument("--pythonpath", default=None, help="folder holding another stbench/ to time")
    p.add_argument("--workdir", default=None, help="tracking folders, logs, result JSONs (kept)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p.parse_args(argv)


def run_method(args: argparse.Namespace, method: str, work: Path, env: dict[str, str]) -> dict:
    """The fastest (by CPU) of ``args.repeat`` timed runs of ``method``."""
    best: dict | None = None
    for rep in range(max(1, args.repeat)):
        ns = argparse.Namespace(**{**vars(args), "method": method,
                                   "extra": [f"seed={args.seed}", *args.extra]})
        out = work / f"{method}_r{rep}.json"
        cmd = stbench_command(ns, Path(args.cache_dir), work / f"tracking-{method}-{rep}", out)
        r = timed_run(cmd, env, work / f"{method}_r{rep}.log")
        r.update({"method": method, **_result_fields(out)})
        print(f"  {method} run {rep}: cpu {r['cpu_s']:.1f} s, wall {r['wall_s']:.1f} s, "
              f"exit {r['returncode']}", file=sys.stderr, flush=True)
        if r["returncode"] != 0:
            r["log_tail"] = (work / f"{method}_r{rep}.log").read_text()[-1500:]
            return r
        if best is None or r["cpu_s"] < best["cpu_s"]:
            best = r
    assert best is not None
    return best


def table(runs: list[dict]) -> str:
    """``| method | cpu | wall | ratios | RSS | pcc_mean |`` lines (ratios to the control)."""
    ctl = next((r for r in runs if r["method"] == CONTROL and r["returncode"] == 0), None)
    rows = [("method", "CPU s | wall s | CPU / seen_mean | wall / seen_mean | peak RSS MiB | pcc_mean")]
    for r in runs:
        if r["returncode"] != 0:
            rows.append((r["method"], f"FAILED (exit {r['returncode']})"))
            continue
        cr = r["cpu_s"] / ctl["cpu_s"] if ctl else float("nan")
        wr = r["wall_s"] / ctl["wall_s"] if ctl else float("nan")
        r["cpu_ratio"], r["wall_ratio"] = cr, wr
        pcc = r.get("pcc_mean")
        rows.append((r["method"], f"{r['cpu_s']:.1f} | {r['wall_s']:.1f} | {cr:.2f}x | {wr:.2f}x | "
                                  f"{r['peak_rss_mb']:.0f} | "
                                  f"{'-' if pcc is None else format(pcc, '.4f')}"))
    return two_column_table(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = Path(args.cache_dir)
    if not (cache.exists() and any(cache.iterdir())):
        raise SystemExit(f"needs a filled (warm) feature cache; {cache} is empty or absent")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="stbench-perf-zs-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STBENCH_CACHE": str(cache), "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH")) if p)
    runs = []
    for method in [CONTROL, *[m for m in args.methods if m != CONTROL]]:
        runs.append(run_method(args, method, work, env))
    text = table(runs)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs; "
          f"{args.dataset} {args.split} test={args.test} threads={args.threads} seed={args.seed}")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"loadavg": list(load), "runs": runs}, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r["returncode"] != 0 for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
