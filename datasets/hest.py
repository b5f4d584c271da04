"""HEST-1k samples (Jaume et al., 2024), in the layout of the Hugging Face dataset.

``dataset.root`` holds (as downloaded by ``stbench data download hest --ids ...``)::

    st/<id>.h5ad          raw counts, obsm['spatial'] (x, y) in full-resolution WSI pixels
    wsis/<id>.tif         the H&E whole-slide image (pyramidal TIFF; level 0 is read)
    metadata/<id>.json    per-sample metadata (pixel_size_um_estimated, st_technology, organ,
                          patient, spot_diameter, inter_spot_dist, ...)
    patches/<id>.h5       optional pre-cut 224 px patches (recorded, not used: the harness cuts
                          its own patches at a fixed physical size)

Samples are chosen by ``dataset.ids`` (or ``dataset.sections``), or by a metadata query
(``dataset.organ``, ``dataset.technology``, ``dataset.species``; case-insensitive). Pixel size
comes from the metadata (``pixel_size_um_estimated``, else ``pixel_size_um_embedded``) unless
``dataset.microns_per_pixel`` is set. The patient is the metadata ``patient`` field when
present, else the sample id.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
from stbench.data import Dataset, DatasetCard, DatasetConfig, Slide
from stbench.datasets import _readers as readers
from stbench.datasets.h5ad import counts_of, grid_of, read_anndata, spatial_of
from stbench.errors import ConfigError, DataError
from stbench.ranges import bounded

#: Physical spot diameter (um) by technology, when the metadata does not give one.
SPOT_DIAMETER_UM = {"visium": 55.0, "spatial transcriptomics": 100.0, "st": 100.0,
                    "visium hd": 8.0, "xenium": 55.0}
_PIXEL_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded", "pixel_size_um")


@dataclass
class HestConfig(DatasetConfig):
    """Settings of the HEST-1k reader.

    Attributes:
        root: Folder with st/, wsis/, metadata/ (default ``$STBENCH_DATA/hest``).
        ids: Sample ids, e.g. ``[TENX95, NCBI783]`` (``sections`` is an alias).
        organ: Keep samples of this organ (metadata ``organ``), when no ids are given.
        technology: Keep samples of this technology (metadata ``st_technology``).
        species: Keep samples of this species (metadata ``species``).
        microns_per_pixel: Override the metadata pixel size.
        counts_layer: Layer with raw counts (default ``counts`` if present, else X).
        patch_um: Spots whose square patch of this side crosses the image border are dropped.
        min_spots: Fewer usable spots in a section is an error.
        in_tissue_only: Keep only ``obs['in_tissue'] == 1`` spots when that column exists.
    """

    ids: list[str] = field(default_factory=list)
    organ: Optional[str] = None
    technology: Optional[str] = None
    species: Optional[str] = None
    microns_per_pixel: Optional[float] = bounded(None, "> 0")
    counts_layer: Optional[str] = None
    patch_um: float = bounded(112.0, "> 0")
    min_spots: int = bounded(10, ">= 1")
    in_tissue_only: bool = True


def _clean(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text if text and text.lower() not in ("nan", "none", "null", "na") else None


class HestDataset(Dataset):
    """Samples of HEST-1k (spot-based ST paired with H&E whole-slide images)."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="hest",
        version="HEST-1k v1.1 (Hugging Face MahmoodLab/hest)",
        url="https://huggingface.co/datasets/MahmoodLab/hest",
        licence="CC BY-NC-SA 4.0 (gated: accept the terms on the Hugging Face page)",
        citation="Jaume G. et al., HEST-1k: A Dataset for Spatial Transcriptomics and Histology "
                 "Image Analysis, NeurIPS 2024 Datasets and Benchmarks, arXiv:2406.16192",
        platform="Visium, Visium HD, Xenium, legacy ST (per sample)",
        n_patients=0,
        default_split="loso",
        panel="none (genes.panel=hvg|all|file)",
        description="1,229 spatial transcriptomic profiles with H&E WSIs and metadata; select "
                    "samples by id or by organ/technology.",
    )
    Config: ClassVar[type] = HestConfig

    def __init__(self, config: HestConfig | None = None) -> None:
        super().__init__(config)
        self.report: dict[str, dict] = {}

    @property
    def root(self) -> Path:
        return readers.resolve_root(getattr(self.config, "root", None), "hest")

    def available_ids(self) -> list[str]:
        st = readers.require_root(self.root, "hest") / "st"
        if not st.is_dir():
            raise DataError("no st/ folder", where=str(st),
                            fix="point dataset.root at the HEST-1k folder (st/, wsis/, metadata/) "
                                "or run `stbench data download hest --ids ...`")
        ids = sorted(p.stem for p in st.iterdir() if p.suffix == ".h5ad")
        if not ids:
            raise DataError("no <id>.h5ad in st/", where=str(st),
                            fix="run `stbench data download hest --ids ...`")
        return ids

    def metadata(self, sample_id: str) -> dict:
        """The sample's metadata JSON (or its row of a ``HEST_v*.csv`` table at the root)."""
        path = self.root / "metadata" / f"{sample_id}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"cannot parse metadata JSON ({exc})", where=str(path),
                                fix="re-download the sample's metadata") from exc
            if not isinstance(data, dict):
                raise DataError("metadata JSON is not an object", where=str(path),
                                fix="re-download the sample's metadata")
            return data
        for table in sorted(self.root.glob("HEST_v*.csv")):
            import pandas as pd

            df = pd.read_csv(table)
            if "id" in df.columns:
                rows = df[df["id"].astype(str) == sample_id]
                if len(rows):
                    return {k: v for k, v in rows.iloc[0].to_dict().items()}
        raise DataError(f"no metadata for sample {sample_id}", where=str(path),
                        fix="re-download it (`stbench data download hest --ids ...`)")

    def selected_ids(self) -> list[str]:
        cfg = self.config
        available = self.available_ids()
        wanted = list(cfg.ids or []) + [s for s in (cfg.sections or []) if s not in (cfg.ids or [])]
        if wanted:
            return readers.select_names(available, wanted, "dataset.ids", "HEST samples")
        query = {"organ": cfg.organ, "st_technology": cfg.technology, "species": cfg.species}
        query = {k: v for k, v in query.items() if v}
        if not query:
            return available
        chosen, seen = [], {k: set() for k in query}
        for i in available:
            meta = self.metadata(i)
            ok = True
            for key, want in query.items():
                have = _clean(meta.get(key)) or ""
                seen[key].add(have)
                if have.lower() != str(want).lower():
                    ok = False
            if ok:
                chosen.append(i)
        if not chosen:
            raise ConfigError(
                f"no HEST sample matches {query}",
                where=str(self.root / "metadata"),
                fix="values present: " + "; ".join(f"{k}: {sorted(v)}" for k, v in seen.items()))
        return chosen

    def load(self) -> list[Slide]:
        slides = [self._load_one(i) for i in self.selected_ids()]
        return readers.finish(slides, self.root)

    def _load_one(self, sample_id: str) -> Slide:
        cfg = self.config
        root = self.root
        meta = self.metadata(sample_id)
        st_path = root / "st" / f"{sample_id}.h5ad"
        wsi = next((p for p in (root / "wsis" / f"{sample_id}.tif",
                                root / "wsis" / f"{sample_id}.tiff") if p.is_file()),
                   root / "wsis" / f"{sample_id}.tif")
        image = readers.file_image(wsi)
        adata = read_anndata(st_path)
        if cfg.in_tissue_only and "in_tissue" in adata.obs.columns:
            adata = adata[np.asarray(adata.obs["in_tissue"]).astype(int) == 1]
        readers.check_unique(list(adata.obs_names), "spot barcodes (obs_names)", st_path,
                            "make obs_names unique")
        counts, genes, source = counts_of(adata, cfg.counts_layer, False, st_path)
        readers.check_unique(genes, "gene names (var_names)", st_path,
                            "make var_names unique or sum the repeated genes")
        xy = spatial_of(adata, st_path)
        meta_path = root / "metadata" / f"{sample_id}.json"
        if cfg.microns_per_pixel:
            mpp, how = float(cfg.microns_per_pixel), "dataset.microns_per_pixel"
        else:
            key = next((k for k in _PIXEL_KEYS if _clean(meta.get(k)) is not None), None)
            if key is None:
                raise DataError(f"sample {sample_id}: the metadata gives no pixel size "
                                f"({' / '.join(_PIXEL_KEYS)})", where=str(meta_path),
                                fix="set dataset.microns_per_pixel")
            try:
                mpp = float(meta[key])
            except (TypeError, ValueError) as exc:
                raise DataError(f"sample {sample_id}: {key}={meta[key]!r} is not a number",
                                where=str(meta_path), fix="set dataset.microns_per_pixel") from exc
            how = f"metadata {key}"
        tech = _clean(meta.get("st_technology")) or ""
        diameter = _clean(meta.get("spot_diameter"))
        spot_um = float(diameter) if diameter else SPOT_DIAMETER_UM.get(tech.lower(), 55.0)
        patient = _clean(meta.get("patient"))
        patient = f"{_clean(meta.get('dataset_title')) or ''}:{patient}" if patient and \
            _clean(meta.get("dataset_title")) else (patient or sample_id)
        patches = root / "patches" / f"{sample_id}.h5"
        record = {"st_file": str(st_path), "image_file": str(wsi), "metadata_file": str(meta_path),
                  "patches_file": str(patches) if patches.is_file() else "",
                  "counts_source": source, "mpp_source": how, "technology": tech,
                  "organ": _clean(meta.get("organ")) or "", "species": _clean(meta.get("species")) or ""}
        slide = readers.make_slide(
            name=sample_id, patient=patient, counts=counts, spot_ids=list(adata.obs_names),
            genes=genes, xy=xy, grid=grid_of(adata, xy), image=image, image_where=wsi,
            microns_per_pixel=mpp, spot_diameter_um=spot_um, coords_where=st_path,
            patch_um=cfg.patch_um, min_spots=cfg.min_spots, record=record)
        self.report[sample_id] = dict(slide.adata.uns["stbench"])
        return slide
