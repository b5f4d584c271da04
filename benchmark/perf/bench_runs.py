"""Whole-run wall time of ``stbench run``: cold (empty feature cache) and warm (cache filled).

Runs, as a child process each, the command

    stbench run --method alignst --dataset her2st dataset.root=$STBENCH_SHARED/data/her2st \\
        split=holdout "split.test=[C5]" threads=1 cache.dir=CACHE tracking.dir=TRACK \\
        resume=false --no-progress --json OUT

* ``cold``: ``CACHE`` is a fresh EMPTY folder (also exported as ``$STBENCH_CACHE``, so nothing
  falls back to ``~/.cache/stbench``): image features, nuclei, graph and text embeddings are
  all computed;
* ``warm``: the same ``CACHE`` again (it must already hold the features of a cold run);
  ``TRACK`` is a fresh folder and ``resume=false``, so the run is never skipped as "already
  complete" and every fold is trained again: the difference is the feature cache alone.

For every run it prints the wall time, the child's CPU time (user + system) and peak RSS
(``os.wait4``), the fold's ``pcc_mean`` from the result JSON, and the cache's size.

    python -m stbench.perf.bench_runs --mode both                 # cold, then warm (~minutes)
    python -m stbench.perf.bench_runs --mode warm --cache-dir DIR # warm only, on a filled cache
    python -m stbench.perf.bench_runs --dry-run                   # print the commands only
    python -m stbench.perf.bench_runs --method mean_expression --dataset demo --root "" \\
        --split holdout --test P2_B --extra encoder=handcrafted genes.representation=tfidf

The all-methods her2st sweep is timed with the board script (it prints each row's wall time):

    time PROTOCOLS=holdout BOARD=0 bash leaderboards/make_her2st.sh /work/shared/data/her2st
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def folder_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MiB (0 if it does not exist)."""
    if not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def stbench_command(args: argparse.Namespace, cache: Path, track: Path, out: Path) -> list[str]:
    """The ``stbench run`` command line of one timed run."""
    exe = shutil.which("stbench", path=str(Path(sys.executable).parent)) or shutil.which("stbench")
    cmd = [exe] if exe else [sys.executable, "-m", "stbench"]
    cmd += ["run", "--method", args.method, "--dataset", args.dataset]
    if args.root:
        cmd.append(f"dataset.root={args.root}")
    if args.split:
        cmd.append(f"split={args.split}")
    if args.test:
        cmd.append(f"split.test=[{','.join(args.test)}]")
    cmd += [f"threads={args.threads}", f"cache.dir={cache}", f"tracking.dir={track}",
            "resume=false", *args.extra, "--no-progress", "--json", str(out)]
    return cmd


def timed_run(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``; wall time, the child's CPU time and peak RSS (``os.wait4``)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0}


def _result_fields(out: Path) -> dict:
    """``pcc_mean``, the run's own ``runtime_s``, the folds' ``runtime_s`` (fit + predict +
    evaluate) and the ``feature_cache`` hits/misses from the result JSON, where present."""
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        return {"pcc_mean": None}
    if not isinstance(data, dict):
        return {"pcc_mean": None}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    folds = [f for f in data.get("folds") or [] if isinstance(f, dict)]
    return {"pcc_mean": metrics.get("pcc_mean"), "result_runtime_s": data.get("runtime_s"),
            "fold_runtime_s": [f.get("runtime_s") for f in folds],
            "feature_cache": data.get("feature_cache")}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    shared = os.environ.get("STBENCH_SHARED", "/work/shared")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["cold", "warm", "both"], default="both")
    parser.add_argument("--method", default="alignst")
    parser.add_argument("--dataset", default="her2st")
    parser.add_argument("--root", default=f"{shared}/data/her2st", help="dataset.root ('' = none)")
    parser.add_argument("--split", default="holdout")
    parser.add_argument("--test", nargs="*", default=["C5"], help="split.test slides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides key=value")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder (cold: must be empty or absent; default: a new temp dir)")
    parser.add_argument("--workdir", default=None, help="where tracking folders and logs go")
    parser.add_argument("--keep", action="store_true", help="keep the temp cache and workdir")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _check_cache(cache: Path, modes: list[str]) -> None:
    if "cold" in modes and cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"cold run needs an empty cache folder; {cache} is not empty")
    if modes == ["warm"] and not (cache.exists() and any(cache.iterdir())):
        raise SystemExit(f"warm run needs a filled cache folder; {cache} is empty or absent "
                         "(run --mode cold or both first, or pass --cache-dir)")


