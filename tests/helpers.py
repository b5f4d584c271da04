"""Helpers shared by test modules (conftest.py exposes the fixtures built on them).

These are plain functions, not fixtures, where a test needs them at import time (parametrize
lists) or in a worker process started with ``spawn`` (which imports the test module, not the
conftest).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig

from stbench.method import Method


def register_tiny() -> None:
    """Register the conformance kit's ``tiny`` dataset (once per process)."""
    from stbench.plugins import DATASETS
    from stbench.testing import tiny_dataset_class

    if "tiny" not in DATASETS:
        DATASETS.register("tiny", tiny_dataset_class())


def tiny_config(tmp_path: Path, *overrides: str) -> DictConfig:
    """``compose`` of the ``tiny`` dataset with its tracking folder under ``tmp_path``.

    The feature cache is the session's (``$STBENCH_CACHE``, set by conftest.py and inherited by
    worker processes): content-addressed, so the tiny slides are encoded once per session.
    """
    from stbench.run.config import compose

    register_tiny()
    return compose(["dataset=tiny", f"tracking.dir={tmp_path}/runs", *overrides])


def with_defaults(cls: type[Method], **defaults) -> type[Method]:
    """``cls`` with other Config defaults (same meta, fit and predict)."""
    fields = [(k, type(v), dataclasses.field(default=v)) for k, v in defaults.items()]
    cfg = dataclasses.make_dataclass(cls.Config.__name__, fields, bases=(cls.Config,))
    return type(cls.__name__, (cls,), {"Config": cfg})
