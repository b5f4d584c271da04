"""Safety, static and behavioural.

Static (``ast`` scan of benchmark/, methods/, datasets/): every ``np.load`` passes
``allow_pickle=False``, every ``torch.load`` passes ``weights_only=True``, nothing unpickles
(``pickle.load(s)``, ``pd.read_pickle``, ``joblib.load``, ``dill``, ``shelve``, ``marshal``,
``yaml.load`` without a safe loader) except the one restricted unpickler of
``stbench.io.download.read_npy_strings`` that refuses every global but NumPy's array rebuilders.

Behavioural: archive extraction refuses what tests/test_download.py does not already cover
(absolute and ``..`` zip members, Windows paths, zip symlinks, symlink chains that escape
through an earlier link, device members); ``stbench ui`` binds 127.0.0.1 unless ``--host`` is
given. Downloads are verified by SHA-256 in tests/test_download.py
(``test_download_verifies_sha256``, ``test_sha_mismatch_removes_the_file``,
``test_download_dataset_records_digests_and_verifies_later``); the last test here only makes
sure they stay.
"""

from __future__ import annotations

import ast
import io
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from stbench.io.download import safe_extract
from stbench.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("benchmark", "methods", "datasets")


def _sources() -> list[Path]:
    files = sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 30
    return files


def _dotted(node: ast.AST) -> str:
    """``np.load`` -> "np.load"; anything else -> ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> module for ``import numpy as np`` and ``from torch import load``."""
    out = {"np": "numpy", "pd": "pandas"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


UNPICKLERS = {"pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "dill.load",
              "dill.loads", "joblib.load", "pandas.read_pickle", "shelve.open", "marshal.load",
              "marshal.loads", "yaml.unsafe_load", "yaml.full_load", "cloudpickle.load",
              "cloudpickle.loads", "torch.serialization.load"}


def _findings() -> list[str]:
    problems = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        alias = _aliases(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if not name:
                continue
            head, _, rest = name.partition(".")
            full = alias.get(head, head) + (f".{rest}" if rest else "")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if full == "numpy.load" and _keyword(node, "allow_pickle") is not False:
                problems.append(f"{where}: np.load without allow_pickle=False")
            elif full == "torch.load" and _keyword(node, "weights_only") is not True:
                problems.append(f"{where}: torch.load without weights_only=True")
            elif full == "yaml.load" and "Safe" not in ast.unparse(node):
                problems.append(f"{where}: yaml.load without a SafeLoader")
            elif full in UNPICKLERS:
                problems.append(f"{where}: {full} unpickles arbitrary objects")
    return problems


def test_no_unsafe_deserialisation_in_the_sources():
    assert _findings() == []


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    bad = tmp_path / "benchmark" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import numpy as np\nimport torch\nimport pickle\nfrom torch import load\n"
                   "np.load('a.npy')\nnp.load('a.npy', allow_pickle=True)\n"
                   "torch.load('w.pt')\nload('w.pt', weights_only=False)\n"
                   "pickle.loads(b'')\nnp.load('ok.npy', allow_pickle=False)\n"
                   "torch.load('ok.pt', weights_only=True)\n")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "_sources", lambda: [bad])
    found = _findings()
    assert [f.split(": ", 1)[0] for f in found] == [f"benchmark/bad.py:{n}" for n in (5, 6, 7, 8, 9)]


def test_the_only_unpickler_is_restricted():
    """``read_npy_strings`` subclasses pickle.Unpickler and overrides find_class."""
    subclasses = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b)
                                                      for b in node.bases):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                subclasses.append((path.name, node.name, "find_class" in methods))
    assert subclasses == [("download.py", "_Restricted", True)]


# --------------------------------------------------------------------------------------------
# Archive extraction (what tests/test_download.py does not cover yet)
# --------------------------------------------------------------------------------------------


