"""Run every registered method on the demo dataset with two code versions and diff the results.

Evidence for a refactor that must preserve behaviour (issue 17): the working tree ("after") is
compared with an older git revision ("before", default ``111180f``). The script

1. builds an importable copy of the revision's package in a temporary folder
   (``pkg/stbench`` = the revision's ``benchmark/``, with ``methods/`` and ``datasets/`` copied
   to ``pkg/stbench/methods`` and ``pkg/stbench/datasets``, exactly as the setuptools
   ``package-dir`` maps them) and checks that ``import stbench`` resolves to that copy;
2. runs ``python -m stbench run`` for every method registered in BOTH versions with the same
   small settings (demo dataset, handcrafted image encoder, tf-idf gene text, one holdout
   section, one thread, seed 0, tracking off, a few epochs for the trained methods) and a
   separate ``STBENCH_CACHE`` per version;
3. flattens the numeric leaves of each result JSON's ``metrics`` and ``folds`` (fold metrics,
   counts, per-gene and per-slide values; run times excluded) and prints, per method, whether
   every value present in both is identical, the largest absolute difference and which summary
   metrics differ. Keys only in the "after" result are listed as added, not as differences;
   methods whose ``method_version`` changed are marked "version bumped" (a difference there is
   expected).

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python tools/diff_demo_results.py --rev 111180f \
        --workdir /tmp/diff17/run --jobs 2 | tee /tmp/diff17/output.txt

Exit status: 0 when no method differs without a version bump and no run failed, else 1.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"stbench": "benchmark", "stbench/methods": "methods",
                "stbench/datasets": "datasets"}
BASE_OVERRIDES = ["dataset.n_spots=80", "dataset.n_genes=40", "encoder=handcrafted",
                  "genes.text_encoder=tfidf", "split=holdout", "split.test=[P2_B]", "threads=1",
                  "seed=0", "tracking.enabled=false"]
# Config fields set to --epochs for every method that has them (in both versions).
EPOCH_FIELDS = ("max_epochs", "epochs_no_val")
# Leaves never compared: wall-clock times and cache bookkeeping.
IGNORED_LEAVES = ("runtime_s",)
TOP_METRIC_PREFIX = "metrics."

INTROSPECT = r"""
import dataclasses, json, sys
import stbench, stbench.methods, stbench.datasets
from stbench.plugins import METHODS
out = {"files": [stbench.__file__, stbench.methods.__file__, stbench.datasets.__file__],
       "methods": {}}
for name in METHODS.list():
    cfg = getattr(METHODS.get(name), "Config", None)
    fields = {}
    if cfg is not None and dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            d = f.default
            if d is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                d = f.default_factory()
            fields[f.name] = None if d is dataclasses.MISSING else repr(d)
    out["methods"][name] = fields
json.dump(out, sys.stdout)
"""


@dataclass
class Version:
    """One code version: where its package is imported from and where its runs write.

    Attributes:
        label: "before" or "after".
        root: Folder ``import stbench`` must resolve into.
        pythonpath: ``PYTHONPATH`` for its runs (``None``: the installed / editable package).
        workdir: Its own scratch folder (cwd of the runs, feature cache, result JSONs).
    """

    label: str
    root: Path
    pythonpath: Path | None
    workdir: Path
    methods: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def cache(self) -> Path:
        """This version's ``STBENCH_CACHE``."""
        return self.workdir / "cache"

    def result_path(self, method: str) -> Path:
        """Where ``method``'s result JSON is written."""
        return self.workdir / "results" / f"{method}.json"

    def log_path(self, method: str) -> Path:
        """Where ``method``'s run log (stdout and stderr) is written."""
        return self.workdir / "logs" / f"{method}.log"

    def env(self) -> dict[str, str]:
        """The environment of this version's runs: offline, one thread, its own cache."""
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", STBENCH_CACHE=str(self.cache),
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   PYTHONHASHSEED="0", NO_COLOR="1", COLUMNS="120")
        return env


