"""Gene representations (issue 16): the registry, embedding tables, the GO embedding, missing
genes, the shuffled control, caching and the deprecated ``genes.text_encoder``."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stbench.cli.app import main
from stbench.errors import ConfigError, DataError
from stbench.features.cache import ArrayCache
from stbench.features.gene_tables import is_header, read_gene_table, write_gene_table
from stbench.features.representations import (
    GeneRepresentation,
    RepresentationOptions,
    cached_gene_table,
    go_table_path,
    make_representation,
    representation_name,
)
from stbench.method import Bundle, FitContext, GeneText
from stbench.plugins import METHODS, REPRESENTATIONS
from stbench.testing import TINY_GENES, subset, tiny_problem

SYMBOLS = ["ERBB2", "ESR1", "KRT5", "CD74"]
MATRIX = np.arange(12, dtype=np.float32).reshape(4, 3) / 7.0


def _table(tmp_path: Path, name: str, symbols=SYMBOLS, matrix=MATRIX) -> Path:
    return write_gene_table(tmp_path / name, list(symbols), np.asarray(matrix))


def _panel(tmp_path: Path, genes: list[str]) -> Path:
    path = tmp_path / "panel.txt"
    path.write_text("\n".join(genes) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# Registry and CLI listing
# ------------------------------------------------------------------------------------------


def test_registry_has_the_builtin_representations():
    assert {"minilm", "tfidf", "hf", "open_clip", "table", "go"} <= set(REPRESENTATIONS.list())
    assert REPRESENTATIONS.group == "stbench.representations"
    for name in ("minilm", "tfidf", "table", "go"):
        cls = REPRESENTATIONS.get(name)
        assert issubclass(cls, GeneRepresentation) and cls.name == name and cls.version
    assert REPRESENTATIONS.get("minilm").has_tokens and not REPRESENTATIONS.get("go").has_tokens


def test_list_representations(capsys):
    assert main(["list", "representations"]) == 0
    text = capsys.readouterr().out
    for name in ("minilm", "tfidf", "table", "go", "open_clip"):
        assert name in text


def test_third_party_representation_is_chosen_by_name():
    class Ones(GeneRepresentation):
        """Every gene is the same vector."""

        name = "ones_test"

        def digest(self) -> str:
            return "ones"

        def coverage(self, genes):
            return list(genes), []

        def build(self, genes):
            return GeneText({g: g for g in genes}, embed=lambda names: np.ones((len(names), 2)))

    REPRESENTATIONS.register("ones_test", Ones)
    try:
        rep = make_representation("ones_test")
        assert rep.build(["A", "B"]).embed(["B"]).shape == (1, 2)
        assert rep.record()["name"] == "ones_test" and rep.record()["digest"] == "ones"
    finally:
        REPRESENTATIONS._items.pop("ones_test", None)


def test_unknown_representation_and_missing_mode():
    with pytest.raises(Exception, match="unknown representation 'gpt'"):
        make_representation("gpt")
    with pytest.raises(ConfigError, match="genes.missing"):
        make_representation("tfidf", missing="ignore")
    with pytest.raises(ConfigError, match="genes.embeddings=PATH"):
        make_representation("table")


# ------------------------------------------------------------------------------------------
# Table formats
# ------------------------------------------------------------------------------------------


def _write_text(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _formats(tmp_path: Path) -> dict[str, Path]:
    rows = [[s, *(repr(float(v)) for v in row)] for s, row in zip(SYMBOLS, MATRIX)]
    import pandas as pd

    wide = pd.DataFrame(MATRIX, index=pd.Index(SYMBOLS, name="symbol"))
    lists = pd.DataFrame({"gene": SYMBOLS, "embedding": [list(map(float, r)) for r in MATRIX]})
    lists.to_parquet(tmp_path / "lists.parquet", index=False)
    wide.to_csv(tmp_path / "pandas.csv")  # header "symbol,0,1,2"
    return {
        "tsv": _table(tmp_path, "t.tsv"),
        "tsv_header": _write_text(tmp_path / "h.tsv", ["gene\td1\td2\td3"] + ["\t".join(r) for r in rows]),
        "csv": _table(tmp_path, "t.csv"),
        "csv_pandas_header": tmp_path / "pandas.csv",
        "tsv_gz": _table(tmp_path, "t.tsv.gz"),
        "npz": _table(tmp_path, "t.npz"),
        "parquet": _table(tmp_path, "t.parquet"),
        "parquet_lists": tmp_path / "lists.parquet",
    }


def test_every_table_format_reads_the_same(tmp_path):
    for kind, path in _formats(tmp_path).items():
        table = read_gene_table(path)
        assert table.symbols.tolist() == SYMBOLS, kind
        np.testing.assert_allclose(table.embeddings, MATRIX, rtol=1e-6, err_msg=kind)
        assert table.embeddings.dtype == np.float32 and len(table.digest) == 64


def test_header_detection():
    assert is_header(["symbol", "a", "b"]) and is_header(["", "0", "1"])
    assert is_header(["gene", "1.0", "2.0"]) and is_header(["X", "dim1", "dim2"])
    assert is_header(["X", *map(str, range(10))]) and not is_header(["ERBB2", "0.5", "1"])
    assert not is_header(["ERBB2", "3", "7"]) and not is_header(["ERBB2", "1", "2"])


def _bad_tables(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(case, file, the row named in the message)."""
    import pandas as pd

    t = tmp_path
    good = ["ERBB2\t0.1\t0.2", "ESR1\t0.3\t0.4"]
    cases = [
        ("nan", _write_text(t / "nan.tsv", [*good, "KRT5\tnan\t0.1"]), "line 3"),
        ("inf", _write_text(t / "inf.tsv", [*good, "KRT5\t0.1\tinf"]), "line 3"),
        ("overflow", _write_text(t / "big.tsv", [*good, "KRT5\t1e40\t1"]), "line 3"),
        ("duplicate", _write_text(t / "dup.tsv", [*good, "ERBB2\t0.5\t0.6"]), "line 3"),
        ("ragged_short", _write_text(t / "short.tsv", [*good, "KRT5\t0.5"]), "line 3"),
        ("ragged_long", _write_text(t / "long.csv", ["ERBB2,1,2", "ESR1,3,4,5"]), "line 2"),
        ("non_numeric", _write_text(t / "word.tsv", ["symbol\ta\tb", *good, "KRT5\t0.5\thigh"]),
         "line 4"),
        ("empty_cell", _write_text(t / "hole.csv", ["ERBB2,1,2", "ESR1,,4"]), "line 2"),
        ("empty_file", _write_text(t / "empty.tsv", [""]), "line 1"),
        ("header_only", _write_text(t / "head.tsv", ["symbol\ta\tb"]), "line 1"),
        ("no_dims", _write_text(t / "nodims.tsv", ["ERBB2", "ESR1"]), "line 1"),
    ]
    np.savez(t / "nan.npz", symbols=np.array(["A", "B"]), embeddings=np.array([[1.0], [np.nan]]))
    np.savez(t / "dup.npz", symbols=np.array(["A", "A"]), embeddings=np.ones((2, 2)))
    np.savez(t / "empty.npz", symbols=np.array([], dtype=str), embeddings=np.ones((0, 2)))
    np.savez(t / "len.npz", symbols=np.array(["A", "B", "C"]), embeddings=np.ones((2, 2)))
    np.savez(t / "obj.npz", symbols=np.array(["A", "B"], dtype=object), embeddings=np.ones((2, 2)))
    np.savez(t / "text.npz", symbols=np.array(["A", "B"]), embeddings=np.array([["x"], ["y"]]))
    cases += [("npz_nan", t / "nan.npz", "row 2"), ("npz_duplicate", t / "dup.npz", "row 2"),
              ("npz_empty", t / "empty.npz", "row 1"), ("npz_ragged", t / "len.npz", "row 3"),
              ("npz_pickle", t / "obj.npz", "obj.npz"), ("npz_non_numeric", t / "text.npz", "row 1")]
    pd.DataFrame({"s": ["A", "B", "C"], "x": ["1", "2", "oops"]}).to_parquet(t / "word.parquet")
    pd.DataFrame({"s": ["A", "B"], "x": [1.0, None]}).to_parquet(t / "null.parquet")
    pd.DataFrame({"s": ["A", "B"], "v": [[1.0, 2.0], [1.0]]}).to_parquet(t / "ragged.parquet")
    pd.DataFrame({"s": ["A", "B"], "x": [1.0, np.inf]}).to_parquet(t / "inf.parquet")
    (t / "genept.pickle").write_bytes(b"\x80\x04K\x01.")
    cases += [("parquet_non_numeric", t / "word.parquet", "row 3"),
              ("parquet_null", t / "null.parquet", "row 2"),
              ("parquet_ragged", t / "ragged.parquet", "row 2"),
              ("parquet_inf", t / "inf.parquet", "row 2"),
              ("pickle", t / "genept.pickle", "never unpickles")]
    return cases


