"""The generated leaderboard page, loaded from disk in a real headless Chromium.

Needs Debian's Chromium (``apt-get install -y chromium``; ``.ci/run`` installs it). Where it is
absent the tests skip, except under ``STBENCH_REQUIRE_REAL_DATA=1`` (CI), where they fail: the
page is the product.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services import dump_dom

from stbench.report.leaderboard import fmt_stat, make_leaderboard

RESULTS = Path(__file__).parent / "data" / "results"


class Board(HTMLParser):
    """Rows of ``<table id="leaderboard">``: method, kind, config and data-metric cells."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.table: dict[str, str] = {}
        self.images: list[str] = []
        self._in_table = False
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("id", ""))
        if tag == "table" and a.get("id") == "leaderboard":
            self._in_table, self.table = True, a
        if not self._in_table:
            return
        if tag == "tr" and "board-row" in (a.get("class") or "").split():
            self.rows.append({"method": a["data-method"], "kind": a["data-kind"],
                              "config": a["data-config"], "text": {}})
        if tag == "td" and self.rows and "data-metric" in a:
            self.rows[-1][a["data-metric"]] = a.get("data-value")
            self._cell = a["data-metric"]
            self.rows[-1]["text"][self._cell] = ""

    def handle_data(self, data):
        if self._cell:
            self.rows[-1]["text"][self._cell] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "table":
            self._in_table = False


def parse(html: str) -> Board:
    p = Board()
    p.feed(html)
    return p


def test_board_page_in_chromium_shows_the_aggregated_board(tmp_path, chromium):
    board, paths = make_leaderboard("demo", [RESULTS], tmp_path / "site", recorded=False)
    dom = parse(dump_dom(paths["html"].resolve().as_uri()))
    assert dom.table.get("data-dataset") == "demo"
    assert [r["method"] for r in dom.rows] == ["bilinear", "mean_expression", "ridge"]
    assert [r["kind"] for r in dom.rows] == ["zero_shot", "control", "supervised"]
    assert [r.method for r in board.rows] == [r["method"] for r in dom.rows]
    for row, parsed in zip(board.rows, dom.rows):
        stat = row.metrics["pcc_mean"]
        assert float(parsed["pcc_mean"]) == pytest.approx(stat.mean, rel=1e-9)
        assert parsed["text"]["pcc_mean"].strip() == fmt_stat(stat)
        # the recorded per-fold numbers, averaged by hand over folds x seeds
        units = [f["metrics"]["pcc_mean"]
                 for p in sorted(RESULTS.glob(f"{row.method}_s*.json"))
                 for f in json.loads(p.read_text())["folds"]]
        assert float(parsed["pcc_mean"]) == pytest.approx(sum(units) / len(units), rel=1e-9)
    assert {"plot-bars", "plot-box", "plot-hist"} <= set(dom.images)


def test_index_lists_the_boards_and_a_screenshot_of_the_board(tmp_path, chromium):
    site = tmp_path / "site"
    make_leaderboard("demo", [RESULTS], site / "demo-lopo", recorded=False, plots=False)
    _, paths = make_leaderboard("demo", [RESULTS], site, recorded=False)
    index = dump_dom(paths["index"].resolve().as_uri().replace("index.html", "") + "index.html")
    assert 'href="demo.html"' in index and 'href="demo-lopo/demo.html"' in index
    assert 'id="leaderboard"' not in index
    shot = tmp_path / "board.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1600,2400",
                           "--hide-scrollbars", f"--screenshot={shot}",
                           paths["html"].resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_sort_script_runs_in_chromium(tmp_path, chromium):
    src = tmp_path / "results"
    src.mkdir()
    for p in RESULTS.glob("*.json"):
        shutil.copy(p, src / p.name)
    for seed in (0, 1):  # a second, worse bilinear configuration
        d = json.loads((RESULTS / f"bilinear_s{seed}.json").read_text())
        d["config"]["method"]["lam"] = 10.0
        for f in d["folds"]:
            f["metrics"]["pcc_mean"] -= 0.1
        (src / f"bilinear_lam10_s{seed}.json").write_text(json.dumps(d))
    board, paths = make_leaderboard("demo", [src], tmp_path / "site", recorded=False, plots=False)
    zero_shot = [r for r in board.rows if r.kind == "zero_shot"]
    assert len(zero_shot) == 2 and zero_shot[0].metrics["pcc_mean"].mean > zero_shot[1].metrics[
        "pcc_mean"].mean
    url = paths["html"].resolve().as_uri()

    plain = parse(dump_dom(url))
    assert [r["config"] for r in plain.rows if r["kind"] == "zero_shot"] == [
        r.config_hash for r in zero_shot]
    assert "data-sorted-by" not in plain.table

    ascending = parse(dump_dom(url + "#sort=pcc_mean:asc"))
    assert ascending.table.get("data-sorted-by") == "pcc_mean"
    assert [r["config"] for r in ascending.rows if r["kind"] == "zero_shot"] == [
        r.config_hash for r in reversed(zero_shot)]
    # sorting stays within the kind groups
    assert [r["kind"] for r in ascending.rows] == [r["kind"] for r in plain.rows]
