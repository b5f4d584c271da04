"""The her2st reader: the real five shared sections, a generated subset, and bad input."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixture_data import fixture_generator
from stbench.data import FileImage
from stbench.datasets._readers import DataWarning
from stbench.datasets.her2st import Her2stConfig, Her2stDataset
from stbench.errors import ConfigError, DataError

EXPECTED = {"B4": 283, "C2": 187, "C3": 180, "C4": 184, "C5": 181}


gen = fixture_generator()


def _one_line(err: pytest.ExceptionInfo) -> str:
    line = err.value.one_line()
    assert "\n" not in line and "fix:" in line
    return line


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(shared_dir):
    ds = Her2stDataset(Her2stConfig(root=str(shared_dir / "data" / "her2st")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the real sections lose no spot
        slides = ds.load()
    return ds, slides


@pytest.mark.real_data
def test_real_sections_and_spot_counts(real):
    ds, slides = real
    assert {s.name: s.n_spots for s in slides} == EXPECTED
    assert [s.name for s in slides] == sorted(EXPECTED)
    assert {s.name: s.patient for s in slides} == {"B4": "B", "C2": "C", "C3": "C", "C4": "C",
                                                  "C5": "C"}
    assert ds.dropped_border == {k: 0 for k in EXPECTED}


@pytest.mark.real_data
def test_real_slides_are_well_formed(real):
    _, slides = real
    for s in slides:
        a = s.adata
        assert 15000 < a.n_vars < 16000
        assert a.X.dtype == np.int32 and a.X.sum() > 0
        assert a.obsm["spatial"].shape == (s.n_spots, 2)
        assert a.obsm["grid"].dtype.kind == "i"
        # spot ids are "XxY" = the grid (col, row)
        for sid, (c, r) in zip(a.obs_names[:20], a.obsm["grid"][:20]):
            assert sid == f"{c}x{r}"
        w, h = s.image.size
        assert 9000 < w < 9500 and 9800 < h < 10000
        xy = a.obsm["spatial"]
        assert (xy >= 0).all() and (xy[:, 0] < w).all() and (xy[:, 1] < h).all()
        # ~290 px pitch for 200 um: ~0.69 um/px (derived, not hard-coded)
        assert 0.68 < s.microns_per_pixel < 0.70
        assert s.spot_diameter_um == 100.0
        assert a.uns["stbench"]["mpp_source"].startswith("grid fit")
        assert isinstance(s.image, FileImage) and s.image.path.suffix == ".jpg"


@pytest.mark.real_data
def test_real_literature_panel_from_shared_layout(real):
    ds, slides = real
    panel = ds.literature_panel()
    assert len(panel) == 785 and len(set(panel)) == 785
    common = set.intersection(*(set(s.genes) for s in slides))
    assert sum(g in common for g in panel) > 700


@pytest.mark.real_data
def test_real_section_selection(shared_dir):
    ds = Her2stDataset(Her2stConfig(root=str(shared_dir / "data" / "her2st"), sections=["C3"]))
    (s,) = ds.load()
    assert s.name == "C3" and s.n_spots == 180
    bad = Her2stDataset(Her2stConfig(root=str(shared_dir / "data" / "her2st"), sections=["Z9"]))
    with pytest.raises(ConfigError, match="Z9"):
        bad.load()


@pytest.mark.real_data
def test_hydra_config_composes_her2st(shared_dir):
    from omegaconf import OmegaConf
    from stbench.run.config import compose
    from stbench.plugins import DATASETS

    cfg = compose(["dataset=her2st", f"dataset.root={shared_dir / 'data' / 'her2st'}",
                   "dataset.sections=[C2]", "dataset.patch_um=150"])
    ds = DATASETS.get("her2st")(OmegaConf.to_object(cfg.dataset))
    assert ds.config.patch_um == 150.0 and ds.card.default_split == "lopo"
    assert [s.n_spots for s in ds.load()] == [187]


# --------------------------------------------------------------------------------------------
# Generated subset in the published layout
# --------------------------------------------------------------------------------------------


@pytest.fixture
def gen_root(tmp_path):
    root = tmp_path / "her2st"
    truth = gen.make_her2st(root, sections=("A1", "A2", "B1"), panel=gen.GENES[:6])
    return root, truth


def test_generated_subset(gen_root):
    root, truth = gen_root
    ds = Her2stDataset(Her2stConfig(root=str(root)))
    slides = ds.load()
    assert [s.name for s in slides] == ["A1", "A2", "B1"]
    for s in slides:
        t = truth[s.name]
        assert s.patient == t.patient
        assert sorted(s.adata.obs_names) == sorted(t.spot_ids)  # unselected spots dropped
        assert s.adata.uns["stbench"]["unselected_dropped"] == len(t.unselected)
        order = [t.spot_ids.index(i) for i in s.adata.obs_names]
        np.testing.assert_array_equal(s.adata.X.toarray(), t.counts[order])
        np.testing.assert_allclose(s.adata.obsm["spatial"], t.pixel_xy[order], atol=0.01)
        assert s.microns_per_pixel == pytest.approx(t.microns_per_pixel, rel=0.01)
        assert s.image.size == t.image_size
    labels = slides[0].adata.obs["label"]
    assert set(labels) == {"invasive cancer", "connective tissue"}
    assert "label" not in slides[1].adata.obs
    assert ds.literature_panel() == gen.GENES[:6]


def test_panel_file_and_missing_panel(gen_root, tmp_path):
    root, _ = gen_root
    (root / "panels" / "her2st_785.txt").unlink()
    ds = Her2stDataset(Her2stConfig(root=str(root)))
    with pytest.raises(DataError) as err:
        ds.literature_panel()
    assert "stbench data download her2st" in _one_line(err) and "dataset.panel_file" in err.value.fix
    panel = tmp_path / "my_panel.txt"
    panel.write_text("# mine\nERBB2\n\nGRB7\n")
    ds = Her2stDataset(Her2stConfig(root=str(root), panel_file=str(panel)))
    assert ds.literature_panel() == ["ERBB2", "GRB7"]


def test_microns_per_pixel_override(gen_root):
    root, _ = gen_root
    (s,) = Her2stDataset(Her2stConfig(root=str(root), sections=["A2"], microns_per_pixel=2.5)).load()
    assert s.microns_per_pixel == 2.5 and s.adata.uns["stbench"]["mpp_source"] == "dataset.microns_per_pixel"


def test_border_spots_dropped_with_a_counted_warning(tmp_path):
    root = tmp_path / "her2st"
    t = gen.legacy_section_files(
        root / "ST-cnts" / "A1.tsv.gz", root / "ST-spotfiles" / "A1_selection.tsv",
        root / "ST-imgs" / "A" / "A1" / "a.jpg", name="A1", patient="A", seed=3,
        n_cols=6, n_rows=5, margin=6.0, n_unselected=0)
    ds = Her2stDataset(Her2stConfig(root=str(root)))
    with pytest.warns(DataWarning, match=r"dropped 18 of 30 spots whose 112 um patch"):
        (s,) = ds.load()
    # 112 um at 5 um/px = 22 px: centres closer than 11 px to the border are dropped
    assert s.n_spots == 12 and ds.dropped_border == {"A1": 18}
    assert s.adata.uns["stbench"]["dropped_border"] == 18
    assert len(t.spot_ids) == 30
    ds0 = Her2stDataset(Her2stConfig(root=str(root), patch_um=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert ds0.load()[0].n_spots == 30


# --------------------------------------------------------------------------------------------
# Bad input: one-line DataError naming the file and the fix
# --------------------------------------------------------------------------------------------


def _rewrite_counts(path: Path, edit) -> None:
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    lines = edit(lines)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


def _load(root, **kw):
    return Her2stDataset(Her2stConfig(root=str(root), **kw)).load()


def test_missing_root_and_files(tmp_path, gen_root):
    with pytest.raises(DataError, match="not found") as err:
        _load(tmp_path / "nope")
    assert "stbench data download her2st" in _one_line(err)
    root, _ = gen_root
    (root / "ST-spotfiles" / "A2_selection.tsv").unlink()
    with pytest.raises(DataError, match="spot file of section A2") as err:
        _load(root)
    assert "A2_selection.tsv" in _one_line(err)
    shutil.rmtree(root / "ST-imgs" / "B")
    with pytest.raises(DataError, match="image folder of section B1"):
        _load(root, sections=["B1"])


def test_count_rows_that_match_no_spot(gen_root):
    root, _ = gen_root
    path = root / "ST-cnts" / "A1.tsv.gz"
    _rewrite_counts(path, lambda ls: ls + ["99x99\t" + "\t".join(["1"] * len(gen.GENES))])
    with pytest.raises(DataError, match=r"1 count row\(s\) match no spot") as err:
        _load(root, sections=["A1"])
    assert str(path) in _one_line(err) and "unmatched_counts=drop" in err.value.fix
    (s,) = _load(root, sections=["A1"], unmatched_counts="drop")
    assert "99x99" not in s.adata.obs_names and s.adata.uns["stbench"]["unmatched_dropped"] == 1


@pytest.mark.parametrize("edit, needle", [
    (lambda ls: ls + [ls[1]], "duplicate spot ids"),
    (lambda ls: [ls[0].replace("GRB7", "ERBB2")] + ls[1:], "duplicate gene names"),
    (lambda ls: [ls[0]] + [ls[1].rsplit("\t", 1)[0] + "\tNaN"] + ls[2:], "NaN"),
    (lambda ls: [ls[0]] + [ls[1].rsplit("\t", 1)[0] + "\t-3"] + ls[2:], "negative"),
    (lambda ls: [ls[0]] + [ls[1].rsplit("\t", 1)[0] + "\t2.5"] + ls[2:], "not integers"),
    (lambda ls: [ls[0]] + [ls[1].rsplit("\t", 1)[0] + "\tabc"] + ls[2:], "non-numeric"),
])
def test_bad_counts(gen_root, edit, needle):
    root, _ = gen_root
    path = root / "ST-cnts" / "A2.tsv.gz"
    _rewrite_counts(path, edit)
    with pytest.raises(DataError, match=needle) as err:
        _load(root, sections=["A2"])
    assert str(path) in _one_line(err)


def test_duplicate_spots_in_spot_file(gen_root):
    root, _ = gen_root
    path = root / "ST-spotfiles" / "A2_selection.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[3]]) + "\n")
    with pytest.raises(DataError, match="duplicate spot ids") as err:
        _load(root, sections=["A2"])
    assert str(path) in _one_line(err)


def test_coordinates_outside_the_image(gen_root):
    root, _ = gen_root
    path = root / "ST-spotfiles" / "A2_selection.tsv"
    lines = path.read_text().splitlines()
    cells = lines[5].split("\t")
    cells[4] = "5000.0"  # pixel_x far beyond the 261 px wide image
    lines[5] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"1 spot centre\(s\) lie outside the 261 x 221 image") as err:
        _load(root, sections=["A2"], microns_per_pixel=5.0)
    assert str(path) in _one_line(err)


def test_truncated_and_corrupt_jpeg(gen_root):
    root, _ = gen_root
    img = next((root / "ST-imgs" / "A" / "A2").glob("*.jpg"))
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        _load(root, sections=["A2"])
    assert str(img) in _one_line(err)
    with pytest.raises(DataError, match="cannot decode image"):
        FileImage(img).read()
    img.write_bytes(b"\x00" * 200)
    with pytest.raises(DataError, match="cannot read image") as err:
        FileImage(img).size
    assert str(img) in _one_line(err)
    with pytest.raises(DataError, match="cannot read image"):
        _load(root, sections=["A2"])


def test_empty_gene_intersection(gen_root):
    root, _ = gen_root
    path = root / "ST-cnts" / "B1.tsv.gz"
    _rewrite_counts(path, lambda ls: ["\t" + "\t".join(f"ENSG{i:011d}" for i in range(len(gen.GENES)))]
                    + ls[1:])
    with pytest.raises(DataError, match="share no gene") as err:
        _load(root)
    _one_line(err)
    assert len(_load(root, sections=["A1", "A2"])) == 2


def test_section_with_too_few_spots(gen_root):
    root, _ = gen_root
    with pytest.raises(DataError, match=r"usable spot\(s\) \(< dataset.min_spots=50\)") as err:
        _load(root, sections=["A1"], min_spots=50)
    assert "dataset.sections" in _one_line(err)


def test_bad_option_value(gen_root):
    root, _ = gen_root
    with pytest.raises(ConfigError, match="unmatched_counts"):
        _load(root, sections=["A1"], unmatched_counts="ignore")
