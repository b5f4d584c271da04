"""Rewrite result JSONs written before results were portable: strip local paths, add digests.

    python tools/portable_results.py leaderboards/results tests/data/results \
        --root her2st=../shared/data/her2st

Each file's ``config`` loses its local paths (as :func:`stbench.run.portable.portable_config`
does for new runs). With ``--root DATASET=PATH`` the dataset is loaded from PATH (with the
file's own dataset settings) and ``dataset_digest`` is added; generated datasets (``demo``)
need no root. Everything else in the file is kept byte for byte in meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stbench.run.portable import dataset_digest, portable_config
from stbench.run.result import RunResult, write_atomic


def _digest(result: dict, roots: dict[str, str], memo: dict[str, str]) -> str | None:
    """Digest of the sections the result's dataset settings load (memoised per settings)."""
    from stbench.plugins import DATASETS

    name = result["dataset"]
    settings = dict(result["config"].get("dataset") or {})
    settings.pop("name", None)
    if name in roots:
        settings["root"] = roots[name]
    elif settings.get("root"):
        return None  # a file-based dataset whose data is not here
    key = json.dumps([name, settings], sort_keys=True, default=str)
    if key not in memo:
        cls = DATASETS.get(name)
        fields = set(cls.Config.__dataclass_fields__)
        memo[key] = dataset_digest(cls(cls.Config(**{k: v for k, v in settings.items()
                                                     if k in fields})).load())
    return memo[key]


def rewrite(path: Path, roots: dict[str, str], memo: dict[str, str]) -> bool:
    """Rewrite one result file in place; True when it changed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    digest = _digest(data, roots, memo) if not data.get("dataset_digest") else data["dataset_digest"]
    config, inputs = portable_config(data["config"])
    record = RunResult.from_dict({**data, "config": config,
                                  "inputs": {**(data.get("inputs") or {}), **inputs},
                                  "dataset_digest": digest})
    text = record.to_json()
    if text == path.read_text(encoding="utf-8"):
        return False
    write_atomic(path, text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--root", action="append", default=[], metavar="DATASET=PATH")
    args = parser.parse_args(argv)
    roots = dict(item.split("=", 1) for item in args.root)
    roots = {k: str(Path(v).resolve()) for k, v in roots.items()}
    memo: dict[str, str] = {}
    changed = 0
    for folder in args.folders:
        for path in sorted(folder.rglob("*.json")):
            changed += rewrite(path, roots, memo)
    print(f"rewrote {changed} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
