"""Any AnnData file with spot coordinates and an H&E image (scverse conventions).

``dataset.root`` is one ``.h5ad`` file or a folder of them (one section per file, named by
the file stem). Each needs:

* spot centres in ``obsm['spatial']`` (x, y) in pixels of its image;
* an image: ``dataset.image`` (a file; relative paths are taken from the h5ad's folder; only
  with a single file) or a file with the same stem next to the h5ad (``.jpg``, ``.png``,
  ``.tif``), else the ``uns['spatial'][library_id]['images'][dataset.image_key]`` array, with
  the coordinates scaled by ``scalefactors['tissue_<key>_scalef']``;
* raw counts in ``layers[dataset.counts_layer]``, else ``layers['counts']``, else ``X``, else
  ``raw.X``. Normalised values are refused unless ``dataset.allow_normalised=true``: counts
  are then reconstructed from ``log1p(normalize_total(counts))`` values (``expm1``, then each
  spot scaled so its smallest non-zero value is 1 and rounded; refused if the result is not
  close to integers), a warning is issued and ``uns['stbench']['counts_source']`` records it.

Microns per pixel: ``dataset.microns_per_pixel``; else, for an ``uns`` image with
``spot_diameter_fullres``, ``spot_diameter_um / (spot_diameter_fullres * scalef)``; else the
median nearest-neighbour spot distance taken as ``dataset.pitch_um`` (100 um for Visium).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import scipy.sparse as sp
from stbench.data import ArrayImage, Dataset, DatasetCard, DatasetConfig, ImageSource, Slide
from stbench.datasets import _readers as readers
from stbench.errors import ConfigError, DataError
from stbench.ranges import bounded

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass
class H5adConfig(DatasetConfig):
    """Settings of the AnnData reader.

    Attributes:
        root: An ``.h5ad`` file or a folder of them.
        sections: File stems to read (all when empty).
        image: The H&E image of a single file (its pixels are the ``obsm['spatial']`` units).
        image_key: ``uns['spatial']`` image to use when no image file is given.
        library_id: ``uns['spatial']`` library (the only one when unset).
        counts_layer: Layer holding the raw counts (default: ``counts`` if present, else X).
        allow_normalised: Reconstruct counts from log-normalised values (recorded).
        microns_per_pixel: Pixel size of the image (default: derived, see module doc).
        pitch_um: Spot centre-to-centre distance used to derive the pixel size.
        spot_diameter_um: Physical spot diameter (55 um Visium).
        patient: Patient of every section (default: the section name).
        in_tissue_only: Keep only ``obs['in_tissue'] == 1`` spots when that column exists.
        patch_um: Spots whose square patch of this side crosses the image border are dropped.
        min_spots: Fewer usable spots in a section is an error.
    """

    image: Optional[str] = None
    image_key: str = "hires"
    library_id: Optional[str] = None
    counts_layer: Optional[str] = None
    allow_normalised: bool = False
    microns_per_pixel: Optional[float] = bounded(None, "> 0")
    pitch_um: float = bounded(100.0, "> 0")
    spot_diameter_um: float = bounded(55.0, "> 0")
    patient: Optional[str] = None
    in_tissue_only: bool = True
    patch_um: float = bounded(112.0, "> 0")
    min_spots: int = bounded(10, ">= 1")


# --------------------------------------------------------------------------------------------
# Helpers shared with the HEST reader
# --------------------------------------------------------------------------------------------


def read_anndata(path: Path):
    """``anndata.read_h5ad`` with a DataError for missing or corrupt files."""
    import anndata as ad

    readers.require_file(path, "AnnData file", "check dataset.root")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types for bad files
        raise DataError(f"cannot read AnnData file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})", where=str(path),
                        fix="re-download or re-write the .h5ad file") from exc


def _is_integer(matrix) -> bool:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0 or values.dtype.kind in "iub":
        return True
    if values.dtype.kind != "f" or not np.isfinite(values).all():
        return False
    return bool(np.all(np.abs(values - np.round(values)) <= 1e-6))


def reconstruct_counts(matrix, where: str | Path) -> sp.csr_matrix:
    """Integer counts from ``log1p(normalize_total(counts))`` values.

    Per spot, ``expm1`` undoes ``log1p``; the smallest non-zero value is then a count of 1
    (true whenever the spot has a gene with a single read), so dividing by it and rounding
    gives the counts. Refused (DataError) when the values are not close to integers after
    that (other transforms: scaling, z-scores, SCTransform...).
    """
    m = sp.csr_matrix(matrix, dtype=np.float64)
    if m.data.size and (not np.isfinite(m.data).all() or (m.data < 0).any()):
        raise DataError("cannot reconstruct counts from negative or non-finite values "
                        "(scaled data?)", where=str(where),
                        fix="provide raw counts (dataset.counts_layer=...)")
    if m.data.size and m.data.max() > 30:
        raise DataError("values too large to be log1p-normalised expression", where=str(where),
                        fix="provide raw counts (dataset.counts_layer=...)")
    m.data = np.expm1(m.data)
    out = m.copy()
    worst = 0.0
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        row = m.data[lo:hi]
        nz = row[row > 0]
        if nz.size == 0:
            continue
        q = row / nz.min()
        worst = max(worst, float(np.max(np.abs(q - np.round(q)))))
        out.data[lo:hi] = np.round(q)
    if worst > 0.05:
        raise DataError(f"the values are not log1p(normalize_total(counts)): reconstructed counts "
                        f"deviate from integers by up to {worst:.2f}", where=str(where),
                        fix="provide raw counts (dataset.counts_layer=...)")
    return readers.to_count_matrix(out)


def counts_of(adata, layer: str | None, allow_normalised: bool, where: str | Path
              ) -> tuple[sp.csr_matrix, list[str], str]:
    """(counts, gene names, where the counts came from) of an AnnData.

    Raises:
        DataError: Missing layer, NaN/negative values, or non-integer values without
            ``allow_normalised``.
    """
    if layer:
        if layer not in adata.layers:
            raise ConfigError(f"no layer {layer!r} in the AnnData (layers: {list(adata.layers)})",
                              where=str(where), fix="set dataset.counts_layer to an existing layer")
        matrix, source, genes = adata.layers[layer], f"layers['{layer}']", list(adata.var_names)
    elif "counts" in adata.layers:
        matrix, source, genes = adata.layers["counts"], "layers['counts']", list(adata.var_names)
    elif _is_integer(adata.X) or adata.raw is None:
        matrix, source, genes = adata.X, "X", list(adata.var_names)
    else:
        matrix, source, genes = adata.raw.X, "raw.X", list(adata.raw.var_names)
    if matrix is None:
        raise DataError("the AnnData holds no expression matrix", where=str(where),
                        fix="write raw counts into X or layers['counts']")
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.dtype.kind == "f" and values.size and (not np.isfinite(values).all()):
        raise DataError(f"{source} contains NaN or infinite values", where=str(where),
                        fix="provide raw integer counts")
    if values.size and values.dtype.kind in "fi" and (values < 0).any():
        raise DataError(f"{source} contains negative values (scaled data?)", where=str(where),
                        fix="provide raw integer counts (dataset.counts_layer=...)")
    if _is_integer(matrix):
        readers.check_counts(matrix, where)
        return readers.to_count_matrix(matrix), genes, source
    if not allow_normalised:
        raise DataError(
            f"{source} holds non-integer values (normalised expression?) but raw counts are "
            "needed", where=str(where),
            fix="point dataset.counts_layer at raw counts, or set dataset.allow_normalised=true "
                "to reconstruct counts from log1p-normalised values (recorded in the result)")
    counts = reconstruct_counts(matrix, where)
    warnings.warn(f"{where}: {source} is normalised; counts were reconstructed from "
                  "log1p(normalize_total) values (dataset.allow_normalised=true)",
                  readers.DataWarning, stacklevel=3)
    return counts, genes, f"reconstructed from log-normalised {source}"


def spatial_of(adata, where: str | Path) -> np.ndarray:
    if "spatial" not in adata.obsm:
        raise DataError("the AnnData has no obsm['spatial'] spot coordinates", where=str(where),
                        fix="store spot centres (x, y) in pixels in obsm['spatial']")
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise DataError(f"obsm['spatial'] has shape {xy.shape}, expected (n_spots, 2)",
                        where=str(where), fix="store spot centres (x, y) in obsm['spatial']")
    return xy[:, :2]


def grid_of(adata, xy: np.ndarray) -> np.ndarray:
    """(col, row) array coordinates: ``obs[array_col, array_row]`` or a grid from the pitch."""
    obs = adata.obs
    if "array_col" in obs.columns and "array_row" in obs.columns:
        g = np.column_stack([np.asarray(obs["array_col"]), np.asarray(obs["array_row"])])
        if np.isfinite(g.astype(np.float64)).all():
            return g.astype(np.int64)
    if len(xy) < 2:
        return np.zeros((len(xy), 2), np.int64)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    pitch = float(np.median(d[:, 1])) or 1.0
    return np.round((xy - xy.min(axis=0)) / pitch).astype(np.int64)


def image_array(raw: np.ndarray, where: str) -> ArrayImage:
    a = np.asarray(raw)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"uns image has shape {a.shape}, expected (H, W, 3)", where=where,
                        fix="store an RGB image or pass dataset.image")
    a = a[:, :, :3]
    if a.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(a)) <= 1.0 + 1e-6 else 1.0
        a = np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return ArrayImage(np.ascontiguousarray(a))


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


class H5adDataset(Dataset):
    """Sections from AnnData files (scverse / squidpy conventions)."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="h5ad",
        version="user data",
        url="https://anndata.readthedocs.io (format); your own files",
        licence="that of your data",
        citation="your data's citation (set it in your report)",
        platform="any spot-based platform (Visium by default: 55 um spots, 100 um pitch)",
        n_patients=0,
        default_split="loso",
        panel="none (genes.panel=hvg|all|file)",
        description="Generic reader: .h5ad files with obsm['spatial'] and an image.",
    )
    Config: ClassVar[type] = H5adConfig

    def __init__(self, config: H5adConfig | None = None) -> None:
        super().__init__(config)
        self.report: dict[str, dict] = {}

    def _files(self) -> list[Path]:
        root = getattr(self.config, "root", None)
        if not root:
            raise ConfigError("the h5ad dataset needs dataset.root=FILE.h5ad (or a folder of them)",
                              fix="pass dataset.root=PATH")
        path = Path(root).expanduser()
        if path.is_file():
            return [path]
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".h5ad" and p.is_file())
            if files:
                return files
            raise DataError("no .h5ad file in the folder", where=str(path),
                            fix="point dataset.root at an .h5ad file or a folder of them")
        raise DataError("AnnData file not found", where=str(path), fix="check dataset.root")

    def load(self) -> list[Slide]:
        cfg = self.config
        files = self._files()
        by_name = {p.stem: p for p in files}
        names = readers.select_names(list(by_name), list(cfg.sections or []), "dataset.sections")
        if cfg.image and len(names) > 1:
            raise ConfigError("dataset.image names one image but several .h5ad files are read",
                              fix="select one with dataset.sections=[NAME] or put an image "
                                  "with the same stem next to each file")
        slides = [self._load_one(name, by_name[name]) for name in names]
        return readers.finish(slides, Path(cfg.root))

    def _image_for(self, path: Path, adata, xy: np.ndarray
                   ) -> tuple[ImageSource, str, np.ndarray, float | None, str]:
        """(image, where, coordinates in its pixels, microns per pixel or None, how)."""
        cfg = self.config
        if cfg.image:
            img_path = Path(cfg.image).expanduser()
            if not img_path.is_absolute() and not img_path.exists():
                img_path = path.parent / img_path
            return readers.file_image(img_path), str(img_path), xy, None, "image file"
        for suffix in _IMAGE_SUFFIXES:
            cand = path.with_suffix(suffix)
            if cand.is_file():
                return readers.file_image(cand), str(cand), xy, None, "image file"
        spatial = adata.uns.get("spatial") if hasattr(adata, "uns") else None
        if not spatial:
            raise DataError("no image: neither dataset.image, an image file with the same "
                            "name, nor uns['spatial'] images", where=str(path),
                            fix="pass dataset.image=PATH (the image obsm['spatial'] refers to)")
        libs = list(spatial)
        lib = cfg.library_id or (libs[0] if len(libs) == 1 else None)
        if lib is None or lib not in spatial:
            raise ConfigError(f"choose the uns['spatial'] library: {libs}", where=str(path),
                              fix="set dataset.library_id")
        entry = spatial[lib]
        images = entry.get("images", {}) or {}
        key = cfg.image_key if cfg.image_key in images else next(
            (k for k in ("hires", "lowres") if k in images), None)
        if key is None:
            raise DataError(f"uns['spatial'][{lib!r}] holds no image", where=str(path),
                            fix="pass dataset.image=PATH")
        sf = entry.get("scalefactors", {}) or {}
        scale = float(sf.get(f"tissue_{key}_scalef", 1.0))
        where = f"{path}:uns['spatial'][{lib!r}]['images'][{key!r}]"
        mpp = None
        if sf.get("spot_diameter_fullres"):
            mpp = cfg.spot_diameter_um / (float(sf["spot_diameter_fullres"]) * scale)
        return (image_array(images[key], where), where, xy * scale, mpp,
                f"scalefactors (spot_diameter_fullres, tissue_{key}_scalef)")

    def _load_one(self, name: str, path: Path) -> Slide:
        cfg = self.config
        adata = read_anndata(path)
        if cfg.in_tissue_only and "in_tissue" in adata.obs.columns:
            adata = adata[np.asarray(adata.obs["in_tissue"]).astype(int) == 1]
        readers.check_unique(list(adata.obs_names), "spot ids (obs_names)", path,
                            "make obs_names unique (adata.obs_names_make_unique())")
        counts, genes, source = counts_of(adata, cfg.counts_layer, cfg.allow_normalised, path)
        readers.check_unique(genes, "gene names (var_names)", path,
                            "make var_names unique or sum the repeated genes")
        xy = spatial_of(adata, path)
        image, where, xy_img, mpp, how = self._image_for(path, adata, xy)
        if cfg.microns_per_pixel:
            mpp, how = float(cfg.microns_per_pixel), "dataset.microns_per_pixel"
        elif mpp is None:
            mpp = readers.pitch_microns_per_pixel(xy_img, cfg.pitch_um, path)
            how = f"nearest-neighbour spot pitch ({cfg.pitch_um:g} um)"
        patient = cfg.patient or name
        record = {"file": str(path), "image": where, "counts_source": source, "mpp_source": how}
        slide = readers.make_slide(
            name=name, patient=patient, counts=counts, spot_ids=list(adata.obs_names),
            genes=genes, xy=xy_img, grid=grid_of(adata, xy), image=image, image_where=where,
            microns_per_pixel=mpp, spot_diameter_um=cfg.spot_diameter_um, coords_where=path,
            patch_um=cfg.patch_um, min_spots=cfg.min_spots, record=record)
        self.report[name] = dict(slide.adata.uns["stbench"])
        return slide
