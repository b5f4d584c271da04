"""Training cost of the trained zero-shot methods ALIGN-ST (``alignst``) and SGN (``sgn``).

Every configuration runs in its OWN child process (so ``ru_maxrss``, the peak resident set
size, is that configuration's), on synthetic inputs with the harness's feature contract
(``stbench.method.SlideView``): ``image`` (n, 1280) float32 as efficientnet_lite0 gives,
``nuclei`` (n, 32, 11) + ``nuclei_mask`` (n, 32) (1-32 nuclei a spot), ``edges_grid``
(``stbench.features.graph.grid_edges`` on a square array, 8-neighbourhood capped at 5) and
``edges_knn`` (``stbench.features.graph.knn_edges``, k = 5); gene text with token states
(G, T = 128, 384) and pooled (G, 384) embeddings, random but fixed (every token real: the
longest descriptions ``genes.max_tokens=128`` allows).

Each child fits the method's DEFAULT config (``alignst`` with ``threads=1``) for ``--epochs``
epochs WITHOUT validation (``val=None``: ``alignst`` runs ``max_epochs``, ``sgn``
``epochs_no_val``), one torch thread. Epoch times are taken from the ``ctx.progress``
callback, which both methods create right before their epoch loop and advance after each
epoch, so setup (feature scaling, text caching, graph building, model construction) is
excluded; it is reported separately. The table gives the fastest epoch (the first one pays
one-off allocation) as wall-clock AND process CPU time.

What an epoch is differs: ``alignst`` (version 3) visits every (slide, gene) pair once, in
steps of one slide x ``genes_per_step`` = 64 genes (``shared_chunk_steps=True``: the chunk on
EVERY training slide per step; either way its epoch grows with slides x genes); ``sgn`` takes one
step per slide with 64 sampled genes. The gene-scaling runs therefore vary the
genes TRAINED per slide-epoch: ``alignst`` with that many training genes, ``sgn`` with that
many training genes AND ``genes_per_step`` set to it.

Configurations:

* ``her2st``: 5 slides x 250 spots, 785 genes (the literature panel, all trained: an upper
  bound, a zero-shot fold trains on the seen genes only);
* ``cscc``: 12 slides, 8,700 spots (725 a slide), the 171-gene cSCC panel (its size is read
  from ``$STBENCH_SHARED/data/panels/cscc_171.txt`` when present);
* ``cscc4x``: the same 12 slides with 4x the spots (2,900 a slide, 34,800 in all); the
  exponent ``log(epoch_4x / epoch) / log 4`` is printed (1 = linear in spots);
* scaling in spots (``--scaling-slides`` = 1 slide, 128 genes; spots from ``--spots-grid``,
  250 500 1000 2000) and in genes (1 slide x 250 spots; genes from ``--genes-grid``: 64-512
  for ``alignst``, 32-256 for ``sgn``, whose one step holds them all), with the log-log slope of
  epoch time (least squares over the grid) and the local slope between the two largest
  sizes. ``alignst`` runs these with ``min_steps_per_epoch=1``, so an epoch is exactly
  slides x ceil(genes / 64) steps (the default 4 would pad the small sizes).

    python -m stbench.perf.bench_training                  # all of the above, ~10 min loaded
    python -m stbench.perf.bench_training --quick --json out.json      # tiny, in-process (tests)
    python -m stbench.perf.bench_training --only scaling --methods alignst
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time = work
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from stbench.perf._common import peak_rss_mb

D_IMG, D_TEXT, T_TOKENS, MAX_NUCLEI, N_NUC_FEAT = 1280, 384, 128, 32, 11
#: Default gene grids: trained genes per slide-epoch. sgn's steps hold ALL of them at once
#: (genes_per_step = G; 5.3 GiB peak at 512), so its grid is centred on its default of 64.
GENES_GRID = {"alignst": [64, 128, 256, 512], "sgn": [32, 64, 128, 256]}


def cscc_genes(shared: str) -> int:
    """Size of the real cSCC panel (171) from the shared data folder, else 171."""
    path = Path(shared) / "data" / "panels" / "cscc_171.txt"
    if path.is_file():
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    return 171


# ----------------------------------------------------------------------------------------------
# Synthetic inputs (child process)
# ----------------------------------------------------------------------------------------------


class SyntheticGeneText:
    """A :class:`~stbench.method.GeneText` whose pooled embeddings and token states are random
    but fixed per gene (seeded by the gene's index): ``embed`` (G, 384), ``token_states``
    (G, T, 384) with every token real."""

    def __init__(self, genes: list[str], t: int = T_TOKENS, d: int = D_TEXT, seed: int = 0) -> None:
        from stbench.method import GeneText

        rng = np.random.default_rng(seed)
        self.index = {g: i for i, g in enumerate(genes)}
        self.states = rng.standard_normal((len(genes), t, d), dtype=np.float32)
        self.pooled = self.states.mean(1)
        self.gene_text = GeneText({g: f"{g}: synthetic" for g in genes}, embed=self.embed,
                                  token_states=self.token_states)

    def embed(self, names: list[str]) -> np.ndarray:
        return self.pooled[[self.index[n] for n in names]]

    def token_states(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.index[n] for n in names]
        states = self.states[rows]
        return states, np.ones(states.shape[:2], dtype=bool)


def make_slides(n_slides: int, n_spots: int, n_genes: int, seed: int = 0) -> list:
    """Training slides with image, nuclei, grid + kNN graph and expression (log1p counts)."""
    from stbench.features.graph import grid_edges, knn_edges
    from stbench.method import SlideView

    rng = np.random.default_rng(seed)
    rank = 8
    lift = rng.normal(size=(rank, D_IMG)) / np.sqrt(rank)
    loadings = rng.normal(size=(n_genes, rank))
    views = []
    for s in range(n_slides):
        side = int(np.ceil(np.sqrt(n_spots)))
        grid = np.stack([np.arange(n_spots) % side, np.arange(n_spots) // side], 1).astype(np.float64)
        z = rng.gamma(2.0, 1.0, size=(n_spots, rank))
        img = (z @ lift + rng.normal(size=(n_spots, D_IMG))).astype(np.float32)
        counts = rng.integers(1, MAX_NUCLEI + 1, n_spots)
        mask = np.arange(MAX_NUCLEI)[None] < counts[:, None]
        nuclei = rng.normal(size=(n_spots, MAX_NUCLEI, N_NUC_FEAT)).astype(np.float32) * mask[..., None]
        rate = np.exp(np.clip(z @ loadings.T / rank, -5, 5))
        expr = np.log1p(rng.poisson(rate)).astype(np.float32)
        feats = {"image": img, "nuclei": nuclei, "nuclei_mask": mask,
                 "edges_grid": grid_edges(grid, max_neighbors=5), "edges_knn": knn_edges(img, 5)}
        views.append(SlideView(f"S{s}", f"P{s}", feats, grid * 100.0, grid, expr, 1.0))
    return views


def run_child(spec: dict) -> dict:
    """Fit one configuration; epoch timestamps through ``ctx.progress``."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from stbench.method import Bundle, FitContext

    t0 = time.perf_counter()
    genes = [f"G{i}" for i in range(spec["genes"])]
    views = make_slides(spec["slides"], spec["spots"], spec["genes"], spec.get("seed", 0))
    text = SyntheticGeneText(genes, t=spec.get("tokens", T_TOKENS), seed=spec.get("seed", 0))
    data_s = time.perf_counter() - t0
    rss_before = peak_rss_mb()
    train = Bundle(views, genes)

    marks: list[tuple[float, float]] = []

    def progress(desc: str, total: int):
        marks.append((time.perf_counter(), time.process_time()))

        def advance(n: int = 1) -> None:
            marks.append((time.perf_counter(), time.process_time()))

        return advance

    epochs = int(spec["epochs"])
    if spec["method"] == "alignst":
        from stbench.methods.alignst import AlignST

        cfg = dataclasses.replace(AlignST.Config(), max_epochs=epochs, threads=1,
                                  **spec.get("config", {}))
        method = AlignST(cfg)
    elif spec["method"] == "sgn":
        from stbench.methods.sgn import SGN

        cfg = dataclasses.replace(SGN.Config(), epochs_no_val=epochs, **spec.get("config", {}))
        method = SGN(cfg)
    else:
        raise SystemExit(f"unknown method {spec['method']!r}")
    ctx = FitContext(seed=spec.get("seed", 0), gene_text=text.gene_text, progress=progress)
    start = (time.perf_counter(), time.process_time())
    method.fit(train, None, ctx)
    end = (time.perf_counter(), time.process_time())
    if len(marks) != epochs + 1:
        raise RuntimeError(f"expected {epochs + 1} progress marks, got {len(marks)}")
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    steps = None
    if spec["method"] == "alignst":
        import math

        chunks = math.ceil(spec["genes"] / cfg.genes_per_step)
        passes = max(1, math.ceil(cfg.min_steps_per_epoch / (chunks * spec["slides"])))
        steps = passes * chunks * spec["slides"]
    else:
        steps = spec["slides"]
    n_params = sum(p.numel() for p in (method.model if spec["method"] == "alignst"
                                       else method._net).parameters())
    return {**spec, "data_s": data_s, "setup_wall_s": marks[0][0] - start[0],
            "setup_cpu_s": marks[0][1] - start[1], "after_loop_wall_s": end[0] - marks[-1][0],
            "epoch_wall_s": wall, "epoch_cpu_s": cpu, "best_epoch_wall_s": min(wall),
            "best_epoch_cpu_s": min(cpu), "steps_per_epoch": steps, "n_parameters": n_params,
            "rss_before_fit_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "torch_threads": torch.get_num_threads(), "loadavg": list(os.getloadavg())}


# ----------------------------------------------------------------------------------------------
# Parent: configurations, one child each
# ----------------------------------------------------------------------------------------------


def spawn(spec: dict, timeout: float, inprocess: bool = False) -> dict:
    if inprocess:  # no fresh process: peak RSS is this process's so far (cumulative)
        import torch

        threads = torch.get_num_threads()
        wall = time.perf_counter()
        try:
            out = run_child(spec)
        finally:
            torch.set_num_threads(threads)
        out["process_wall_s"] = time.perf_counter() - wall
        out["inprocess"] = True
        return out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    wall = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "stbench.perf.bench_training", "--child",
                            json.dumps(spec)], capture_output=True, text=True, env=env,
                           timeout=timeout)
    if child.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{child.stderr[-3000:]}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - wall
    out["inprocess"] = False
    return out


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """``(least-squares log-log slope over all points, slope between the last two points)``."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    fit = float(np.polyfit(lx, ly, 1)[0]) if len(xs) >= 2 else float("nan")
    last = float((ly[-1] - ly[-2]) / (lx[-1] - lx[-2])) if len(xs) >= 2 else float("nan")
    return fit, last


def plan(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """``(group, spec)`` of every configuration to run."""
    e, out = args.epochs, []
    quick = args.quick
    tokens = 16 if quick else T_TOKENS
    cscc = cscc_genes(args.shared)
    for m in args.methods:
        if args.only in ("all", "datasets"):
            if quick:
                out.append(("her2st", dict(method=m, slides=2, spots=40, genes=20, epochs=e,
                                           tokens=tokens)))
            else:
                out.append(("her2st", dict(method=m, slides=5, spots=250, genes=785, epochs=e)))
                out.append(("cscc", dict(method=m, slides=12, spots=725, genes=cscc, epochs=e)))
                out.append(("cscc4x", dict(method=m, slides=12, spots=4 * 725, genes=cscc,
                                           epochs=e)))
        if args.only in ("all", "scaling"):
            genes0 = 16 if quick else 128
            spots0 = 40 if quick else 250
            # alignst: no min_steps_per_epoch padding, so steps = slides x gene chunks exactly
            base = {"min_steps_per_epoch": 1} if m == "alignst" else {}
            for n in args.spots_grid:
                out.append(("spots", dict(method=m, slides=args.scaling_slides, spots=n,
                                          genes=genes0, epochs=e, tokens=tokens, config=base)))
            grid = args.genes_grid or ([8, 16] if quick else GENES_GRID[m])
            for g in grid:
                cfg = {**base, "genes_per_step": g} if m == "sgn" else dict(base)
                out.append(("genes", dict(method=m, slides=args.scaling_slides, spots=spots0,
                                          genes=g, epochs=e, tokens=tokens, config=cfg)))
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def _cscc4x_exponents(results: list[dict], methods: list[str],
                      exponents: dict[str, dict[str, float]]) -> None:
    """Add ``cscc4x_{wall,cpu}`` = log(epoch_4x / epoch_cscc) / log 4 per method (in place)."""
    for m in methods:
        base = [r for r in results if r["method"] == m and r["group"] == "cscc"]
        big = [r for r in results if r["method"] == m and r["group"] == "cscc4x"]
        if base and big:
            for measure in ("wall", "cpu"):
                ratio = big[0][f"best_epoch_{measure}_s"] / max(base[0][f"best_epoch_{measure}_s"], 1e-9)
                exponents.setdefault(m, {})[f"cscc4x_{measure}"] = math.log(ratio) / math.log(4.0)


def _print_exponents(exponents: dict[str, dict[str, float]]) -> None:
    """Print the scaling-exponent table (nothing when there are no exponents)."""
    if exponents:
        print()
        erows = []
        for m, ex in exponents.items():
            if "cscc4x_cpu" in ex:
                erows.append([m, "cscc -> 4x spots", f"{ex['cscc4x_cpu']:.2f}",
                              f"{ex['cscc4x_wall']:.2f}", "", ""])
            for group in ("spots", "genes"):
                if f"{group}_cpu" in ex:
                    erows.append([m, group, f"{ex[f'{group}_cpu']:.2f}", f"{ex[f'{group}_wall']:.2f}",
                                  f"{ex[f'{group}_cpu_last_pair']:.2f}",
                                  f"{ex[f'{group}_wall_last_pair']:.2f}"])
        print(_table(["method", "scaling in", "exponent (CPU)", "exponent (wall)",
                      "last pair (CPU)", "last pair (wall)"], erows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["alignst", "sgn"], choices=["alignst", "sgn"])
    parser.add_argument("--only", choices=["all", "datasets", "scaling"], default="all")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per configuration")
    parser.add_argument("--spots-grid", type=int, nargs="+", default=None,
                        help="spots a slide for the spot scaling (default 250 500 1000 2000)")
    parser.add_argument("--genes-grid", type=int, nargs="+", default=None,
                        help="trained genes for the gene scaling (default: alignst 64 128 256 "
                             "512, sgn 32 64 128 256)")
    parser.add_argument("--scaling-slides", type=int, default=1, help="slides in the scaling runs")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (seconds; for the tests): 2 x 40 spots, 16 tokens, "
                             "in one process")
    parser.add_argument("--inprocess", action="store_true",
                        help="run the configurations in this process (peak RSS is then cumulative)")
    parser.add_argument("--shared", default=os.environ.get("STBENCH_SHARED", "/work/shared"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    if args.child:  # one configuration; prints its JSON as the last line
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    if args.spots_grid is None:
        args.spots_grid = [20, 40] if args.quick else [250, 500, 1000, 2000]
    if args.quick:
        args.epochs = min(args.epochs, 2)
        args.inprocess = True

    t0 = time.perf_counter()
    results = []
    for group, spec in plan(args):
        r = spawn(spec, args.timeout, args.inprocess)
        r["group"] = group
        results.append(r)
        print(f"  {group:7s} {r['method']:8s} {r['slides']:2d} x {r['spots']:5d} spots, "
              f"{r['genes']:4d} genes: epoch {r['best_epoch_wall_s']:.2f} s wall / "
              f"{r['best_epoch_cpu_s']:.2f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MiB",
              file=sys.stderr, flush=True)

    rows = []
    for r in results:
        rows.append([r["group"], r["method"], f"{r['slides']} x {r['spots']}", str(r["genes"]),
                     str(r["steps_per_epoch"]), f"{r['best_epoch_wall_s']:.2f}",
                     f"{r['best_epoch_cpu_s']:.2f}", f"{r['epoch_wall_s'][0]:.2f}",
                     f"{r['setup_wall_s']:.2f}", f"{r['rss_before_fit_mb']:.0f}",
                     f"{r['peak_rss_mb']:.0f}"])
    header = ["config", "method", "slides x spots", "genes", "steps/epoch", "epoch wall s",
              "epoch CPU s", "1st epoch wall s", "setup wall s", "RSS before fit MiB",
              "peak RSS MiB"]
    exponents: dict[str, dict[str, float]] = {}
    for m in args.methods:
        for group, key in (("spots", "spots"), ("genes", "genes")):
            pts = [r for r in results if r["method"] == m and r["group"] == group]
            if len(pts) >= 2:
                for measure in ("wall", "cpu"):
                    fit, last = slope([p[key] for p in pts], [p[f"best_epoch_{measure}_s"] for p in pts])
                    exponents.setdefault(m, {})[f"{group}_{measure}"] = fit
                    exponents[m][f"{group}_{measure}_last_pair"] = last
    _cscc4x_exponents(results, args.methods, exponents)
    print(f"load average (1, 5, 15 min): %.1f, %.1f, %.1f on %d CPUs; one torch thread; "
          f"{args.epochs} epoch(s) a configuration, no validation; best epoch shown"
          % (*os.getloadavg(), os.cpu_count() or 0))
    print(_table(header, rows))
    _print_exponents(exponents)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"epochs": args.epochs, "quick": args.quick,
                                               "inprocess": args.inprocess,
                                               "loadavg": list(os.getloadavg()),
                                               "cpus": os.cpu_count(), "total_s": total,
                                               "runs": results, "exponents": exponents}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
