"""Progress bars: drawn on a terminal, silent in logs (no bar spam when stderr is not a TTY).

The same script runs twice: under a pseudo-terminal (bars expected) and with stderr piped
(nothing expected). It drives every kind of bar stbench draws: features/folds/epochs through
``progress_bars`` (the runner hands ``task`` to the feature pipeline, the fold loop and
``FitContext.progress``), tuning trials through :func:`stbench.run.tuning.tune`, and sweep jobs
through :func:`stbench.run.progress.follow_jobs`.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap

import dataclasses

import numpy as np
import pytest

from stbench.method import Bundle, FitContext, SlideView
from stbench.run.progress import multirun_size
from stbench.run.tuning import tune

SCRIPT = textwrap.dedent("""
    import json, tempfile, threading, time
    from pathlib import Path
    from stbench.run.progress import follow_jobs, progress_bars

    with progress_bars() as task:
        for name in ("features (image)", "folds (demo)", "bilinear epochs"):
            advance = task(name, 3)
            for _ in range(3):
                advance()
    summary = Path(tempfile.mkdtemp()) / "summary.jsonl"

    def jobs():
        for i in range(2):
            time.sleep(0.3)
            with open(summary, "a") as fh:
                fh.write(json.dumps({"job": i}) + "\\n")

    writer = threading.Thread(target=jobs)
    with follow_jobs(summary, 2, interval=0.05):
        writer.start()
        writer.join()
        time.sleep(0.3)
    print("done", flush=True)
""")


def _in_pty(code: str) -> str:
    """stdout+stderr of ``python -c code`` run under a pseudo-terminal."""
    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="120", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal():
    out = _in_pty(SCRIPT)
    assert "done" in out
    for name in ("features (image)", "folds (demo)", "bilinear epochs", "sweep jobs"):
        assert name in out, out[-2000:]
    assert "3/3" in out and "2/2" in out


def test_silent_when_not_a_terminal():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout == "done\n"
    assert proc.stderr == ""


class _Toy:
    """The smallest tunable method: predicts ``scale`` times the training mean."""

    class meta:  # noqa: N801 - shaped like MethodMeta for tune()
        name = "toy"

    @dataclasses.dataclass
    class Config:
        scale: float = 1.0

    def __init__(self, config: "_Toy.Config") -> None:
        self.config = config

    @staticmethod
    def search_space(trial) -> dict:
        return {"scale": trial.suggest_float("scale", 0.5, 2.0)}

    def fit(self, train, val, ctx) -> None:
        self.mean = train.expression().mean(0)

    def predict(self, bundle, genes):
        rng = np.random.default_rng(0)
        return rng.normal(size=(bundle.n_spots, len(genes))) * self.config.scale


def _bundle(n: int, genes: list[str]) -> Bundle:
    rng = np.random.default_rng(n)
    views = [SlideView(f"S{i}", "P", {}, np.zeros((n, 2)), np.zeros((n, 2)),
                       rng.normal(size=(n, len(genes)))) for i in range(2)]
    return Bundle(views, genes)


def test_tuning_trials_advance_a_bar(tmp_path):
    bars: dict[str, list[int]] = {}

    def progress(description: str, total: int):
        bars[description] = [total, 0]
        return lambda n=1: bars[description].__setitem__(1, bars[description][1] + n)

    outcome = tune(method_cls=_Toy, base_config=_Toy.Config(), train=_bundle(12, ["A", "B"]),
                   val=_bundle(10, ["C"]), make_ctx=lambda report: FitContext(
                       progress=progress, report=report),
                   n_trials=3, storage=f"sqlite:///{tmp_path / 'optuna.db'}", name="toy",
                   seed=0, pruner="none")
    assert outcome.n_complete == 3
    assert bars["toy trials"] == [3, 3]


@pytest.mark.parametrize("args, n", [
    (["python", "-m", "stbench.run.sweep_app", "-m", "method=a,b,c", "dataset=demo",
      "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "split.test=[P2_B]"], 6),
    (["python", "-m", "stbench.run.sweep_app", "--cfg", "hydra", "method=a,b"], 0),
])
def test_multirun_size(args, n):
    assert multirun_size(args) == n