def _run_modes(args: argparse.Namespace, modes: list[str], cache: Path, work: Path) -> list[dict]:
    """One whole ``stbench run`` per mode, timed; stops at the first failure."""
    env = {**os.environ, "STBENCH_CACHE": str(cache), "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    runs = []
    for mode in modes:
        out = work / f"result-{mode}.json"
        cmd = stbench_command(args, cache, work / f"tracking-{mode}", out)
        shown = " ".join(f'"{c}"' if "[" in c else c for c in cmd)
        print(f"[{mode}] STBENCH_CACHE={cache} {shown}", file=sys.stderr, flush=True)
        if args.dry_run:
            runs.append({"mode": mode, "command": cmd, "cache_dir": str(cache)})
            continue
        if mode == "cold":
            cache.mkdir(parents=True, exist_ok=True)
        before = folder_mb(cache)
        r = timed_run(cmd, env, work / f"log-{mode}.txt")
        r.update({"mode": mode, "command": cmd, "cache_dir": str(cache),
                  "cache_mb_before": before, "cache_mb_after": folder_mb(cache),
                  **_result_fields(out), "log": str(work / f"log-{mode}.txt")})
        runs.append(r)
        if r["returncode"] != 0:
            tail = (work / f"log-{mode}.txt").read_text()[-2000:]
            print(f"[{mode}] FAILED (exit {r['returncode']}):\n{tail}", file=sys.stderr)
            break
    return runs


def _print_table(args: argparse.Namespace, res: dict, runs: list[dict]) -> None:
    rows = [("load average (1, 5, 15 min)",
             "%.1f, %.1f, %.1f on %d CPUs" % (*res["loadavg"], res["cpus"] or 0))]
    for r in runs:
        rows.append((f"{r['mode']} run ({args.method} on {args.dataset})",
                     f"wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s (user {r['user_s']:.1f}, "
                     f"sys {r['sys_s']:.1f}), peak RSS {r['peak_rss_mb']:.0f} MiB, exit "
                     f"{r['returncode']}, pcc_mean {r['pcc_mean']}, cache "
                     f"{r['cache_mb_before']:.1f} -> {r['cache_mb_after']:.1f} MiB "
                     f"{r.get('feature_cache')}, folds' runtime_s {r.get('fold_runtime_s')}"))
    if "cold_over_warm_wall" in res:
        rows.append(("cold / warm", f"{res['cold_over_warm_wall']:.2f}x wall, "
                                    f"{res['cold_over_warm_cpu']:.2f}x CPU time"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="stbench-perf-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    temp_cache = args.cache_dir is None
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    modes = ["cold", "warm"] if args.mode == "both" else [args.mode]
    if not args.dry_run:
        _check_cache(cache, modes)
    runs = _run_modes(args, modes, cache, work)
    res = {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count(), "method": args.method,
           "dataset": args.dataset, "dry_run": args.dry_run, "runs": runs}
    done = {r["mode"]: r for r in runs if "wall_s" in r}
    if "cold" in done and "warm" in done:
        res["cold_over_warm_wall"] = done["cold"]["wall_s"] / done["warm"]["wall_s"]
        res["cold_over_warm_cpu"] = done["cold"]["cpu_s"] / max(done["warm"]["cpu_s"], 1e-9)
    if not args.dry_run:
        _print_table(args, res, runs)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if (temp_cache and not args.keep and not args.workdir and not args.dry_run) or \
            (args.dry_run and not args.workdir):
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.get("returncode", 0) != 0 for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
