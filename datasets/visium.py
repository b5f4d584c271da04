"""10x Genomics Visium: Space Ranger output folders.

``dataset.root`` is one Space Ranger output folder (``outs/``, or a folder containing
``outs/``) or a folder of such folders (one section each, named by the folder). Each holds::

    filtered_feature_bc_matrix.h5      counts (CSC genes x barcodes: data/indices/indptr/shape,
                                       features/name + feature_type (v3) or gene_names (v2))
    spatial/tissue_positions_list.csv  Space Ranger 1.x, no header: barcode, in_tissue,
                                       array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres
    spatial/tissue_positions.csv       Space Ranger 2.x, the same columns with a header
    spatial/scalefactors_json.json     spot_diameter_fullres, tissue_hires_scalef, tissue_lowres_scalef
    spatial/tissue_hires_image.png     (and tissue_lowres_image.png)

The image is ``dataset.image`` (the full-resolution H&E given to Space Ranger; coordinates are
used as they are) or else the hires image (lowres if no hires) with the coordinates scaled by
its scale factor. Microns per pixel: 55 um / ``spot_diameter_fullres`` (divided by the scale
factor for the hires/lowres image), unless ``dataset.microns_per_pixel`` is set.

Repeated gene symbols (Space Ranger references have a few) are summed into one column, with a
warning, unless ``dataset.gene_ids=true`` (Ensembl ids, always unique).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import scipy.sparse as sp
from stbench.data import Dataset, DatasetCard, DatasetConfig, Slide
from stbench.datasets import _readers as readers
from stbench.errors import ConfigError, DataError
from stbench.ranges import bounded

VISIUM_SPOT_UM = 55.0
VISIUM_PITCH_UM = 100.0


@dataclass
class VisiumConfig(DatasetConfig):
    """Settings of the Visium reader.

    Attributes:
        root: A Space Ranger output folder or a folder of them.
        sections: Folder names to read (all found when empty).
        image: The full-resolution H&E image (single section only); default the hires image.
        image_res: ``hires`` or ``lowres`` when no full-resolution image is given.
        microns_per_pixel: Override the pixel size of the image used.
        gene_ids: Use feature ids (Ensembl) instead of gene symbols as gene names.
        patient: Patient of every section (default: the section name).
        in_tissue_only: Keep only spots under tissue (``in_tissue == 1``).
        patch_um: Spots whose square patch of this side crosses the image border are dropped.
        min_spots: Fewer usable spots in a section is an error.
    """

    image: Optional[str] = None
    image_res: str = "hires"
    microns_per_pixel: Optional[float] = bounded(None, "> 0")
    gene_ids: bool = False
    patient: Optional[str] = None
    in_tissue_only: bool = True
    patch_um: float = bounded(112.0, "> 0")
    min_spots: int = bounded(10, ">= 1")


def _decode(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def read_10x_h5(path: Path, use_ids: bool = False) -> tuple[list[str], list[str], sp.csr_matrix]:
    """(barcodes, gene names, CSR barcodes x genes counts) of a 10x feature-barcode matrix."""
    import h5py

    readers.require_file(path, "feature-barcode matrix", "check the Space Ranger output folder")
    fix = "re-download or re-export filtered_feature_bc_matrix.h5"
    try:
        with h5py.File(path, "r") as f:
            grp = f["matrix"] if "matrix" in f else f[next(iter(f.keys()))]
            data = grp["data"][:]
            indices = grp["indices"][:]
            indptr = grp["indptr"][:]
            shape = tuple(int(s) for s in grp["shape"][:])
            barcodes = _decode(grp["barcodes"][:])
            if "features" in grp:
                feats = grp["features"]
                names = _decode(feats["id" if use_ids else "name"][:])
                ftype = _decode(feats["feature_type"][:]) if "feature_type" in feats else None
            else:  # Space Ranger / Cell Ranger v2 layout
                names = _decode(grp["genes" if use_ids else "gene_names"][:])
                ftype = None
    except (OSError, KeyError, ValueError, StopIteration) as exc:
        raise DataError(f"cannot read the 10x matrix ({type(exc).__name__}: {exc})",
                        where=str(path), fix=fix) from exc
    if len(shape) != 2 or shape != (len(names), len(barcodes)) or len(indptr) != shape[1] + 1:
        raise DataError(f"inconsistent 10x matrix: shape {shape}, {len(names)} features, "
                        f"{len(barcodes)} barcodes", where=str(path), fix=fix)
    try:
        m = sp.csc_matrix((data, indices, indptr), shape=shape).T.tocsr()
    except ValueError as exc:
        raise DataError(f"inconsistent 10x matrix ({exc})", where=str(path), fix=fix) from exc
    if ftype is not None:
        keep = np.array([t == "Gene Expression" for t in ftype])
        if not keep.all():
            m = m[:, np.flatnonzero(keep)]
            names = [n for n, k in zip(names, keep) if k]
    readers.check_counts(m, path)
    return barcodes, names, readers.to_count_matrix(m)


def read_positions(spatial: Path):
    """Spot positions as a DataFrame indexed by barcode (columns as in Space Ranger 2.x)."""
    import pandas as pd

    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
            "pxl_col_in_fullres"]
    v2, v1 = spatial / "tissue_positions.csv", spatial / "tissue_positions_list.csv"
    path = v2 if v2.is_file() else v1
    readers.require_file(path, "spot positions (tissue_positions[_list].csv)",
                        "check the Space Ranger output's spatial/ folder")
    try:
        with readers.open_text(path) as fh:
            first = fh.readline()
        header = 0 if first.lower().startswith("barcode") else None
        df = pd.read_csv(path, header=header)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse spot positions ({str(exc).splitlines()[0]})",
                        where=str(path), fix="re-export the Space Ranger spatial/ folder") from exc
    if header is None:
        if df.shape[1] != 6:
            raise DataError(f"spot positions have {df.shape[1]} columns, expected 6",
                            where=str(path), fix="re-export the Space Ranger spatial/ folder")
        df.columns = cols
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"spot positions lack column(s) {missing}", where=str(path),
                        fix="re-export the Space Ranger spatial/ folder")
    for c in cols[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if df[cols[1:]].isna().any().any():
        raise DataError("spot positions hold missing or non-numeric values", where=str(path),
                        fix="re-export the Space Ranger spatial/ folder")
    readers.check_unique(df["barcode"].astype(str).tolist(), "barcodes", path,
                        "each barcode must appear once")
    return df.set_index(df["barcode"].astype(str)), path


def sum_duplicate_genes(genes: list[str], counts: sp.csr_matrix, where: Path
                        ) -> tuple[list[str], sp.csr_matrix, int]:
    """Merge repeated gene names by summing their counts (first occurrence order)."""
    order: dict[str, int] = {}
    idx = np.empty(len(genes), np.int64)
    for j, g in enumerate(genes):
        idx[j] = order.setdefault(g, len(order))
    n_dup = len(genes) - len(order)
    if not n_dup:
        return genes, counts, 0
    merge = sp.csr_matrix((np.ones(len(genes), np.int32), (np.arange(len(genes)), idx)),
                          shape=(len(genes), len(order)))
    warnings.warn(f"{where}: summed {n_dup} repeated gene symbol column(s) into one each "
                  "(dataset.gene_ids=true uses unique feature ids instead)",
                  readers.DataWarning, stacklevel=3)
    return list(order), readers.to_count_matrix(counts @ merge), n_dup


def find_outs(folder: Path) -> Path | None:
    """The Space Ranger output inside ``folder`` (itself or ``folder/outs``)."""
    for cand in (folder, folder / "outs"):
        if (cand / "filtered_feature_bc_matrix.h5").is_file() or (cand / "spatial").is_dir():
            return cand
    return None


class VisiumDataset(Dataset):
    """Sections from 10x Space Ranger output folders."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="visium",
        version="Space Ranger 1.x / 2.x output",
        url="https://www.10xgenomics.com/support/software/space-ranger (format)",
        licence="that of your data (10x public datasets: CC BY 4.0)",
        citation="your data's citation; format: 10x Genomics Space Ranger",
        platform="10x Visium (55 um spots, 100 um pitch)",
        n_patients=0,
        default_split="loso",
        panel="none (genes.panel=hvg|all|file)",
        description="Generic reader for Space Ranger output folders.",
    )
    Config: ClassVar[type] = VisiumConfig

    def __init__(self, config: VisiumConfig | None = None) -> None:
        super().__init__(config)
        self.report: dict[str, dict] = {}

    def sections_found(self) -> dict[str, Path]:
        root = getattr(self.config, "root", None)
        if not root:
            raise ConfigError("the visium dataset needs dataset.root=SPACERANGER_OUTPUT_FOLDER",
                              fix="pass dataset.root=PATH (the folder with spatial/ and "
                                  "filtered_feature_bc_matrix.h5, or a folder of them)")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError("Space Ranger output folder not found", where=str(root),
                            fix="check dataset.root")
        outs = find_outs(root)
        if outs is not None:
            return {root.name: outs}
        found = {p.name: o for p in sorted(root.iterdir()) if p.is_dir() and (o := find_outs(p))}
        if not found:
            raise DataError("no Space Ranger output (spatial/ and filtered_feature_bc_matrix.h5)",
                            where=str(root), fix="point dataset.root at a Space Ranger `outs` folder")
        return found

    def load(self) -> list[Slide]:
        cfg = self.config
        found = self.sections_found()
        names = readers.select_names(list(found), list(cfg.sections or []), "dataset.sections")
        if cfg.image and len(names) > 1:
            raise ConfigError("dataset.image names one image but several sections are read",
                              fix="select one with dataset.sections=[NAME]")
        slides = [self._load_one(n, found[n]) for n in names]
        return readers.finish(slides, Path(cfg.root))

    def _load_one(self, name: str, outs: Path) -> Slide:
        cfg = self.config
        h5 = outs / "filtered_feature_bc_matrix.h5"
        barcodes, genes, counts = read_10x_h5(h5, use_ids=cfg.gene_ids)
        readers.check_unique(barcodes, "barcodes", h5, "re-export the matrix")
        genes, counts, n_dup = sum_duplicate_genes(genes, counts, h5)
        spatial = outs / "spatial"
        pos, pos_path = read_positions(spatial)
        missing = [b for b in barcodes if b not in pos.index]
        if missing:
            raise DataError(f"section {name}: {len(missing)} matrix barcode(s) have no spot "
                            f"position, e.g. {missing[:3]}", where=str(pos_path),
                            fix="use the spatial/ folder of the same Space Ranger run")
        p = pos.loc[barcodes]
        keep = np.ones(len(barcodes), bool)
        if cfg.in_tissue_only:
            keep = p["in_tissue"].to_numpy() == 1
        rows = np.flatnonzero(keep)
        p = p.iloc[rows]
        xy = p[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
        grid = p[["array_col", "array_row"]].to_numpy(np.int64)
        sf_path = spatial / "scalefactors_json.json"
        try:
            sf = json.loads(sf_path.read_text()) if sf_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot parse scale factors ({exc})", where=str(sf_path),
                            fix="re-export the Space Ranger spatial/ folder") from exc
        if cfg.image:
            img_path = Path(cfg.image).expanduser()
            scale, res = 1.0, "fullres"
        else:
            if cfg.image_res not in ("hires", "lowres"):
                raise ConfigError(f"dataset.image_res={cfg.image_res!r}", fix="use hires or lowres")
            order = [cfg.image_res] + [r for r in ("hires", "lowres") if r != cfg.image_res]
            res = next((r for r in order if (spatial / f"tissue_{r}_image.png").is_file()), None)
            if res is None:
                raise DataError("no tissue_hires_image.png or tissue_lowres_image.png",
                                where=str(spatial),
                                fix="pass the full-resolution image with dataset.image=PATH")
            img_path = spatial / f"tissue_{res}_image.png"
            key = f"tissue_{res}_scalef"
            if key not in sf:
                raise DataError(f"scale factors lack {key}", where=str(sf_path),
                                fix="re-export the Space Ranger spatial/ folder")
            scale = float(sf[key])
        image = readers.file_image(img_path)
        if cfg.microns_per_pixel:
            mpp, how = float(cfg.microns_per_pixel), "dataset.microns_per_pixel"
        elif sf.get("spot_diameter_fullres"):
            mpp = VISIUM_SPOT_UM / (float(sf["spot_diameter_fullres"]) * scale)
            how = f"55 um / spot_diameter_fullres ({res})"
        else:
            mpp = readers.pitch_microns_per_pixel(xy * scale, VISIUM_PITCH_UM, pos_path)
            how = "nearest-neighbour spot pitch (100 um)"
        record = {"matrix_file": str(h5), "positions_file": str(pos_path),
                  "scalefactors_file": str(sf_path), "image_file": str(img_path),
                  "image_res": res, "scale": scale, "mpp_source": how,
                  "summed_duplicate_genes": n_dup,
                  "not_in_tissue_dropped": int((~keep).sum())}
        slide = readers.make_slide(
            name=name, patient=cfg.patient or name, counts=counts[rows],
            spot_ids=[barcodes[i] for i in rows], genes=genes, xy=xy * scale, grid=grid,
            image=image, image_where=img_path, microns_per_pixel=mpp,
            spot_diameter_um=VISIUM_SPOT_UM, coords_where=pos_path, patch_um=cfg.patch_um,
            min_spots=cfg.min_spots, record=record)
        self.report[name] = dict(slide.adata.uns["stbench"])
        return slide
