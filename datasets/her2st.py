"""HER2-positive breast cancer, legacy Spatial Transcriptomics (Andersson et al., 2021).

Reads the layout of the public ``almaan/her2st`` repository (its ``data/`` folder), from
``dataset.root``::

    ST-cnts/<sec>.tsv[.gz]              spots x genes raw counts, spot ids "XxY" first column
    ST-spotfiles/<sec>_selection.tsv    x y new_x new_y pixel_x pixel_y selected
    ST-imgs/<patient>/<sec>/*.jpg       the full-resolution H&E image (one per section)
    ST-pat/lbl/<sec>_labeled_coordinates.tsv   optional pathologist labels (obs['label'])

Sections are discovered from ``ST-cnts``; the patient is the first letter of the section
name. Spots are the count rows listed in the spot file with ``selected == 1``. Microns per
pixel come from a least-squares fit of the spot pixel positions to the array positions
(200 um centre to centre) unless ``dataset.microns_per_pixel`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from stbench.data import Dataset, DatasetCard, DatasetConfig, Slide
from stbench.datasets import _legacy_st as legacy
from stbench.datasets import _readers as readers
from stbench.errors import DataError
from stbench.ranges import bounded

PANEL_FILE = "her2st_785.txt"


@dataclass
class Her2stConfig(DatasetConfig):
    """Settings of the her2st reader.

    Attributes:
        root: The folder holding ST-cnts/, ST-spotfiles/, ST-imgs/ (default: the download
            folder, ``$STBENCH_DATA/her2st`` or ``~/.cache/stbench/data/her2st``).
        sections: Sections to read (all found when empty), e.g. ``[B4, C2]``.
        panel_file: The literature panel (785 genes); default ``<root>/panels/her2st_785.txt``
            or ``<root>/../panels/her2st_785.txt``.
        microns_per_pixel: Pixel size; default derived from the spot grid.
        pitch_um: Spot centre-to-centre distance used for that derivation.
        patch_um: Spots whose square patch of this side would cross the image border are
            dropped (keep equal to ``features.patch_um``; 0 keeps every spot).
        min_spots: Fewer usable spots in a section is an error.
        unmatched_counts: Count rows missing from the spot file: ``error`` or ``drop``.
        labels: Read the pathologist labels (``ST-pat/lbl``) into ``obs['label']`` when present.
    """

    panel_file: Optional[str] = None
    microns_per_pixel: Optional[float] = bounded(None, "> 0")
    pitch_um: float = bounded(legacy.LEGACY_PITCH_UM, "> 0")
    patch_um: float = bounded(112.0, "> 0")
    min_spots: int = bounded(10, ">= 1")
    unmatched_counts: str = "error"
    labels: bool = True


class Her2stDataset(Dataset):
    """HER2+ breast cancer sections in the almaan/her2st layout."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="her2st",
        version="1.0 (almaan/her2st; Zenodo 10.5281/zenodo.4751624)",
        url="https://github.com/almaan/her2st",
        licence="public research data of Andersson et al. (see datasets/cards/her2st.md)",
        citation="Andersson A. et al., Spatial deconvolution of HER2-positive breast cancer "
                 "delineates tumor-associated cell type interactions, Nat Commun 12, 6012 (2021), "
                 "doi:10.1038/s41467-021-26271-2",
        platform="legacy Spatial Transcriptomics (100 um spots, 200 um pitch)",
        n_patients=8,
        default_split="lopo",
        panel="785 genes (HisToGene / Hist2ST / THItoGene)",
        description="36 sections of 8 HER2+ breast tumours (patients A-H), raw counts, "
                    "full-resolution H&E, pathologist labels for one section per patient.",
    )
    Config: ClassVar[type] = Her2stConfig

    def __init__(self, config: Her2stConfig | None = None) -> None:
        super().__init__(config)
        self.report: dict[str, dict] = {}

    @property
    def root(self) -> Path:
        return readers.resolve_root(getattr(self.config, "root", None), "her2st")

    def available_sections(self) -> list[str]:
        """Section names with a count file under ``ST-cnts``."""
        cnts = readers.require_root(self.root, "her2st") / "ST-cnts"
        if not cnts.is_dir():
            raise DataError("no ST-cnts folder", where=str(cnts),
                            fix="point dataset.root at the her2st data folder (the one holding "
                                "ST-cnts/, ST-spotfiles/, ST-imgs/) or run `stbench data download her2st`")
        names = set()
        for p in cnts.iterdir():
            for suffix in (".tsv.gz", ".tsv"):
                if p.is_file() and p.name.endswith(suffix):
                    names.add(p.name[: -len(suffix)])
        if not names:
            raise DataError("no count file (<section>.tsv[.gz]) in ST-cnts", where=str(cnts),
                            fix="re-download the dataset (`stbench data download her2st`)")
        return sorted(names)

    def _files(self, name: str) -> tuple[Path, Path, Path, Path | None]:
        root = self.root
        counts = next((p for p in (root / "ST-cnts" / f"{name}.tsv.gz", root / "ST-cnts" / f"{name}.tsv")
                       if p.is_file()), root / "ST-cnts" / f"{name}.tsv.gz")
        spots = root / "ST-spotfiles" / f"{name}_selection.tsv"
        if not spots.is_file() and spots.with_suffix(".tsv.gz").is_file():
            spots = spots.with_suffix(".tsv.gz")
        readers.require_file(spots, f"spot file of section {name}",
                            "re-download ST-spotfiles (`stbench data download her2st`)")
        img_dir = root / "ST-imgs" / name[0] / name
        if not img_dir.is_dir():
            raise DataError(f"image folder of section {name} not found", where=str(img_dir),
                            fix="re-download ST-imgs (`stbench data download her2st`)")
        images = sorted(p for p in img_dir.iterdir()
                        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        if not images:
            raise DataError(f"no JPEG image for section {name}", where=str(img_dir),
                            fix="re-download ST-imgs (`stbench data download her2st`)")
        if len(images) > 1:
            raise DataError(f"{len(images)} JPEG images for section {name}: "
                            f"{[p.name for p in images]}", where=str(img_dir),
                            fix="keep the one H&E image of the section in that folder")
        lbl = root / "ST-pat" / "lbl" / f"{name}_labeled_coordinates.tsv"
        return counts, spots, images[0], (lbl if lbl.is_file() else None)

    def load(self) -> list[Slide]:
        cfg = self.config
        names = readers.select_names(self.available_sections(), list(cfg.sections or []),
                                    "dataset.sections")
        slides = []
        for name in names:
            counts, spots, image, lbl = self._files(name)
            labels = legacy.read_labels(lbl) if (lbl is not None and cfg.labels) else None
            slide = legacy.load_legacy_section(
                name=name, patient=name[0], counts_path=counts, spots_path=spots,
                image_path=image, microns_per_pixel=cfg.microns_per_pixel, pitch_um=cfg.pitch_um,
                patch_um=cfg.patch_um, min_spots=cfg.min_spots,
                unmatched_counts=cfg.unmatched_counts, labels=labels,
                extra_record={"labels_file": str(lbl) if labels is not None else ""})
            self.report[name] = dict(slide.adata.uns["stbench"])
            slides.append(slide)
        return readers.finish(slides, self.root)

    @property
    def dropped_border(self) -> dict[str, int]:
        """Spots dropped per section because their patch crossed the image border."""
        return {k: int(v.get("dropped_border", 0)) for k, v in self.report.items()}

    def literature_panel(self) -> list[str]:
        root = readers.resolve_root(getattr(self.config, "root", None), "her2st")
        return readers.find_literature_panel("her2st", root, self.config.panel_file, PANEL_FILE)
