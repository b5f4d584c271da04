"""A usage error of any command (unknown command or option, missing argument) is bad input:
exit code 2, one line with the problem, the closest valid name and the usage line."""

from __future__ import annotations

import pytest

from stbench.cli.app import main


@pytest.mark.parametrize("argv,needles", [
    (["run", "--methd", "ridge"], ["--methd", "--method", "usage: stbench run"]),
    (["lst"], ["'lst'", "'list'", "usage: stbench"]),
    (["list", "representationz"], ["'representationz'", "'representations'", "usage: stbench list"]),
    (["list", "foobar"], ["'foobar'", "Valid:", "methods", "usage: stbench list"]),
    (["list", "methds"], ["'methds'", "'methods'"]),
    (["run", "--method"], ["--method", "requires an argument"]),
    (["data", "info"], ["Missing argument", "usage: stbench data info"]),
    (["leaderboard", "--datset", "demo"], ["--datset", "--dataset"]),
])
def test_usage_errors_exit_2_with_one_line(argv, needles, capsys):
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def test_a_group_alone_prints_its_help(capsys):
    assert main(["list"]) == 2
    captured = capsys.readouterr()
    assert "methods" in captured.out and captured.err == ""