def build_revision_package(rev: str, dest: Path) -> Path:
    """Extract ``rev``'s ``benchmark/``, ``methods/`` and ``datasets/`` into ``dest/pkg``.

    Uses ``git archive`` (the repository's worktrees, index and HEAD are untouched).

    Returns:
        The folder to put on ``PYTHONPATH`` (``dest/pkg``), holding ``stbench/``.
    """
    src = dest / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    blob = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev,
                           *PACKAGE_DIRS.values()], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(src, filter="data")
    pkg = dest / "pkg"
    shutil.rmtree(pkg, ignore_errors=True)
    for target, source in PACKAGE_DIRS.items():  # stbench first, then the nested two
        shutil.copytree(src / source, pkg / target)
    return pkg


def introspect(version: Version, python: str) -> None:
    """Check where ``stbench`` imports from and read every method's Config defaults.

    Raises:
        RuntimeError: If ``stbench``, ``stbench.methods`` or ``stbench.datasets`` resolve
            outside ``version.root`` (e.g. the editable install shadowing the copy).
    """
    version.workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([python, "-c", INTROSPECT], env=version.env(), cwd=version.workdir,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{version.label}: introspection failed:\n{out.stderr[-3000:]}")
    info = json.loads(out.stdout)
    for path in info["files"]:
        if not Path(path).resolve().is_relative_to(version.root.resolve()):
            raise RuntimeError(f"{version.label}: {path} is not under {version.root}")
    version.methods = info["methods"]


def overrides_for(method: str, before: Version, after: Version, epochs: int) -> list[str]:
    """The run's overrides: the shared base plus ``method.<f>=epochs`` for each epoch field
    both versions' Config have."""
    common = set(before.methods.get(method, {})) & set(after.methods.get(method, {}))
    return BASE_OVERRIDES + [f"method.{f}={epochs}" for f in EPOCH_FIELDS if f in common]


def run_method(version: Version, method: str, overrides: list[str], python: str,
               timeout: float) -> tuple[bool, float]:
    """``python -m stbench run`` one method; the log goes to ``version.log_path(method)``.

    Returns:
        (whether it succeeded and wrote its JSON, wall seconds).
    """
    json_path = version.result_path(method)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    version.log_path(method).parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    cmd = [python, "-m", "stbench", "run", "-m", method, "-d", "demo", *overrides,
           "--json", str(json_path), "--no-progress"]
    start = time.perf_counter()
    with open(version.log_path(method), "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, env=version.env(), cwd=version.workdir, stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            log.write(f"\n[diff_demo_results] timed out after {timeout:.0f} s\n")
    return rc == 0 and json_path.exists(), time.perf_counter() - start


def run_version(version: Version, plan: dict[str, list[str]], python: str,
                timeout: float) -> dict[str, tuple[bool, float]]:
    """Run every planned method with one version, one after another (shared cache)."""
    done: dict[str, tuple[bool, float]] = {}
    for method, overrides in plan.items():
        done[method] = run_method(version, method, overrides, python, timeout)
        ok, secs = done[method]
        print(f"  [{version.label}] {method}: {'ok' if ok else 'FAILED'} ({secs:.0f} s)",
              file=sys.stderr, flush=True)
    return done


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a JSON value as ``{"a.b[label]": value}``.

    Parallel lists next to a ``gene`` or ``slide`` list of names are keyed by those names
    (``per_gene.pcc[KRT19]``), so a reordering is not mistaken for a change.
    """
    if isinstance(obj, dict):
        labels = next((obj[k] for k in ("gene", "slide") if isinstance(obj.get(k), list)), None)
        out: dict[str, Any] = {}
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key in IGNORED_LEAVES:
                continue
            if labels is not None and isinstance(value, list) and len(value) == len(labels):
                out.update({f"{name}[{lab}]": v for lab, v in zip(labels, value)})
            else:
                out.update(flatten(value, name))
        return out
    if isinstance(obj, list):
        out = {}
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def compared_leaves(result: dict) -> dict[str, Any]:
    """The leaves compared between versions: ``metrics`` and ``folds`` (plus gene split)."""
    leaves = flatten({"metrics": result.get("metrics", {}), "folds": result.get("folds", [])})
    genes = result.get("genes") or {}
    for key in ("seen", "unseen", "val", "panel"):
        if key in genes:
            leaves[f"genes.{key}"] = json.dumps(genes[key], sort_keys=True)
    return leaves


def leaf_diff(a: Any, b: Any) -> float:
    """|a - b| for numbers (0 for equal NaN/None), 0/inf for other values."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(float(a) - float(b))
    return 0.0 if a == b else math.inf


@dataclass
class Row:
    """The comparison of one method."""

    method: str
    status: str
    v_before: str = "-"
    v_after: str = "-"
    n_compared: int = 0
    max_diff: float = 0.0
    differing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    secs: tuple[float, float] = (0.0, 0.0)


def compare(method: str, before: dict, after: dict, atol: float) -> Row:
    """Diff two results of one method (see :class:`Row`)."""
    lb, la = compared_leaves(before), compared_leaves(after)
    common = [k for k in lb if k in la]
    diffs = {k: leaf_diff(lb[k], la[k]) for k in common}
    bad = [k for k, d in diffs.items() if d > atol]
    vb, va = str(before.get("method_version", "?")), str(after.get("method_version", "?"))
    status = "identical" if not bad else ("version bumped" if vb != va else "DIFFERS")
    differing = [k[len(TOP_METRIC_PREFIX):] for k in bad if k.startswith(TOP_METRIC_PREFIX)]
    other = len(bad) - len(differing)
    if other:
        differing.append(f"+{other} fold/gene-level values")
    top_added = sorted(set(after) - set(before))
    leaf_added = sorted(k for k in la if k not in lb)
    return Row(method, status, vb, va, len(common), max(diffs.values(), default=0.0),
               differing, top_added + leaf_added, sorted(k for k in lb if k not in la))


def settings_notes(before: Version, after: Version, methods: list[str]) -> list[str]:
    """Method Config fields or defaults that differ between the versions."""
    notes = []
    for m in methods:
        fb, fa = before.methods.get(m, {}), after.methods.get(m, {})
        gone, new = sorted(set(fb) - set(fa)), sorted(set(fa) - set(fb))
        changed = sorted(k for k in set(fb) & set(fa) if fb[k] != fa[k])
        if gone or new or changed:
            parts = ([f"only before: {', '.join(gone)}"] if gone else []) + \
                    ([f"only after: {', '.join(new)}"] if new else []) + \
                    ([f"default changed: " + ", ".join(f"{k} {fb[k]} -> {fa[k]}"
                                                      for k in changed)] if changed else [])
            notes.append(f"  {m}: " + "; ".join(parts))
    return notes


def load_rows(before: Version, after: Version, methods: list[str],
              runs: dict[str, dict[str, tuple[bool, float]]], atol: float) -> list[Row]:
    """One :class:`Row` per method from the result JSONs (a failed run gives "failed")."""
    rows = []
    for m in methods:
        (ok_b, s_b), (ok_a, s_a) = runs["before"][m], runs["after"][m]
        if not (ok_b and ok_a):
            which = " and ".join(v.label for v, ok in ((before, ok_b), (after, ok_a)) if not ok)
            row = Row(m, f"failed ({which}; see logs)")
        else:
            row = compare(m, json.loads(before.result_path(m).read_text()),
                          json.loads(after.result_path(m).read_text()), atol)
        row.secs = (s_b, s_a)
        rows.append(row)
    return rows


def _fold_key_pattern(key: str) -> str:
    """``folds[0].per_gene.pcc_specific[KRT19]`` -> ``per_gene.pcc_specific[*]``;
    ``folds[0].maps.genes.KRT19.pcc`` -> ``maps.*``."""
    key = re.sub(r"\[[^\]]*\]", "[*]", key.split("]", 1)[-1].lstrip("."))
    return "maps.*" if key.startswith("maps.") else key


def render(rows: list[Row], notes: list[str], header: list[str]) -> str:
    """The report: settings, one table row per method, added keys and a summary."""
    lines = list(header)
    fmt = "{:<16} {:<15} {:>9} {:>8} {:>11}  {}"
    lines += ["", fmt.format("method", "status", "version", "compared", "max |diff|",
                             "differing summary metrics"), "-" * 100]
    for r in rows:
        diff = "-" if r.status.startswith("failed") else f"{r.max_diff:.3g}"
        lines.append(fmt.format(r.method, r.status, f"{r.v_before}->{r.v_after}", r.n_compared,
                                diff, ", ".join(r.differing) or "-"))
    lines += ["", "seconds per run (before / after): " + ", ".join(
        f"{r.method} {r.secs[0]:.0f}/{r.secs[1]:.0f}" for r in rows)]
    added = sorted({k for r in rows for k in r.added if "[" not in k and "folds" not in k})
    fold_added = sorted({_fold_key_pattern(k) for r in rows for k in r.added
                         if k.startswith("folds[")})
    removed = sorted({k for r in rows for k in r.removed})
    lines += ["", "added in the after results (not differences): "
              + (", ".join(added) or "none")]
    if fold_added:
        lines.append("  added per fold: " + ", ".join(fold_added))
    lines.append("removed (in before only): " + (", ".join(removed) or "none"))
    lines += ["", "method Config differences (names/defaults):"] + (notes or ["  none"])
    count = {s: sum(r.status == s for r in rows) for s in ("identical", "version bumped",
                                                            "DIFFERS")}
    failed = sum(r.status.startswith("failed") for r in rows)
    lines += ["", f"summary: {len(rows)} methods; {count['identical']} identical, "
              f"{count['version bumped']} differ with a version bump, {count['DIFFERS']} "
              f"differ WITHOUT a version bump, {failed} failed"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="111180f", help="git revision of the 'before' code")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/stbench-diff-demo"),
                   help="scratch folder (package copy, caches, result JSONs, logs)")
    p.add_argument("--methods", nargs="*", help="only these methods (default: all in both)")
    p.add_argument("--epochs", type=int, default=3,
                   help=f"value of {'/'.join(EPOCH_FIELDS)} for methods that have them")
    p.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                   help="2: run the two versions side by side (one thread each)")
    p.add_argument("--atol", type=float, default=0.0, help="tolerated |diff| (default exact)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    p.add_argument("--python", default=sys.executable, help="interpreter of both versions")
    return p.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Version, Version, list[str]]:
    """Build the 'before' package, check both imports, choose the methods to run."""
    workdir = args.workdir.resolve()
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    pkg = build_revision_package(sha, workdir / "before")
    before = Version("before", pkg / "stbench", pkg, workdir / "before")
    after = Version("after", REPO, None, workdir / "after")
    for v in (before, after):
        shutil.rmtree(v.cache, ignore_errors=True)  # cold caches: nothing from older runs
        introspect(v, args.python)
    both = sorted(set(before.methods) & set(after.methods))
    for label, only in (("before", set(before.methods) - set(after.methods)),
                        ("after", set(after.methods) - set(before.methods))):
        if only:
            print(f"registered only {label}: {', '.join(sorted(only))}", file=sys.stderr)
    methods = [m for m in both if not args.methods or m in args.methods]
    return before, after, methods


