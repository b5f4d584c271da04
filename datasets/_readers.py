"""Reading and checking shared by every dataset reader (visium, hest, h5ad, her2st, cscc).

The checks each reader runs at read time (counts, unique names, coordinates inside the image,
patches inside the image, enough spots, a common gene set, literature panels), each failing
with a one-line :class:`~stbench.errors.DataError` that names the file and the fix, plus the
small file helpers they share. The legacy-ST file format (her2st, cscc) is in
:mod:`stbench.datasets._legacy_st`.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from stbench.data import FileImage, ImageSource, Slide
from stbench.errors import ConfigError, DataError


class DataWarning(UserWarning):
    """Input was usable but something was dropped or reconstructed (the message counts it)."""


# --------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, gunzipping when it is gzip-compressed (by content, not by name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def require_file(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a file, else a DataError naming it."""
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"{what} is a directory, not a file", where=str(path), fix=fix)
        raise DataError(f"{what} not found", where=str(path), fix=fix)
    return path


def read_gene_list(path: str | Path, what: str = "gene panel") -> list[str]:
    """Symbols of a one-per-line file (blank lines and ``#`` comments ignored)."""
    p = Path(path).expanduser()
    try:
        with open_text(p) as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise DataError(f"{what} file not found", where=str(p),
                        fix="check the path (one gene symbol a line)") from exc
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read the {what} file ({exc})", where=str(p),
                        fix="pass a UTF-8 text file with one gene symbol a line") from exc
    genes = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    genes = [g for g in genes if g]
    if not genes:
        raise DataError(f"the {what} file lists no gene", where=str(p),
                        fix="write one gene symbol a line")
    dupes = _duplicates(genes)
    if dupes:
        raise DataError(f"the {what} file lists {len(dupes)} gene(s) twice, e.g. {dupes[:3]}",
                        where=str(p), fix="remove the repeated symbols")
    return genes


def find_literature_panel(dataset_name: str, root: Path | None, panel_file: str | None,
                          filename: str) -> list[str]:
    """A dataset's published panel: ``panel_file`` if set, else the first existing file of
    ``<root>/panels/<filename>``, ``<root>/../panels/<filename>`` and the package's
    ``stbench/datasets/panels/<filename>``.

    Raises:
        DataError: If none exists (says to download the dataset or pass ``dataset.panel_file``).
    """
    if panel_file:
        return read_gene_list(panel_file, f"{dataset_name} panel")
    candidates = []
    if root is not None:
        candidates += [root / "panels" / filename, root.parent / "panels" / filename]
    candidates.append(Path(__file__).with_name("panels") / filename)
    for c in candidates:
        if c.is_file():
            return read_gene_list(c, f"{dataset_name} panel")
    raise DataError(
        f"the {dataset_name} literature panel ({filename}) was not found",
        where=", ".join(str(c) for c in candidates[:2]) or None,
        fix=f"run `stbench data download {dataset_name}` or pass dataset.panel_file=PATH",
    )


def resolve_root(root: str | None, dataset_name: str) -> Path:
    """``dataset.root`` if set, else the download folder of ``dataset_name``."""
    if root:
        return Path(root).expanduser()
    from stbench.io.download import default_root

    return default_root(dataset_name)


def require_root(root: Path, dataset_name: str) -> Path:
    """``root`` if it is a folder, else a DataError that says how to download the dataset."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise DataError(f"{dataset_name} data folder {what}", where=str(root),
                        fix=f"run `stbench data download {dataset_name} --root DIR` or set "
                            "dataset.root=DIR")
    return root


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for n in names:
        if n in seen and n not in dupes:
            dupes.append(n)
        seen.add(n)
    return dupes


def check_unique(names: Sequence[str], what: str, where: str | Path, fix: str) -> None:
    """A DataError if ``names`` repeats an entry."""
    dupes = _duplicates([str(n) for n in names])
    if dupes:
        raise DataError(f"duplicate {what}: {len(dupes)} repeated, e.g. {dupes[:3]}",
                        where=str(where), fix=fix)


# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------


def check_counts(matrix, where: str | Path, fix: str | None = None) -> None:
    """Raw counts must be finite, non-negative integers (dense or sparse)."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    fix = fix or "provide the raw (unnormalised) integer count file"
    if values.size == 0:
        return
    if values.dtype.kind in "iub":
        if values.dtype.kind == "i" and (values < 0).any():
            raise DataError("counts contain negative values", where=str(where), fix=fix)
        return
    if values.dtype.kind != "f":
        raise DataError(f"counts are not numeric (dtype {values.dtype})", where=str(where), fix=fix)
    if not np.isfinite(values).all():
        n = int((~np.isfinite(values)).sum())
        raise DataError(f"counts contain {n} NaN or infinite value(s)", where=str(where), fix=fix)
    if (values < 0).any():
        raise DataError(f"counts contain {int((values < 0).sum())} negative value(s)",
                        where=str(where), fix=fix)
    frac = np.abs(values - np.round(values))
    if (frac > 1e-6).any():
        raise DataError(
            f"counts are not integers ({int((frac > 1e-6).sum())} non-integer values; "
            "normalised expression?)", where=str(where), fix=fix)