def _tar(path: Path, members) -> Path:
    """members: (name, kind in file|dir|sym|chr, data or link target)."""
    with tarfile.open(path, "w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            if kind == "sym":
                info.linkname = payload
            tar.addfile(info)
    return path


def _zip(path: Path, members) -> Path:
    """members: (name, data, is_symlink)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, link in members:
            info = zipfile.ZipInfo(name)
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


def _outside(tmp: Path, target: Path) -> list[Path]:
    """Files and links under ``tmp`` but outside ``target`` other than the archive."""
    return [p for p in tmp.rglob("*") if target not in p.parents and p != target
            and p.suffix not in (".tar", ".zip")]


def _escaping_links(target: Path) -> list[Path]:
    root = target.resolve()
    return [p for p in target.rglob("*") if p.is_symlink()
            and root not in p.resolve().parents and p.resolve() != root]


@pytest.mark.parametrize("members, needle", [
    ([("ok/a.txt", b"ok", False), ("/abs/evil.txt", b"x", False)], "absolute path"),
    ([("C:/Windows/evil.txt", b"x", False)], "absolute path"),
    ([("a\\..\\..\\evil.txt", b"x", False)], "'..'"),
    ([("a/link", b"../../outside", True)], "links outside"),
    ([("a/link", b"/etc/passwd", True)], "links outside"),
], ids=["zip-absolute", "zip-drive-letter", "zip-backslash-dotdot", "zip-symlink-relative",
        "zip-symlink-absolute"])
def test_unsafe_zip_members_are_refused(tmp_path, members, needle):
    archive = _zip(tmp_path / "bad.zip", members)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=needle):
        safe_extract(archive, target)
    assert _outside(tmp_path, target) == []
    assert not target.exists() or not any(target.rglob("*")), "nothing written before refusal"


def test_tar_symlink_chain_cannot_escape(tmp_path):
    """Each link looks inside on its own, but the second is created through the first."""
    archive = _tar(tmp_path / "chain.tar", [
        ("top/d", "dir", None),
        ("top/d/up", "sym", ".."),            # top/d/up -> top (inside)
        ("top/d/up/esc", "sym", "../.."),     # created as top/esc -> ../.. = outside
        ("top/d/up/esc/evil.txt", "file", b"x"),
    ])
    target = tmp_path / "target" / "out"
    with pytest.raises(DataError, match="outside"):
        safe_extract(archive, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "target" / "evil.txt").exists()
    assert _escaping_links(target) == [], "no link pointing outside is left behind"


def test_tar_device_member_is_refused(tmp_path):
    archive = _tar(tmp_path / "dev.tar", [("top/ok.txt", "file", b"ok"), ("top/null", "chr", None)])
    with pytest.raises(DataError, match="device"):
        safe_extract(archive, tmp_path / "out")


# --------------------------------------------------------------------------------------------
# stbench ui binds to loopback; downloads are checksummed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, host", [([], "127.0.0.1"), (["--host", "0.0.0.0"], "0.0.0.0")])
def test_ui_binds_loopback_unless_told(tmp_path, monkeypatch, capsys, extra, host):
    from stbench.cli.app import main

    (tmp_path / "mlflow.db").write_bytes(b"")
    calls = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: calls.append(argv))
    assert main(["ui", "--dir", str(tmp_path), *extra]) == 0
    (argv,) = calls
    assert argv[argv.index("--host") + 1] == host
    out = capsys.readouterr().out
    assert "http://127.0.0.1:5000" in out  # the address to open in a browser
    assert (f"bound to {host}:5000" in out) == (host != "127.0.0.1")


def test_download_checksum_tests_exist():
    import test_download

    for name in ("test_download_verifies_sha256", "test_sha_mismatch_removes_the_file",
                 "test_download_dataset_records_digests_and_verifies_later",
                 "test_unsafe_tar_is_refused", "test_unsafe_zip_is_refused",
                 "test_npy_with_code_is_refused"):
        assert callable(getattr(test_download, name, None)), name
