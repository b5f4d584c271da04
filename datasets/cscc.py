"""Cutaneous squamous cell carcinoma, legacy Spatial Transcriptomics (Ji et al., 2020).

Reads the GEO GSE144240 supplementary files of the ST samples as published, all in one folder
(``dataset.root``), gzipped or not, each section (e.g. ``P2_ST_rep1``) matched by pattern::

    <any prefix>_<name>_stdata.tsv[.gz]               spots x genes raw counts, ids "XxY"
    <any prefix>spot<...>-<name>.tsv[.gz]             spot file: x y new_x new_y pixel_x pixel_y
    <any prefix>_<name>.jpg                            the H&E image (gunzip a .jpg.gz first)

e.g. ``GSM4284316_P2_ST_rep1_stdata.tsv.gz``, ``GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz``
and ``GSM4284316_P2_ST_rep1.jpg``. Patient and replicate come from the name
(``P<k>_ST_rep<r>``). The published count tables also hold spots outside the spot selection:
those rows are dropped (counted in the slide record) unless ``dataset.unmatched_counts=error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from stbench.data import Dataset, DatasetCard, DatasetConfig, Slide
from stbench.datasets import _legacy_st as legacy
from stbench.datasets import _readers as readers
from stbench.errors import DataError
from stbench.ranges import bounded

PANEL_FILE = "cscc_171.txt"
_NAME = re.compile(r"^(?P<patient>P\d+)_ST_(?P<rep>rep\d+)$")
_COUNTS = re.compile(r"^(?:.*[_-])?(?P<name>[A-Za-z0-9]+_ST_[A-Za-z0-9]+)_stdata\.tsv(?:\.gz)?$")


@dataclass
class CsccConfig(DatasetConfig):
    """Settings of the cscc reader.

    Attributes:
        root: Folder with the GEO files (default ``$STBENCH_DATA/cscc``).
        sections: Sections to read, e.g. ``[P2_ST_rep1, P5_ST_rep2]`` (all found when empty).
        panel_file: The 171-gene literature panel; default ``<root>/panels/cscc_171.txt`` or
            ``<root>/../panels/cscc_171.txt``.
        microns_per_pixel: Pixel size; default derived from the spot grid (200 um pitch).
        pitch_um: Spot centre-to-centre distance used for that derivation.
        patch_um: Spots whose square patch of this side crosses the image border are dropped.
        min_spots: Fewer usable spots in a section is an error.
        unmatched_counts: Count rows missing from the spot file: ``drop`` (the published
            tables include unselected spots) or ``error``.
    """

    panel_file: Optional[str] = None
    microns_per_pixel: Optional[float] = bounded(None, "> 0")
    pitch_um: float = bounded(legacy.LEGACY_PITCH_UM, "> 0")
    patch_um: float = bounded(112.0, "> 0")
    min_spots: int = bounded(10, ">= 1")
    unmatched_counts: str = "drop"


def parse_section(name: str) -> tuple[str, str]:
    """``P2_ST_rep1`` -> (``P2``, ``rep1``); other names: (first ``_`` field, rest)."""
    m = _NAME.match(name)
    if m:
        return m.group("patient"), m.group("rep")
    head, _, rest = name.partition("_")
    return head, rest


def _match_one(files: list[Path], pattern: re.Pattern, what: str, root: Path, fix: str) -> Path:
    hits = [p for p in files if pattern.match(p.name)]
    if not hits:
        raise DataError(f"{what} not found (pattern {pattern.pattern})", where=str(root), fix=fix)
    if len(hits) > 1:
        raise DataError(f"{len(hits)} files match the {what}: {[p.name for p in hits]}",
                        where=str(root), fix="keep one of them in the folder")
    return hits[0]


class CsccDataset(Dataset):
    """cSCC sections from the GEO GSE144240 supplementary files."""

    card: ClassVar[DatasetCard] = DatasetCard(
        name="cscc",
        version="GSE144240 (GEO, 2020)",
        url="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE144240",
        licence="NCBI GEO public data (no restrictions by NCBI; see datasets/cards/cscc.md)",
        citation="Ji A.L. et al., Multimodal analysis of composition and spatial architecture in "
                 "human squamous cell carcinoma, Cell 182(2):497-514 (2020), "
                 "doi:10.1016/j.cell.2020.05.039",
        platform="legacy Spatial Transcriptomics (100 um spots, 200 um pitch)",
        n_patients=4,
        default_split="lopo",
        panel="171 genes (Hist2ST / THItoGene / mclSTExp)",
        description="12 sections: 4 patients (P2, P5, P9, P10) x 3 replicates, raw counts and "
                    "H&E images.",
    )
    Config: ClassVar[type] = CsccConfig

    def __init__(self, config: CsccConfig | None = None) -> None:
        super().__init__(config)
        self.report: dict[str, dict] = {}

    @property
    def root(self) -> Path:
        return readers.resolve_root(getattr(self.config, "root", None), "cscc")

    def _listing(self) -> list[Path]:
        root = readers.require_root(self.root, "cscc")
        return sorted(p for p in root.iterdir() if p.is_file())

    def available_sections(self) -> list[str]:
        names = sorted({m.group("name") for p in self._listing() if (m := _COUNTS.match(p.name))})
        if not names:
            raise DataError("no count file (*_<section>_stdata.tsv[.gz]) in the folder",
                            where=str(self.root),
                            fix="point dataset.root at the GSE144240 files or run "
                                "`stbench data download cscc`")
        return names

    def files(self, name: str) -> tuple[Path, Path, Path]:
        """(counts, spot file, image) of section ``name``."""
        files = self._listing()
        esc = re.escape(name)
        fix = "run `stbench data download cscc` or add the file from GEO GSE144240"
        counts = _match_one(files, re.compile(rf"^(?:.*[_-])?{esc}_stdata\.tsv(?:\.gz)?$"),
                            f"count file of {name}", self.root, fix)
        spots = _match_one(files, re.compile(rf"^.*spot.*[_-]{esc}\.tsv(?:\.gz)?$", re.I),
                           f"spot file of {name}", self.root, fix)
        img_pat = re.compile(rf"^(?:.*[_-])?{esc}\.jpe?g$", re.I)
        if not any(img_pat.match(p.name) for p in files):
            gz = [p for p in files if re.match(rf"^(?:.*[_-])?{esc}\.jpe?g\.gz$", p.name, re.I)]
            if gz:
                raise DataError(f"the image of {name} is still gzip-compressed", where=str(gz[0]),
                                fix=f"gunzip {gz[0].name} (stbench data download cscc does this)")
        image = _match_one(files, img_pat, f"H&E image of {name}", self.root, fix)
        return counts, spots, image

    def load(self) -> list[Slide]:
        cfg = self.config
        names = readers.select_names(self.available_sections(), list(cfg.sections or []),
                                    "dataset.sections")
        slides = []
        for name in names:
            counts, spots, image = self.files(name)
            patient, rep = parse_section(name)
            slide = legacy.load_legacy_section(
                name=name, patient=patient, counts_path=counts, spots_path=spots,
                image_path=image, microns_per_pixel=cfg.microns_per_pixel, pitch_um=cfg.pitch_um,
                patch_um=cfg.patch_um, min_spots=cfg.min_spots,
                unmatched_counts=cfg.unmatched_counts, extra_record={"replicate": rep})
            self.report[name] = dict(slide.adata.uns["stbench"])
            slides.append(slide)
        return readers.finish(slides, self.root)

    @property
    def dropped_border(self) -> dict[str, int]:
        return {k: int(v.get("dropped_border", 0)) for k, v in self.report.items()}

    def literature_panel(self) -> list[str]:
        return readers.find_literature_panel("cscc", self.root, self.config.panel_file, PANEL_FILE)