def test_every_bad_table_exits_2_with_one_line_naming_file_and_row(tmp_path, capsys):
    panel = _panel(tmp_path, ["ERBB2"])
    for case, path, row in _bad_tables(tmp_path):
        code = main(["genes", "coverage", str(panel), "--representation", "table",
                     "--embeddings", str(path)])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (case, err)
        assert len(lines) == 1, (case, err)
        assert path.name in lines[0] and row in lines[0], (case, lines[0])
        assert "Traceback" not in err


@pytest.mark.integration
def test_bad_table_stops_a_run_before_any_work(tmp_path):
    bad = _write_text(tmp_path / "bad.tsv", ["ERBB2\t1\t2", "ERBB2\t3\t4"])
    proc = subprocess.run(
        [sys.executable, "-m", "stbench", "run", "--method", "bilinear", "--dataset", "demo",
         "genes.representation=table", f"genes.embeddings={bad}", "--json", "out.json",
         "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.tsv, line 2" in lines[0] and "duplicate" in lines[0]
    assert not (tmp_path / "out.json").exists()


# ------------------------------------------------------------------------------------------
# Missing genes, GO coverage
# ------------------------------------------------------------------------------------------


def test_missing_panel_genes_error_names_count_and_first_few(tmp_path):
    path = _table(tmp_path, "t.npz")
    rep = make_representation("table", RepresentationOptions(embeddings=str(path)))
    panel = SYMBOLS + [f"NOPE{i}" for i in range(8)]
    with pytest.raises(DataError) as err:
        rep.select_panel(panel)
    line = err.value.one_line()
    assert "8 of 12 panel genes" in line and "NOPE0, NOPE1" in line and "and 3 more" in line
    assert "genes.missing=drop" in line and "t.npz" in line
    drop = make_representation("table", RepresentationOptions(embeddings=str(path)), "drop")
    assert drop.select_panel(panel) == SYMBOLS
    assert drop.record()["n_dropped"] == 8


def test_table_symbols_resolve_through_aliases(tmp_path):
    path = _table(tmp_path, "alias.tsv", symbols=["HER2", "ESR1"], matrix=np.eye(2))
    rep = make_representation("table", RepresentationOptions(embeddings=str(path)))
    covered, missing = rep.coverage(["ERBB2", "ESR1", "NOPE"])
    assert covered == ["ERBB2", "ESR1"] and missing == ["NOPE"]
    np.testing.assert_allclose(rep.build(["ERBB2"]).embed(["ERBB2"]), [[1.0, 0.0]])


def test_go_table_is_compact_and_readable_without_pickle():
    path = go_table_path()
    assert path.is_file() and path.stat().st_size < 10_000_000
    with np.load(path, allow_pickle=False) as z:
        assert z["embeddings"].dtype == np.float16 and z["embeddings"].shape[1] == 256
        assert len(z["symbols"]) > 15_000
    rep = make_representation("go")
    vectors = rep.build(["ERBB2", "EGFR", "CD3E"]).embed(["ERBB2", "EGFR", "CD3E"])
    assert vectors.shape == (3, 256) and np.isfinite(vectors).all()
    cos = vectors @ vectors.T / np.outer(*(2 * [np.linalg.norm(vectors, axis=1)]))
    assert cos[0, 1] > cos[0, 2]  # two receptor tyrosine kinases beat a T-cell receptor chain


def test_go_coverage_cli(tmp_path, capsys):
    panel = _panel(tmp_path, ["ERBB2", "KRT5", "NOTAGENE1"])
    assert main(["genes", "coverage", str(panel), "--representation", "go"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["missing: NOTAGENE1", "coverage (go): 2/3 (66.7%)"]


@pytest.mark.parametrize("name", ["her2st_785.txt", "cscc_171.txt"])
def test_go_covers_the_literature_panels(shared_dir, name, capsys):
    panel = shared_dir / "data" / "panels" / name
    assert main(["genes", "coverage", str(panel), "--representation", "go"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    n, m = map(int, re.search(r"(\d+)/(\d+)", last).groups())
    assert n / m > 0.95, last


# ------------------------------------------------------------------------------------------
# Methods over every representation; the shuffled control
# ------------------------------------------------------------------------------------------


def _tiny_table_text(tmp_path: Path, genes: list[str], name: str = "table") -> GeneText:
    """A pooled-only GeneText over ``genes`` from a table file (or the GO table)."""
    if name == "go":
        return make_representation("go").build(genes)
    rng = np.random.default_rng(0)
    path = _table(tmp_path, "tiny.npz", symbols=genes, matrix=rng.normal(size=(len(genes), 8)))
    return make_representation("table", RepresentationOptions(embeddings=str(path))).build(genes)


@pytest.mark.parametrize("name", ["table", "go"])
def test_shuffled_control_permutes_table_and_go(tmp_path, name):
    from stbench.methods.shuffled_text import shuffled_gene_text

    genes = list(TINY_GENES)
    base = _tiny_table_text(tmp_path, genes, name)
    shuffled, mapping = shuffled_gene_text(base, seed=3)
    assert all(mapping[g] != g for g in genes) and sorted(mapping.values()) == sorted(genes)
    np.testing.assert_array_equal(shuffled.embed(genes), base.embed([mapping[g] for g in genes]))
    with pytest.raises(RuntimeError):  # pooled only: methods fall back to one token per gene
        shuffled.token_states(genes[:2])


ZERO_SHOT_TEXT = [n for n in ("bilinear", "textknn", "genequery", "sgn", "alignst")
                  if n in METHODS.list()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ZERO_SHOT_TEXT)
def test_every_zero_shot_method_takes_a_pooled_only_representation(tmp_path, method):
    problem = tiny_problem(0)
    genes = problem["genes"]
    gene_text = _tiny_table_text(tmp_path, genes)
    unseen = genes[::4]
    seen = [g for g in genes if g not in set(unseen)]
    val_genes, fit = seen[::5], [g for g in seen if g not in set(seen[::5])]
    views = problem["slides"]
    train = Bundle(subset(views[:-2], genes, fit), fit)
    val = Bundle(subset(views[-2:-1], genes, val_genes), val_genes)
    test = Bundle(subset(views[-1:], genes, None), [])
    cls = METHODS.get(method)
    model = cls(cls.Config())
    model.fit(train, val, FitContext(seed=0, gene_text=gene_text, val_genes=val_genes))
    pred = np.asarray(model.predict(test, unseen))
    assert pred.shape == (test.n_spots, len(unseen)) and np.isfinite(pred).all()


# ------------------------------------------------------------------------------------------
# Caching, deprecation, the result record
# ------------------------------------------------------------------------------------------


def test_table_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    path = _table(tmp_path, "t.tsv")
    cache = ArrayCache(tmp_path / "cache")
    first = cached_gene_table(path, cache)
    assert cache.misses == 2 and cache.hits == 0

    def boom(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr("stbench.features.representations.read_gene_table", boom)
    again = cached_gene_table(path, cache)
    assert cache.hits == 2
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    assert again.symbols.tolist() == SYMBOLS and again.digest == first.digest
    path.write_text(path.read_text().replace("ERBB2", "EGFR"))  # new content: parsed again
    with pytest.raises(AssertionError, match="parsed again"):
        cached_gene_table(path, cache)


def test_tfidf_vectors_are_cached_per_panel(tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    options = RepresentationOptions(cache=cache)
    one = make_representation("tfidf", options).build(SYMBOLS).embed(SYMBOLS)
    assert cache.misses == 1
    two = make_representation("tfidf", options).build(SYMBOLS).embed(SYMBOLS)
    assert cache.hits == 1
    np.testing.assert_array_equal(one, two)


def test_text_encoder_key_is_deprecated_but_works(capsys):
    from types import SimpleNamespace

    assert representation_name(SimpleNamespace(representation="minilm", text_encoder="tfidf")) == "tfidf"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: genes.text_encoder is deprecated; use genes.representation=tfidf"]
    assert representation_name(SimpleNamespace(representation="go", text_encoder=None)) == "go"
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="contradicts"):
        representation_name(SimpleNamespace(representation="go", text_encoder="tfidf"))


@pytest.mark.slow
def test_run_with_dropped_genes_records_the_representation(tiny_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    from stbench.run.runner import run
    from stbench.run.tracking import store_uri

    kept = [g for g in TINY_GENES if g not in ("VWF", "LYZ")]
    rng = np.random.default_rng(1)
    path = _table(tmp_path, "emb.csv", symbols=kept, matrix=rng.normal(size=(len(kept), 6)))
    base = ("method=bilinear", "split=loso", "genes.n_unseen=6", "genes.representation=table",
            f"genes.embeddings={path}")
    with pytest.raises(DataError, match="2 of 24 panel genes"):
        run(tiny_cfg(*base), progress=False)
    result = run(tiny_cfg(*base, "genes.missing=drop"), progress=False)
    rec = result["representation"]
    assert rec["name"] == "table" and rec["n_dropped"] == 2 and rec["dropped"] == ["LYZ", "VWF"]
    assert rec["digest"] and rec["version"] == "1" and rec["dim"] == 6
    assert result["genes"]["n_panel"] == 22
    assert not {"VWF", "LYZ"} & set(result["genes"]["unseen"] + result["genes"]["seen"])
    client = MlflowClient(store_uri(tmp_path / "runs"))
    params = client.get_run(result["mlflow"]["run_id"]).data.params
    assert params["representation.name"] == "table"
    assert params["representation.digest"] == rec["digest"]
    json.dumps(result["representation"])


def test_shuffled_text_runs_over_go(tiny_cfg):
    from stbench.run.runner import run

    result = run(tiny_cfg("method=shuffled_text", "method.inner=bilinear", "split=loso",
                          "genes.n_unseen=6", "genes.representation=go",
                          "tracking.enabled=false"), progress=False)
    assert result["representation"]["name"] == "go"
    assert np.isfinite(result["metrics"]["pcc_mean"])


def test_bench_representations_tiny(tmp_path, capsys):
    from stbench.perf import bench_representations

    out = tmp_path / "rep.json"
    assert bench_representations.main(["--genes", "300", "--dims", "4", "--panel", "50",
                                       "--repeats", "1", "--json", str(out)]) == 0
    assert "warm" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert set(r["formats"]) == {"npz", "parquet", "tsv", "csv"}
    for fmt in r["formats"].values():
        assert fmt["cold_wall_s"] >= 0 and fmt["warm_wall_s"] >= 0 and fmt["pass_warm"]
    assert r["go"]["panel"] == 50
