"""Functions a reader can hold: none over 80 lines in the package's code folders."""

from __future__ import annotations

import ast

from conftest import PROJECT_ROOT

MAX_LINES = 80
FOLDERS = ("benchmark", "methods", "datasets")


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function longer than ``max_lines``."""
    found = []
    for folder in FOLDERS:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    length = node.end_lineno - start + 1
                    if length > max_lines:
                        found.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} "
                                     f"{node.name} ({length} lines)")
    return found


def test_no_function_over_80_lines():
    assert long_functions() == []


def test_numpy_only_methods_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import stbench.methods.ridge, stbench.methods.bilinear, "
            "stbench.methods.textknn, stbench.methods.seen_mean, stbench.methods.mean_expression; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