def to_count_matrix(matrix) -> sp.csr_matrix:
    """Checked counts as a CSR int32 matrix."""
    m = sp.csr_matrix(matrix)
    if m.dtype != np.int32:
        data = np.round(m.data) if m.dtype.kind == "f" else m.data
        if data.size and data.max() > np.iinfo(np.int32).max:
            m = sp.csr_matrix((data.astype(np.int64), m.indices, m.indptr), shape=m.shape)
        else:
            m = sp.csr_matrix((data.astype(np.int32), m.indices, m.indptr), shape=m.shape)
    m.eliminate_zeros()
    return m


# --------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------


def pitch_microns_per_pixel(xy: np.ndarray, pitch_um: float, where: str | Path) -> float:
    """Microns per pixel from the median nearest-neighbour spot distance (the grid pitch)."""
    from scipy.spatial import cKDTree

    pts = np.asarray(xy, np.float64)
    if len(pts) < 2:
        raise DataError("fewer than 2 spots: cannot measure the spot pitch", where=str(where),
                        fix="set dataset.microns_per_pixel explicitly")
    d, _ = cKDTree(pts).query(pts, k=2)
    pitch_px = float(np.median(d[:, 1]))
    if not np.isfinite(pitch_px) or pitch_px <= 0:
        raise DataError("spots share coordinates: cannot measure the spot pitch",
                        where=str(where), fix="set dataset.microns_per_pixel explicitly")
    return pitch_um / pitch_px


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def image_header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, without PIL's decompression-bomb warning or error
    for large slides (full-resolution H&E often exceeds PIL's 89-megapixel default)."""
    from PIL import Image, UnidentifiedImageError
    from stbench.io.images import _MAX_PIXELS

    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = _MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except FileNotFoundError as exc:
        raise DataError("image file not found", where=str(path), fix="check dataset.root") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image ({exc})", where=str(path),
                        fix="re-download the image file") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def file_image(path: Path) -> FileImage:
    """A FileImage whose size was checked (header) already."""
    size = check_image_file(path)
    image = FileImage(path)
    image._size = size
    return image


def check_image_file(path: Path) -> tuple[int, int]:
    """Size of an image file; a DataError if it is missing, unreadable or a truncated JPEG.

    Only the header is decoded (and, for JPEG, the end-of-image marker looked for), so this is
    cheap enough to run on every slide at load time.
    """
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DataError(f"image file {what}", where=str(path),
                        fix="check dataset.root or re-download the images")
    size = image_header_size(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            n = fh.tell()
            fh.seek(max(0, n - 4096))
            tail = fh.read()
        if b"\xff\xd9" not in tail:
            raise DataError("JPEG image is truncated (no end-of-image marker)", where=str(path),
                            fix="re-download the image file")
    return size


# --------------------------------------------------------------------------------------------
# Slides
# --------------------------------------------------------------------------------------------


def patch_side_px(patch_um: float, microns_per_pixel: float) -> int:
    """Side in pixels of the ``patch_um`` square the harness cuts (stbench.features.patches)."""
    from stbench.features.patches import patch_size_px

    return patch_size_px(patch_um, microns_per_pixel)


def _check_spot_centres(name: str, xy: np.ndarray, microns_per_pixel: float,
                        size: tuple[int, int], spot_ids: Sequence[str], coords_where: str | Path,
                        image_where: str | Path) -> None:
    """A DataError if a spot centre is not finite or lies outside the image, or the pixel size
    is not positive."""
    if not np.isfinite(xy).all():
        raise DataError(f"section {name}: spot coordinates contain NaN or infinite values",
                        where=str(coords_where), fix="re-download the spot coordinate file")
    if not (np.isfinite(microns_per_pixel) and microns_per_pixel > 0):
        raise DataError(f"section {name}: microns per pixel is {microns_per_pixel}",
                        where=str(coords_where), fix="set dataset.microns_per_pixel to a positive number")
    width, height = size
    outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"section {name}: {int(outside.sum())} spot centre(s) lie outside the "
            f"{width} x {height} image, e.g. {spot_ids[i]} at ({xy[i, 0]:.0f}, {xy[i, 1]:.0f})",
            where=str(coords_where),
            fix=f"check that the coordinates belong to this image ({image_where})")