def main(argv: list[str] | None = None) -> int:
    """Run every method with both versions, print the comparison; 1 if any unexplained diff."""
    args = parse_args(argv)
    before, after, methods = prepare(args)
    plan = {m: overrides_for(m, before, after, args.epochs) for m in methods}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {v.label: pool.submit(run_version, v, plan, args.python, args.timeout)
                   for v in (before, after)}
        runs = {label: f.result() for label, f in futures.items()}
    rows = load_rows(before, after, methods, runs, args.atol)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                               capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    header = [f"before: {args.rev} (package copy {before.root})",
              f"after:  working tree of {head}{' + uncommitted changes' if dirty else ''} "
              f"({after.root})",
              f"command: python -m stbench run -m METHOD -d demo {' '.join(BASE_OVERRIDES)} "
              f"[method.<{'|'.join(EPOCH_FIELDS)}>={args.epochs} where both Configs have it]",
              "compared: metrics.* and folds[*] (metrics, counts, per_gene, per_slide), gene "
              "split lists; runtime_s ignored; tolerance " + (f"{args.atol:g}" if args.atol
                                                               else "0 (exact)"),
              "epoch overrides: " + ", ".join(
                  f"{m}: {' '.join(o for o in plan[m] if o.startswith('method.'))}"
                  for m in methods if any(o.startswith("method.") for o in plan[m]))]
    print(render(rows, settings_notes(before, after, methods), header), flush=True)
    return 0 if all(r.status in ("identical", "version bumped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
