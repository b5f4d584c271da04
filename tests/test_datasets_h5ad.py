"""The AnnData + image reader on squidpy's real test data and on generated files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from stbench.datasets._readers import DataWarning
from stbench.datasets.h5ad import H5adConfig, H5adDataset, reconstruct_counts
from stbench.errors import ConfigError, DataError


@pytest.fixture
def squidpy(shared_dir):
    return shared_dir / "data" / "fixtures" / "squidpy_mouse_brain"


@pytest.mark.real_data
def test_normalised_data_is_refused_by_default(squidpy):
    path = squidpy / "test_data.h5ad"
    with pytest.raises(DataError) as err:
        H5adDataset(H5adConfig(root=str(path), image="test_img.jpg")).load()
    line = err.value.one_line()
    assert "non-integer values" in line and "raw counts are needed" in line
    assert str(path) in line and "allow_normalised=true" in line and "\n" not in line


@pytest.mark.real_data
def test_allow_normalised_reconstructs_and_records(squidpy):
    ds = H5adDataset(H5adConfig(root=str(squidpy / "test_data.h5ad"), image="test_img.jpg",
                                allow_normalised=True))
    with pytest.warns(DataWarning, match="reconstructed"):
        (s,) = ds.load()
    assert s.name == "test_data" and s.n_spots == 49 and s.adata.n_vars == 1999
    x = s.adata.X
    assert x.dtype == np.int32 and x.data.min() >= 1
    assert s.adata.uns["stbench"]["counts_source"] == "reconstructed from log-normalised X"
    assert s.image.size == (950, 1717)
    # Visium pitch 100 um = 137 px in this crop
    assert s.microns_per_pixel == pytest.approx(100 / 137, rel=1e-3)
    # the reconstruction is consistent: renormalising gives back the stored values
    import anndata as ad

    a = ad.read_h5ad(squidpy / "test_data.h5ad")
    c = x.toarray().astype(float)
    ratio = np.expm1(a.X.toarray()) / np.where(c > 0, c, np.nan)
    row_spread = np.nanmax(ratio, 1) / np.nanmin(ratio, 1)
    assert np.allclose(row_spread, 1, atol=1e-3)


@pytest.mark.real_data
@pytest.mark.filterwarnings("ignore::stbench.datasets._readers.DataWarning")
def test_uns_image_that_does_not_match_the_coordinates(squidpy):
    with pytest.raises(DataError, match="lie outside the 100 x 100 image") as err:
        H5adDataset(H5adConfig(root=str(squidpy / "test_data.h5ad"), allow_normalised=True)).load()
    assert "uns['spatial']" in err.value.one_line()


@pytest.mark.real_data
def test_missing_layer(squidpy):
    with pytest.raises(ConfigError, match="no layer 'raw_counts'"):
        H5adDataset(H5adConfig(root=str(squidpy / "test_data.h5ad"), image="test_img.jpg",
                               counts_layer="raw_counts")).load()


def _write(tmp_path, counts, *, uns_image=True, name="s1", obs_names=None, genes=None):
    import anndata as ad
    import pandas as pd

    n = counts.shape[0]
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    xy = np.column_stack([300 + gx.ravel() * 200.0, 300 + gy.ravel() * 200.0])[:n]
    a = ad.AnnData(X=sp.csr_matrix(np.ones_like(counts, dtype=np.float32)),
                   obs=pd.DataFrame(index=obs_names or [f"b{i}" for i in range(n)]),
                   var=pd.DataFrame(index=genes or [f"G{j}" for j in range(counts.shape[1])]))
    a.layers["counts"] = sp.csr_matrix(counts)
    a.obsm["spatial"] = xy
    if uns_image:
        rng = np.random.default_rng(0)
        a.uns["spatial"] = {"lib1": {
            "images": {"hires": rng.uniform(0, 1, (300, 300, 3)).astype(np.float32)},
            "scalefactors": {"tissue_hires_scalef": 0.25, "spot_diameter_fullres": 110.0}}}
    path = tmp_path / f"{name}.h5ad"
    a.write_h5ad(path)
    return path


def test_missing_layer_generated(tmp_path):
    path = _write(tmp_path, np.random.default_rng(5).poisson(3, (16, 12)))
    with pytest.raises(ConfigError, match="no layer 'raw_counts'"):
        H5adDataset(H5adConfig(root=str(path), counts_layer="raw_counts")).load()


def test_counts_layer_and_uns_image(tmp_path):
    counts = np.random.default_rng(1).poisson(3, (16, 12)).astype(np.int64)
    path = _write(tmp_path, counts)
    (s,) = H5adDataset(H5adConfig(root=str(path), patient="PX")).load()
    np.testing.assert_array_equal(s.adata.X.toarray(), counts)
    assert s.patient == "PX" and s.image.size == (300, 300)
    assert s.adata.uns["stbench"]["counts_source"] == "layers['counts']"
    assert s.microns_per_pixel == pytest.approx(55 / (110 * 0.25))
    np.testing.assert_allclose(s.adata.obsm["spatial"][0], [75.0, 75.0])


def test_folder_of_files(tmp_path):
    counts = np.random.default_rng(2).poisson(3, (16, 12))
    _write(tmp_path, counts, name="a")
    _write(tmp_path, counts, name="b")
    ds = H5adDataset(H5adConfig(root=str(tmp_path)))
    assert [s.name for s in ds.load()] == ["a", "b"]
    with pytest.raises(ConfigError, match="several .h5ad"):
        H5adDataset(H5adConfig(root=str(tmp_path), image="x.jpg")).load()


@pytest.mark.parametrize("bad, needle", [(np.nan, "NaN"), (-2.0, "negative")])
def test_bad_counts(tmp_path, bad, needle):
    counts = np.random.default_rng(3).poisson(3, (16, 12)).astype(np.float32)
    counts[2, 3] = bad
    path = _write(tmp_path, counts)
    with pytest.raises(DataError, match=needle) as err:
        H5adDataset(H5adConfig(root=str(path))).load()
    assert str(path) in err.value.one_line()


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_names_and_no_image(tmp_path):
    counts = np.random.default_rng(4).poisson(3, (16, 12))
    path = _write(tmp_path, counts, genes=["G0"] * 2 + [f"G{j}" for j in range(2, 12)])
    with pytest.raises(DataError, match="duplicate gene names"):
        H5adDataset(H5adConfig(root=str(path))).load()
    path = _write(tmp_path, counts, uns_image=False, name="noimg")
    with pytest.raises(DataError, match="no image") as err:
        H5adDataset(H5adConfig(root=str(path))).load()
    assert "dataset.image" in err.value.fix
    with pytest.raises(DataError, match="AnnData file not found"):
        H5adDataset(H5adConfig(root=str(tmp_path / "missing.h5ad"))).load()


def test_reconstruction_refuses_other_transforms(tmp_path):
    scaled = sp.csr_matrix(np.array([[0.3, 1.7, 0.0], [2.2, 0.0, 0.9]]))
    with pytest.raises(DataError, match="not log1p"):
        reconstruct_counts(scaled, "x.h5ad")
    counts = np.array([[1, 4, 0], [2, 0, 1]], float)
    normed = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_array_equal(reconstruct_counts(sp.csr_matrix(normed), "x").toarray(), counts)
