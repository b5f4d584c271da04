"""The HEST-1k reader on generated files in the Hugging Face layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixture_data import fixture_generator
from stbench.datasets.hest import HestConfig, HestDataset
from stbench.errors import ConfigError, DataError


gen = fixture_generator()


@pytest.fixture(scope="module")
def hest_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hest")
    truth = gen.make_hest(root)
    return root, truth


def test_reads_all_samples(hest_root):
    root, truth = hest_root
    ds = HestDataset(HestConfig(root=str(root)))
    slides = ds.load()
    assert [s.name for s in slides] == ["NCBI901", "TENX901", "TENX902"]
    for s in slides:
        t = truth[s.name]
        assert s.n_spots == t.n_spots and s.genes == t.genes
        assert s.microns_per_pixel == t.microns_per_pixel  # pixel_size_um_estimated
        assert s.image.size == t.image_size
        assert s.adata.X.dtype == np.int32  # float32 integer-valued counts accepted
        rec = s.adata.uns["stbench"]
        assert rec["mpp_source"] == "metadata pixel_size_um_estimated"
        assert rec["patches_file"].endswith(f"patches/{s.name}.h5")
        np.testing.assert_array_equal(s.adata.obsm["grid"][:, 0],
                                      np.tile(np.arange(5), 4))  # array_col
    by = {s.name: s for s in slides}
    assert by["TENX901"].patient == by["TENX902"].patient == "Demo bowel:Patient 1"
    assert by["NCBI901"].patient == "NCBI901"  # no patient in the metadata
    assert by["TENX901"].spot_diameter_um == 55.0 and by["NCBI901"].spot_diameter_um == 100.0


def test_select_by_ids_and_query(hest_root):
    root, _ = hest_root
    ids = [s.name for s in HestDataset(HestConfig(root=str(root), ids=["TENX902"])).load()]
    assert ids == ["TENX902"]
    assert HestDataset(HestConfig(root=str(root), organ="bowel")).selected_ids() == ["TENX901", "TENX902"]
    assert HestDataset(HestConfig(root=str(root), technology="Spatial Transcriptomics")
                       ).selected_ids() == ["NCBI901"]
    with pytest.raises(ConfigError, match="no HEST sample matches") as err:
        HestDataset(HestConfig(root=str(root), organ="Liver")).selected_ids()
    assert "Bowel" in err.value.fix
    with pytest.raises(ConfigError, match="NOPE"):
        HestDataset(HestConfig(root=str(root), ids=["NOPE"])).load()


def test_pixel_size_override_and_missing(tmp_path):
    truth = gen.make_hest(tmp_path, samples=[{"id": "S1", "organ": "Brain", "st_technology": "Visium"}])
    (s,) = HestDataset(HestConfig(root=str(tmp_path), microns_per_pixel=1.5)).load()
    assert s.microns_per_pixel == 1.5
    meta = truth["S1"].files["metadata"]
    data = json.loads(meta.read_text())
    data.pop("pixel_size_um_estimated")
    meta.write_text(json.dumps(data))
    (s,) = HestDataset(HestConfig(root=str(tmp_path))).load()
    assert s.adata.uns["stbench"]["mpp_source"] == "metadata pixel_size_um_embedded"
    data.pop("pixel_size_um_embedded")
    meta.write_text(json.dumps(data))
    with pytest.raises(DataError, match="gives no pixel size") as err:
        HestDataset(HestConfig(root=str(tmp_path))).load()
    assert str(meta) in err.value.one_line()


def test_normalised_counts_are_refused(tmp_path):
    import anndata as ad

    truth = gen.make_hest(tmp_path, samples=[{"id": "S1", "organ": "Brain", "st_technology": "Visium"}])
    path = truth["S1"].files["st"]
    a = ad.read_h5ad(path)
    a.X = np.log1p(a.X.toarray())
    a.write_h5ad(path)
    with pytest.raises(DataError, match="non-integer values") as err:
        HestDataset(HestConfig(root=str(tmp_path))).load()
    assert str(path) in err.value.one_line()


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="hest data folder not found"):
        HestDataset(HestConfig(root=str(tmp_path / "none"))).load()
    truth = gen.make_hest(tmp_path, samples=[{"id": "S1", "organ": "Brain", "st_technology": "Visium"}])
    truth["S1"].files["wsi"].unlink()
    with pytest.raises(DataError, match="image file not found"):
        HestDataset(HestConfig(root=str(tmp_path))).load()
    gen.write_tiff(truth["S1"].files["wsi"], 50, 50, 0)  # far too small for the spots
    with pytest.raises(DataError, match="lie outside the 50 x 50 image"):
        HestDataset(HestConfig(root=str(tmp_path))).load()
    truth["S1"].files["metadata"].write_text("{not json")
    with pytest.raises(DataError, match="cannot parse metadata JSON"):
        HestDataset(HestConfig(root=str(tmp_path))).load()
