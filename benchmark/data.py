"""The data model: slides, their images, dataset cards and dataset plugins.

A :class:`Slide` is one tissue section: an AnnData of RAW counts (spots x genes) with spot
pixel coordinates in ``obsm['spatial']`` (x, y, full-resolution pixels of the slide image) and
array/grid coordinates in ``obsm['grid']`` (column, row), plus a reference to its H&E image
and the physical pixel size.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

try:  # anndata is heavy; typing only
    from anndata import AnnData
except ImportError:  # pragma: no cover
    AnnData = object  # type: ignore[misc,assignment]


class ImageSource(ABC):
    """Read access to one slide image, in full-resolution pixel coordinates."""

    @property
    @abstractmethod
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""

    @abstractmethod
    def read(self) -> np.ndarray:
        """The whole image as an (H, W, 3) uint8 RGB array."""

    @abstractmethod
    def digest(self) -> str:
        """A stable content digest (used as part of feature-cache keys)."""


class ArrayImage(ImageSource):
    """An in-memory RGB image (used by the generated demo dataset)."""

    def __init__(self, array: np.ndarray) -> None:
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError("ArrayImage expects an (H, W, 3) uint8 array")
        self.array = array
        self._digest: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[0])

    def read(self) -> np.ndarray:
        return self.array

    def digest(self) -> str:
        if self._digest is None:
            self._digest = hashlib.sha256(self.array.tobytes()).hexdigest()
        return self._digest


class FileImage(ImageSource):
    """An image file on disk (JPEG, PNG or TIFF), decoded only when read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._size: tuple[int, int] | None = None
        self._digest: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            from stbench.io.images import image_size

            self._size = image_size(self.path)
        return self._size

    def read(self) -> np.ndarray:
        from stbench.io.images import read_rgb

        return read_rgb(self.path)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            self._digest = h.hexdigest()
        return self._digest


@dataclass
class Slide:
    """One tissue section with its spots, raw counts and image.

    Attributes:
        name: Section name, unique within the dataset (e.g. ``"C2"``).
        patient: Patient identifier (used by ``lopo`` and ``kfold`` splits).
        adata: AnnData, ``X`` raw integer counts (spots x genes), ``obs_names`` spot ids,
            ``var_names`` gene symbols, ``obsm['spatial']`` (x, y) pixels, ``obsm['grid']``
            (col, row) array coordinates.
        image: The H&E image the pixel coordinates refer to.
        microns_per_pixel: Physical size of one image pixel.
        spot_diameter_um: Physical diameter of one spot (100 um legacy ST, 55 um Visium).
    """

    name: str
    patient: str
    adata: AnnData
    image: ImageSource
    microns_per_pixel: float
    spot_diameter_um: float = 100.0

    @property
    def n_spots(self) -> int:
        return int(self.adata.n_obs)

    @property
    def genes(self) -> list[str]:
        return list(self.adata.var_names)


@dataclass(frozen=True)
class DatasetCard:
    """Metadata of a dataset, as data (shown by ``stbench data info`` and in results)."""

    name: str
    version: str
    url: str
    licence: str
    citation: str
    platform: str
    n_patients: int
    default_split: str
    panel: str
    description: str = ""


@dataclass
class DatasetConfig:
    """Options common to every dataset plugin (plugins subclass this)."""

    root: str | None = None
    sections: list[str] = field(default_factory=list)


class Dataset(ABC):
    """A dataset plugin: turns files (or code) into slides.

    Subclasses set ``card`` and may define a nested ``Config`` dataclass (subclass of
    :class:`DatasetConfig`) whose fields become ``dataset.*`` settings.
    """

    card: ClassVar[DatasetCard]
    Config: ClassVar[type] = DatasetConfig

    def __init__(self, config: DatasetConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def load(self) -> list[Slide]:
        """Read every selected section. Raises ``DataError`` on malformed input."""

    def literature_panel(self) -> list[str] | None:
        """The published gene panel, where the dataset has one."""
        return None
