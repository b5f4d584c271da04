"""The panel setting has one rule (``protocol.preprocess.panel_source``), and ``genes.panel=file``
stands alone: a her2st root without any literature panel runs and precomputes features."""

from __future__ import annotations

import json

import pytest

from fixture_data import fixture_generator
from stbench.cli.app import main
from stbench.errors import ConfigError
from stbench.protocol.preprocess import panel_source


class _Genes:
    def __init__(self, panel: str, panel_file: str | None = None) -> None:
        self.panel, self.panel_file = panel, panel_file


class _Dataset:
    def __init__(self, literature: list[str] | None) -> None:
        self.literature, self.calls = literature, 0

    def literature_panel(self) -> list[str] | None:
        self.calls += 1
        if self.literature is None:
            raise ConfigError("the literature panel was not found")
        return self.literature


def test_file_panel_never_loads_the_literature_panel(tmp_path):
    path = tmp_path / "panel.txt"
    path.write_text("ERBB2\nGRB7\n")
    ds = _Dataset(None)
    source = panel_source(_Genes("file", str(path)), ds)
    assert (source.kind, source.panel_file_genes, ds.calls) == ("file", ["ERBB2", "GRB7"], 0)


@pytest.mark.parametrize("kind", ["hvg", "all"])
def test_data_driven_panels_never_load_the_literature_panel(kind):
    ds = _Dataset(None)
    assert panel_source(_Genes(kind), ds).kind == kind and ds.calls == 0


def test_default_is_the_literature_panel_when_the_dataset_has_one():
    assert panel_source(_Genes("default"), _Dataset(["A", "B"])).literature == ["A", "B"]


def test_file_panel_without_a_file_is_a_config_error():
    with pytest.raises(ConfigError, match="genes.panel_file"):
        panel_source(_Genes("file"), _Dataset(["A"]))


@pytest.fixture
def her2st_without_panel(tmp_path):
    gen = fixture_generator()
    root = tmp_path / "her2st"
    gen.make_her2st(root, sections=("A1", "A2", "B1"), panel=None)
    assert not (root / "panels").exists()
    panel = tmp_path / "my_panel.txt"
    panel.write_text("\n".join(gen.GENES[:8]) + "\n")
    return root, panel


@pytest.mark.integration
def test_run_with_a_panel_file_on_a_root_without_literature_panel(her2st_without_panel, in_tmp, capsys):
    root, panel = her2st_without_panel
    code = main(["run", "--method", "mean_expression", "--dataset", "her2st", f"dataset.root={root}",
                 "genes.panel=file", f"genes.panel_file={panel}", "genes.split=none",
                 "tracking.enabled=false", "--json", "out.json", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((in_tmp / "out.json").read_text())
    assert result["genes"]["panel"] == "file"
    assert set(result["genes"]["seen"]) <= set(panel.read_text().split())


@pytest.mark.integration
def test_features_with_a_panel_file_on_a_root_without_literature_panel(her2st_without_panel, in_tmp, capsys):
    root, panel = her2st_without_panel
    code = main(["features", "--dataset", "her2st", f"dataset.root={root}", "genes.panel=file",
                 f"genes.panel_file={panel}", "genes.representation=tfidf", "--kinds", "gene_text",
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "file panel of" in out.out
