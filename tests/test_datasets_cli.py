"""``stbench data info`` / ``stbench data download`` (the typer sub-app in stbench.cli.data)."""

from __future__ import annotations

import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixture_data import fixture_generator
from stbench.io import download as dl
from stbench.cli.data import app
from stbench.errors import ConfigError, DataError
from typer.testing import CliRunner


gen = fixture_generator()
runner = CliRunner()


@pytest.mark.real_data
def test_info_her2st_lists_the_five_sections(shared_dir):
    res = runner.invoke(app, ["info", "her2st", f"dataset.root={shared_dir / 'data' / 'her2st'}"],
                        terminal_width=160)
    assert res.exit_code == 0, res.output
    out = res.output
    for sec, n in {"B4": 283, "C2": 187, "C3": 180, "C4": 184, "C5": 181}.items():
        line = next(ln for ln in out.splitlines() if f" {sec} " in ln)
        assert f" {n} " in line and "0.68" in line
    assert "patients: 2 (B, C); spots: 1015" in out
    assert "literature panel: 785 genes" in out and "default split: lopo" in out


def test_info_generated_cscc_and_bad_overrides(tmp_path):
    gen.make_cscc(tmp_path)
    res = runner.invoke(app, ["info", "cscc", f"dataset.root={tmp_path}",
                              "dataset.sections=[P2_ST_rep1]"], terminal_width=160)
    assert res.exit_code == 0, res.output
    assert "P2_ST_rep1" in res.output and "P10_ST_rep1" not in res.output
    assert "literature panel: unavailable" in res.output
    res = runner.invoke(app, ["info", "cscc", "dataset.bogus=1"])
    assert isinstance(res.exception, ConfigError) and "dataset.bogus" in str(res.exception)
    res = runner.invoke(app, ["info", "cscc", f"dataset.root={tmp_path / 'none'}"])
    assert isinstance(res.exception, DataError)
    res = runner.invoke(app, ["info", "cscc", "oops"])
    assert "key=value" in str(res.exception)


def test_info_shows_warnings(tmp_path):
    root = tmp_path / "her2st"
    gen.legacy_section_files(root / "ST-cnts" / "A1.tsv.gz", root / "ST-spotfiles" / "A1_selection.tsv",
                             root / "ST-imgs" / "A" / "A1" / "a.jpg", name="A1", patient="A",
                             seed=3, margin=6.0, n_unselected=0)
    res = runner.invoke(app, ["info", "her2st", f"dataset.root={root}"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "warning: section A1: dropped 18 of 30 spots" in res.output


def test_download_command_with_a_local_mirror(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    src = tmp_path / "src"
    gen.make_cscc(src, sections=("P2_ST_rep1",))
    with tarfile.open(site / "GSE_RAW.tar", "w") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
    (site / "panel.txt").write_text("KRT5\n")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(site), **kw)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        mirror = dl.Manifest(name="cscc", source="local mirror", files=(
            dl.RemoteFile(url=f"{url}/GSE_RAW.tar", filename="GSE_RAW.tar", kind="archive",
                          members=("*_stdata.tsv*", "*spot_data*", "*.jpg")),
            dl.RemoteFile(url=f"{url}/panel.txt", filename="panel.txt", target="panels/cscc_171.txt"),
        ))
        monkeypatch.setitem(dl.MANIFESTS, "cscc", mirror)
        root = tmp_path / "data"
        res = runner.invoke(app, ["download", "cscc", "--root", str(root), "--no-progress"])
        assert res.exit_code == 0, res.output
        assert (root / "GSM4284316_P2_ST_rep1_stdata.tsv.gz").is_file()
        assert (root / dl.LOCK_NAME).is_file()
        res = runner.invoke(app, ["info", "cscc", f"dataset.root={root}"], terminal_width=160)
        assert res.exit_code == 0, res.output
        assert "literature panel: 1 genes" in res.output
    finally:
        httpd.shutdown()
        httpd.server_close()
