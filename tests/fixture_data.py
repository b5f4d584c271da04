"""The test-data generator ``tests/fixtures/make_fixtures.py``, loaded once as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_NAME = "stbench_test_make_fixtures"


def fixture_generator() -> ModuleType:
    """``make_fixtures`` as a module (loaded by path: ``tests/fixtures`` is not a package)."""
    if _NAME not in sys.modules:
        path = Path(__file__).parent / "fixtures" / "make_fixtures.py"
        spec = importlib.util.spec_from_file_location(_NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]
