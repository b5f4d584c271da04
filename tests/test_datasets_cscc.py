"""The cscc reader on generated files in the GEO GSE144240 layout."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from fixture_data import fixture_generator
from stbench.datasets.cscc import CsccConfig, CsccDataset, parse_section
from stbench.errors import ConfigError, DataError


gen = fixture_generator()


@pytest.mark.parametrize("gz", [True, False])
def test_reads_geo_layout(tmp_path, gz):
    truth = gen.make_cscc(tmp_path, gz=gz)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "GSM4284316_P2_ST_rep1_stdata.tsv" + (".gz" if gz else "") in names
    assert "GSM4284316_spot_data-selection-P2_ST_rep1.tsv" + (".gz" if gz else "") in names
    ds = CsccDataset(CsccConfig(root=str(tmp_path)))
    slides = ds.load()
    assert [s.name for s in slides] == ["P10_ST_rep1", "P2_ST_rep1", "P2_ST_rep2"]
    assert {s.name: s.patient for s in slides} == {"P10_ST_rep1": "P10", "P2_ST_rep1": "P2",
                                                  "P2_ST_rep2": "P2"}
    for s in slides:
        t = truth[s.name]
        assert sorted(s.adata.obs_names) == sorted(t.spot_ids)
        rec = s.adata.uns["stbench"]
        assert rec["unmatched_dropped"] == len(t.extra_rows) == 3  # rows outside the selection
        assert rec["replicate"] == s.name.split("_")[-1]
        order = [t.spot_ids.index(i) for i in s.adata.obs_names]
        np.testing.assert_array_equal(s.adata.X.toarray(), t.counts[order])
        assert s.microns_per_pixel == pytest.approx(200 / 40, rel=0.01)
        assert s.spot_diameter_um == 100.0
    assert ds.card.default_split == "lopo"


def test_section_names_and_patients():
    assert parse_section("P10_ST_rep3") == ("P10", "rep3")
    assert parse_section("P2_ST_rep1") == ("P2", "rep1")


@pytest.mark.real_data
def test_literature_panel(tmp_path, shared_dir):
    gen.make_cscc(tmp_path / "geo")
    panel = shared_dir / "data" / "panels" / "cscc_171.txt"
    ds = CsccDataset(CsccConfig(root=str(tmp_path / "geo"), panel_file=str(panel)))
    genes = ds.literature_panel()
    assert len(genes) == 171 and len(set(genes)) == 171
    with pytest.raises(DataError, match="stbench data download cscc"):
        CsccDataset(CsccConfig(root=str(tmp_path / "geo"))).literature_panel()
    (tmp_path / "panels").mkdir()
    (tmp_path / "panels" / "cscc_171.txt").write_text("KRT5\nKRT14\n")
    assert CsccDataset(CsccConfig(root=str(tmp_path / "geo"))).literature_panel() == ["KRT5", "KRT14"]


def test_select_sections_and_unknown(tmp_path):
    gen.make_cscc(tmp_path)
    (s,) = CsccDataset(CsccConfig(root=str(tmp_path), sections=["P2_ST_rep2"])).load()
    assert s.name == "P2_ST_rep2"
    with pytest.raises(ConfigError, match="P9_ST_rep1"):
        CsccDataset(CsccConfig(root=str(tmp_path), sections=["P9_ST_rep1"])).load()


def test_unmatched_rows_can_be_refused(tmp_path):
    gen.make_cscc(tmp_path, sections=("P2_ST_rep1",))
    with pytest.raises(DataError, match=r"3 count row\(s\) match no spot") as err:
        CsccDataset(CsccConfig(root=str(tmp_path), unmatched_counts="error")).load()
    assert "P2_ST_rep1_stdata.tsv.gz" in err.value.one_line()


def test_gzipped_image_needs_gunzip(tmp_path):
    gen.make_cscc(tmp_path, sections=("P2_ST_rep1",))
    img = tmp_path / "GSM4284316_P2_ST_rep1.jpg"
    with gzip.open(str(img) + ".gz", "wb") as fh:
        fh.write(img.read_bytes())
    img.unlink()
    with pytest.raises(DataError, match="still gzip-compressed") as err:
        CsccDataset(CsccConfig(root=str(tmp_path))).load()
    assert "gunzip" in err.value.fix


def test_missing_and_ambiguous_files(tmp_path):
    with pytest.raises(DataError, match="no count file"):
        CsccDataset(CsccConfig(root=str(tmp_path))).load()
    gen.make_cscc(tmp_path, sections=("P2_ST_rep1",))
    spot = tmp_path / "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz"
    spot.rename(tmp_path / "elsewhere.tsv.gz")
    with pytest.raises(DataError, match="spot file of P2_ST_rep1 not found"):
        CsccDataset(CsccConfig(root=str(tmp_path))).load()
    (tmp_path / "elsewhere.tsv.gz").rename(spot)
    (tmp_path / "copy_P2_ST_rep1.jpg").write_bytes((tmp_path / "GSM4284316_P2_ST_rep1.jpg").read_bytes())
    with pytest.raises(DataError, match="2 files match the H&E image of P2_ST_rep1"):
        CsccDataset(CsccConfig(root=str(tmp_path))).load()


def test_patient_prefixes_do_not_collide(tmp_path):
    gen.make_cscc(tmp_path, sections=("P1_ST_rep1", "P11_ST_rep1"))
    slides = CsccDataset(CsccConfig(root=str(tmp_path))).load()
    assert sorted(s.name for s in slides) == ["P11_ST_rep1", "P1_ST_rep1"]
    assert sorted(s.patient for s in slides) == ["P1", "P11"]