def _inside_border(name: str, xy: np.ndarray, size: tuple[int, int], patch_um: float,
                   microns_per_pixel: float, image_where: str | Path) -> tuple[np.ndarray, int]:
    """Mask of the spots whose ``patch_um`` square lies inside the image, and how many do not.

    Warns (:class:`DataWarning`, attributed to the caller of :func:`make_slide`'s caller) when
    spots are left out.
    """
    keep = np.ones(len(xy), bool)
    if not (patch_um and patch_um > 0):
        return keep, 0
    width, height = size
    side = patch_side_px(patch_um, microns_per_pixel)
    half = side // 2
    x0 = np.round(xy[:, 0]).astype(np.int64) - half
    y0 = np.round(xy[:, 1]).astype(np.int64) - half
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + side <= width) & (y0 + side <= height)
    n_border = int((~inside).sum())
    if n_border:
        keep &= inside
        warnings.warn(
            f"section {name}: dropped {n_border} of {len(xy)} spots whose {patch_um:g} um "
            f"patch ({side} px) crosses the image border [{image_where}]",
            DataWarning, stacklevel=4)
    return keep, n_border


def make_slide(
    *,
    name: str,
    patient: str,
    counts: sp.csr_matrix,
    spot_ids: Sequence[str],
    genes: Sequence[str],
    xy: np.ndarray,
    grid: np.ndarray,
    image: ImageSource,
    image_where: str | Path,
    microns_per_pixel: float,
    spot_diameter_um: float,
    coords_where: str | Path,
    patch_um: float,
    min_spots: int,
    obs: dict[str, Sequence] | None = None,
    record: dict | None = None,
) -> Slide:
    """Check coordinates against the image, drop border spots, build the Slide.

    * spot centres outside the image: DataError (wrong image or wrong coordinates);
    * spots whose ``patch_um`` square crosses the image border: dropped with a
      :class:`DataWarning` that counts them (count in ``uns['stbench']['dropped_border']``);
    * fewer than ``min_spots`` spots left: DataError.
    """
    import anndata as ad
    import pandas as pd

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    grid = np.asarray(grid, np.int64).reshape(-1, 2)
    size = image.size
    _check_spot_centres(name, xy, microns_per_pixel, size, spot_ids, coords_where, image_where)
    keep, n_border = _inside_border(name, xy, size, patch_um, microns_per_pixel, image_where)
    n_kept = int(keep.sum())
    if n_kept < min_spots:
        raise DataError(
            f"section {name} has {n_kept} usable spot(s) (< dataset.min_spots={min_spots})",
            where=str(coords_where),
            fix="leave the section out with dataset.sections=[...] or lower dataset.min_spots")
    obs_df = pd.DataFrame(index=pd.Index([str(s) for s in spot_ids], name="spot"))
    for key, values in (obs or {}).items():
        obs_df[key] = list(values)
    adata = ad.AnnData(X=counts, obs=obs_df, var=pd.DataFrame(index=pd.Index(list(genes), name="gene")))
    adata.obsm["spatial"] = xy
    adata.obsm["grid"] = grid
    info = dict(record or {})
    info.update({"section": name, "patient": patient, "microns_per_pixel": float(microns_per_pixel),
                 "dropped_border": n_border, "image_size": [int(size[0]), int(size[1])]})
    if n_border:
        adata = adata[keep].copy()
    adata.uns["stbench"] = info
    return Slide(name=name, patient=patient, adata=adata, image=image,
                 microns_per_pixel=float(microns_per_pixel), spot_diameter_um=float(spot_diameter_um))


def check_gene_overlap(slides: Sequence[Slide], where: str | Path) -> None:
    """A DataError if the sections share no gene (different references or id types)."""
    if len(slides) < 2:
        return
    common = set(slides[0].adata.var_names)
    for s in slides[1:]:
        common &= set(s.adata.var_names)
    if not common:
        names = [s.name for s in slides]
        raise DataError(
            f"sections {names} share no gene name",
            where=str(where),
            fix="use count files with the same gene identifiers (symbols, not a mix with "
                "Ensembl ids) or select compatible sections with dataset.sections")


def select_names(available: Sequence[str], wanted: Sequence[str], where: str | Path,
                 what: str = "sections") -> list[str]:
    """``wanted`` (in that order) if all are available; all available when empty."""
    if not wanted:
        return list(available)
    missing = [w for w in wanted if w not in available]
    if missing:
        key = str(where) if str(where).startswith("dataset.") else "dataset.sections"
        raise ConfigError(f"{what} {missing} not found", where=str(where),
                          fix=f"choose from {sorted(available)} in {key}")
    return list(wanted)


def finish(slides: list[Slide], where: str | Path) -> list[Slide]:
    """Dataset-level checks after reading every section."""
    check_gene_overlap(slides, where)
    return slides


__all__ = [
    "DataWarning",
    "check_counts",
    "check_gene_overlap",
    "check_image_file",
    "check_unique",
    "file_image",
    "find_literature_panel",
    "finish",
    "make_slide",
    "open_text",
    "pitch_microns_per_pixel",
    "read_gene_list",
    "require_file",
    "require_root",
    "resolve_root",
    "select_names",
    "to_count_matrix",
]
