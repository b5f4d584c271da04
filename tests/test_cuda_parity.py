"""``device=cuda`` gives the CPU's predictions within a stated tolerance (issue 14, item 5).

Each neural zero-shot method is trained for two epochs on the demo with dropout off, once on
the CPU and once on the GPU, from the same seed. The weights are initialised on the CPU and the
gene batches drawn from CPU generators, so the two runs differ only by floating-point rounding
(CUDA kernels sum in another order; ``index_add`` on CUDA is not deterministic). Tolerance: each
unseen gene's test PCC within 0.01, ``pcc_mean`` within 0.003. Skips where no CUDA device is
present (this project's CI machine has none); `python -m stbench.perf.bench_zero_shot --extra
device=cuda` times the same runs on her2st where one is lent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stbench.cli.app import main  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device here: device=cuda parity needs a GPU"),
]

NO_DROPOUT = {
    "alignst": ["method.dropout=0", "method.min_epochs=0"],
    "sgn": ["method.dropout=0", "method.text_dropout=0"],
    "genequery": ["method.dropout=0"],
}


def _per_gene(path) -> dict[str, float]:
    fold = json.loads(path.read_text())["folds"][0]
    return dict(zip(fold["per_gene"]["gene"], fold["per_gene"]["pcc"]))


@pytest.mark.parametrize("method", sorted(NO_DROPOUT))
def test_cuda_predictions_match_cpu(method, in_tmp, capsys):
    base = ["run", "--method", method, "--dataset", "demo", "encoder=handcrafted",
            "split=holdout", "split.test=[P2_B]", "seed=0", "method.max_epochs=2",
            "tracking.enabled=false", "explain_genes=0", "--no-progress", *NO_DROPOUT[method]]
    for device in ("cpu", "cuda"):
        assert main([*base, f"device={device}", "--json", f"{device}.json"]) == 0, \
            capsys.readouterr().err
    cpu, cuda = _per_gene(in_tmp / "cpu.json"), _per_gene(in_tmp / "cuda.json")
    assert set(cpu) == set(cuda)
    diffs = np.array([abs(cpu[g] - cuda[g]) for g in cpu])
    assert diffs.max() <= 0.01, f"{method}: largest per-gene PCC gap {diffs.max():.4f}"
    assert abs(np.mean(list(cpu.values())) - np.mean(list(cuda.values()))) <= 0.003
