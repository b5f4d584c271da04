"""The Hydra application behind ``stbench sweep`` (multirun over methods x seeds x ...).

Run it through ``stbench sweep``; directly it is ``python -m stbench.run.sweep_app -m
method=bilinear,ridge dataset=demo seed=0,1 hydra/launcher=joblib``. Each job calls the
ordinary runner, so a job whose run identity is already complete is skipped, never redone
and never reused under another configuration. Launchers: ``basic`` (sequential), ``joblib``
(local processes, ``hydra.launcher.n_jobs``), ``submitit_slurm`` (a SLURM cluster; settings
under ``hydra.launcher.*``: partition, timeout_min, cpus_per_task, gpus_per_node, mem_gb ...).
"""

from __future__ import annotations

import json
import os
import sys

import hydra
from omegaconf import DictConfig

from stbench.run.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def job(cfg: DictConfig) -> float | None:
    """One (method, dataset, seed, ...) run; returns pcc_mean for Hydra's sweep summary."""
    from stbench.run.config import check_ranges, check_schema
    from stbench.errors import UserError
    from stbench.run.runner import run

    try:
        check_schema(cfg)
        check_ranges(cfg)
        result = run(cfg, progress=False)
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        raise SystemExit(2) from exc
    line = {"method": result["method"], "dataset": result["dataset"], "seed": result["seed"],
            "identity": result["identity"], "skipped": "skipped" in result,
            "pcc_mean": result["metrics"]["pcc_mean"]}
    summary = os.environ.get("STBENCH_SWEEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
    return float(result["metrics"]["pcc_mean"])


if __name__ == "__main__":
    job()
