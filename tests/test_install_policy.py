"""stbench installs beside a user's stack: ranges in pyproject.toml, exact pins in constraints.txt."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import PROJECT_ROOT


def _dependencies() -> list[Requirement]:
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in meta["dependencies"]]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("req", _dependencies(), ids=str)
def test_every_dependency_is_a_bounded_range(req):
    operators = {spec.operator for spec in req.specifier}
    assert "==" not in operators and "===" not in operators, f"{req} pins a version"
    assert operators & {">=", ">"} and operators & {"<", "<="}, f"{req} needs a lower and an upper bound"


def test_constraints_pin_every_dependency_inside_its_range():
    pins = _constraints()
    for req in _dependencies():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]} outside {req.specifier}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the pair that imports


def test_the_readme_and_ci_install_with_the_constraints():
    for path in ("README.md", ".ci/run", "Makefile"):
        text = (PROJECT_ROOT / path).read_text()
        assert '-e ".[dev]" -c constraints.txt' in text, path


@pytest.mark.slow
def test_installing_into_an_existing_stack_changes_nothing_else():
    """pip, resolving against this environment only (no index), installs stbench alone: the
    torch (and every other package) already there is kept, not downgraded or replaced."""
    report = PROJECT_ROOT / ".pytest_cache" / "install-report.json"
    report.parent.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
         "-q", "--report", str(report), "-e", f"{PROJECT_ROOT}[dev]"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installed == ["stbench"], installed
