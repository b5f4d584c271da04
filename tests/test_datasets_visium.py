"""The Visium reader: a generated Space Ranger 1.0.0 folder (``make_visium``, checked against
its truth; edge cases are edits of it) and the real Space Ranger 1.0.0 fixture of
``$STBENCH_SHARED`` (100 spots x 100 genes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from stbench.datasets._readers import DataWarning
from stbench.datasets.visium import VisiumConfig, VisiumDataset, read_10x_h5
from stbench.errors import ConfigError, DataError

from fixture_data import fixture_generator

gen = fixture_generator()


@pytest.fixture
def fixture_dir(shared_dir):
    return shared_dir / "data" / "fixtures" / "visium_1.0.0"


@pytest.fixture
def sample(tmp_path):
    """A generated Space Ranger 1.0.0 output folder ``tmp_path/sample1`` and its truth."""
    return gen.make_visium(tmp_path / "sample1")


@pytest.fixture
def copy(sample):
    return sample.files["matrix"].parent


def _as_float_data(h5: Path) -> None:
    """Store ``matrix/data`` as float64 (as some exporters do) so a cell can be made 1.5."""
    with h5py.File(h5, "r+") as f:
        data = f["matrix/data"][:].astype(np.float64)
        del f["matrix/data"]
        f["matrix/data"] = data


def test_reads_generated_space_ranger_1_output(sample):
    (s,) = VisiumDataset(VisiumConfig(root=str(sample.files["matrix"].parent))).load()
    assert s.name == "sample1" and s.patient == "sample1"
    assert list(s.adata.obs_names) == sample.barcodes and s.genes == sample.genes
    assert s.adata.X.dtype == np.int32
    np.testing.assert_array_equal(s.adata.X.toarray(), sample.counts)
    scale = sample.scalefactors["tissue_hires_scalef"]
    assert s.image.size == sample.image_sizes["hires"]
    assert s.microns_per_pixel == pytest.approx(sample.microns_per_pixel / scale)
    np.testing.assert_allclose(s.adata.obsm["spatial"], sample.xy_fullres * scale)
    np.testing.assert_array_equal(s.adata.obsm["grid"], sample.grid)
    assert s.spot_diameter_um == 55.0
    assert s.adata.uns["stbench"]["not_in_tissue_dropped"] == 0
    assert len(sample.barcodes) < sample.n_positions  # off-tissue positions are ignored


def test_generated_lowres_gene_ids_and_off_tissue(sample):
    root = str(sample.files["matrix"].parent)
    barcodes, genes, m = read_10x_h5(sample.files["matrix"])
    assert barcodes == sample.barcodes and genes == sample.genes
    np.testing.assert_array_equal(m.toarray(), sample.counts)
    (s,) = VisiumDataset(VisiumConfig(root=root, image_res="lowres")).load()
    scale = sample.scalefactors["tissue_lowres_scalef"]
    assert s.image.size == sample.image_sizes["lowres"]
    assert s.microns_per_pixel == pytest.approx(sample.microns_per_pixel / scale)
    (ids,) = VisiumDataset(VisiumConfig(root=root, gene_ids=True, patch_um=0)).load()
    assert ids.genes == sample.gene_ids
    pos = sample.files["positions"]
    first = sample.barcodes[0]
    pos.write_text("".join(ln.replace(f"{first},1,", f"{first},0,") + "\n"
                           for ln in pos.read_text().splitlines()))
    (s,) = VisiumDataset(VisiumConfig(root=root)).load()
    assert first not in s.adata.obs_names and s.adata.uns["stbench"]["not_in_tissue_dropped"] == 1
    (every,) = VisiumDataset(VisiumConfig(root=root, in_tissue_only=False)).load()
    assert every.n_spots == len(sample.barcodes)


@pytest.mark.real_data
def test_reads_space_ranger_1_output(fixture_dir):
    ds = VisiumDataset(VisiumConfig(root=str(fixture_dir)))
    (s,) = ds.load()
    assert s.name == "visium_1.0.0" and s.patient == "visium_1.0.0"
    assert s.n_spots == 100 and s.adata.n_vars == 100
    assert s.adata.X.dtype == np.int32 and s.adata.X.sum() > 0
    sf = json.loads((fixture_dir / "spatial" / "scalefactors_json.json").read_text())
    # hires image, coordinates scaled by tissue_hires_scalef; 55 um / spot diameter in hires px
    assert s.image.size == (2000, 2000)
    assert s.microns_per_pixel == pytest.approx(55 / (sf["spot_diameter_fullres"] * sf["tissue_hires_scalef"]))
    xy = s.adata.obsm["spatial"]
    assert (xy > 0).all() and (xy < 2000).all()
    assert s.spot_diameter_um == 55.0
    assert s.adata.obsm["grid"].shape == (100, 2)
    assert s.adata.obs_names[0].endswith("-1")


@pytest.mark.real_data
def test_h5_matches_positions_and_lowres(fixture_dir):
    barcodes, genes, m = read_10x_h5(fixture_dir / "filtered_feature_bc_matrix.h5")
    assert len(barcodes) == 100 and len(genes) == 100 and m.shape == (100, 100)
    (s,) = VisiumDataset(VisiumConfig(root=str(fixture_dir), image_res="lowres")).load()
    assert s.image.size == (600, 600)
    (ids,) = VisiumDataset(VisiumConfig(root=str(fixture_dir), gene_ids=True, patch_um=0)).load()
    assert all(g.startswith("ENSG") for g in ids.genes)


def test_space_ranger_2_positions_and_folder_of_sections(copy, tmp_path):
    spatial = copy / "spatial"
    old = spatial / "tissue_positions_list.csv"
    (spatial / "tissue_positions.csv").write_text(
        "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n" + old.read_text())
    old.unlink()
    shutil.copytree(copy, tmp_path / "sample2")
    slides = VisiumDataset(VisiumConfig(root=str(tmp_path))).load()
    assert [s.name for s in slides] == ["sample1", "sample2"]
    assert all(s.n_spots == 48 for s in slides)


def test_repeated_gene_symbols_are_summed(copy):
    h5 = copy / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        names = f["matrix/features/name"][:]
        names[1] = names[0]
        f["matrix/features/name"][...] = names
    with pytest.warns(DataWarning, match="summed 1 repeated gene symbol"):
        (s,) = VisiumDataset(VisiumConfig(root=str(copy))).load()
    assert s.adata.n_vars == 15 and s.adata.uns["stbench"]["summed_duplicate_genes"] == 1


def test_barcodes_without_positions(copy):
    pos = copy / "spatial" / "tissue_positions_list.csv"
    _, genes, _ = read_10x_h5(copy / "filtered_feature_bc_matrix.h5")
    with h5py.File(copy / "filtered_feature_bc_matrix.h5", "r") as f:
        first = f["matrix/barcodes"][0].decode()
    pos.write_text("\n".join(ln for ln in pos.read_text().splitlines() if not ln.startswith(first)) + "\n")
    with pytest.raises(DataError, match=r"1 matrix barcode\(s\) have no spot position") as err:
        VisiumDataset(VisiumConfig(root=str(copy))).load()
    assert str(pos) in err.value.one_line()


def test_bad_input(copy, tmp_path):
    with pytest.raises(ConfigError, match="dataset.root"):
        VisiumDataset(VisiumConfig()).load()
    with pytest.raises(DataError, match="no Space Ranger output"):
        VisiumDataset(VisiumConfig(root=str(tmp_path / "sample1" / "spatial"))).load()
    h5 = copy / "filtered_feature_bc_matrix.h5"
    _as_float_data(h5)
    with h5py.File(h5, "r+") as f:
        data = f["matrix/data"][:]
        data[0] = 1.5
        f["matrix/data"][...] = data
    with pytest.raises(DataError, match="not integers") as err:
        VisiumDataset(VisiumConfig(root=str(copy))).load()
    assert str(h5) in err.value.one_line()
    h5.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read the 10x matrix"):
        VisiumDataset(VisiumConfig(root=str(copy))).load()
