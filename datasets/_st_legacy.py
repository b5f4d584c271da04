"""Shared reading and checking for the dataset readers.

Two parts:

* the legacy Spatial Transcriptomics (ST, 2016 arrays: 100 um spots, 200 um centre to centre)
  file layout used by both ``her2st`` and ``cscc``: a count table (spots x genes, raw counts,
  spot ids ``"XxY"`` in the first column, tab separated, gzipped or not) and a spot file from
  the ST spot detector (columns ``x y new_x new_y pixel_x pixel_y [selected]``, ``x``/``y`` the
  array position, ``pixel_x``/``pixel_y`` the spot centre in full-resolution image pixels);
* the checks every reader runs at read time (counts, unique names, coordinates inside the
  image, patches inside the image, enough spots, a common gene set, literature panels), each
  failing with a one-line :class:`~stbench.errors.DataError` that names the file and the fix.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from stbench.data import FileImage, ImageSource, Slide
from stbench.errors import ConfigError, DataError

log = logging.getLogger("stbench.datasets")

#: Centre-to-centre distance of legacy ST spots (um).
LEGACY_PITCH_UM = 200.0
#: Diameter of legacy ST spots (um).
LEGACY_SPOT_UM = 100.0

_SPOT_ID = re.compile(r"^\s*(-?\d+(?:\.\d+)?)x(-?\d+(?:\.\d+)?)\s*$")


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
    from stbench.download import default_root

    return default_root(dataset_name)


def require_root(root: Path, dataset_name: str) -> Path:
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


def _read_counts_fast(path: Path, n_genes: int) -> tuple[list[str], np.ndarray] | None:
    """Spot ids and values of a well-formed count table with numpy's C parser.

    About twice as fast as pandas on 15,000-column tables. Returns None for anything
    irregular (ragged rows, non-numeric cells, no rows); the pandas path then reads the file
    again and names the problem.
    """
    try:
        with open_text(path) as fh:
            fh.readline()
            lines = [line for line in fh.read().splitlines() if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    if not lines:
        return None
    ids, rows = [], []
    for line in lines:
        head, sep, rest = line.partition("\t")
        if not sep:
            return None
        ids.append(head.strip().strip('"'))
        rows.append(rest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.loadtxt(io.StringIO("\n".join(rows)), delimiter="\t", dtype=np.float64,
                                ndmin=2)
    except ValueError:
        return None
    if values.shape != (len(ids), n_genes):
        return None
    return ids, values


def read_count_table(path: Path) -> tuple[list[str], list[str], sp.csr_matrix]:
    """A legacy-ST count table: spots x genes, spot ids in the first column.

    Returns:
        (spot ids, gene names, CSR int32 counts).

    Raises:
        DataError: Unreadable file, duplicate spot ids or gene names, or counts that are not
            finite non-negative integers.
    """
    import pandas as pd

    fix_file = "re-download the count file (spots x genes, tab separated, raw counts)"
    try:
        with open_text(path) as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except FileNotFoundError as exc:
        raise DataError("count file not found", where=str(path), fix="check dataset.root") from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read count file ({exc})", where=str(path), fix=fix_file) from exc
    genes = [g.strip().strip('"') for g in header[1:]]
    if len(genes) == 0 or (len(genes) == 1 and not genes[0]):
        raise DataError("count file has no gene column", where=str(path), fix=fix_file)
    check_unique(genes, "gene names in the header", path,
                 "make gene names unique (sum or drop the repeated columns)")
    fast = _read_counts_fast(path, len(genes))
    if fast is not None:
        ids, values = fast
        check_unique(ids, "spot ids", path, "each spot must appear once in the count file")
        check_counts(values, path)
        return ids, genes, to_count_matrix(values)
    try:
        with open_text(path) as fh:
            df = pd.read_csv(fh, sep="\t", header=None, skiprows=1,
                             names=list(range(len(genes) + 1)), index_col=0,
                             dtype={0: str}, engine="c", low_memory=False)
    except pd.errors.ParserError as exc:  # a ValueError too: ragged rows, bad quoting
        raise DataError(f"cannot parse count file ({str(exc).splitlines()[0]})",
                        where=str(path), fix=fix_file) from exc
    except (ValueError, TypeError) as exc:
        raise DataError(f"count file holds non-numeric values ({str(exc).splitlines()[0]})",
                        where=str(path), fix=fix_file) from exc
    except (OSError, EOFError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot parse count file ({str(exc).splitlines()[0]})",
                        where=str(path), fix=fix_file) from exc
    if df.shape[1] != len(genes):
        raise DataError(f"count file rows have {df.shape[1]} values but the header names "
                        f"{len(genes)} genes", where=str(path), fix=fix_file)
    if df.shape[0] == 0:
        raise DataError("count file has no spot row", where=str(path), fix=fix_file)
    non_numeric = [j for j, dt in zip(df.columns, df.dtypes) if dt.kind not in "iufb"]
    if non_numeric:
        j = non_numeric[0]
        col = df[j]
        bad = col[pd.to_numeric(col, errors="coerce").isna() & col.notna()]
        example = f" e.g. {bad.iloc[0]!r} in spot {bad.index[0]!r}" if len(bad) else ""
        raise DataError(f"count file holds non-numeric values in {len(non_numeric)} gene "
                        f"column(s) (first: {genes[j - 1]!r}{example})", where=str(path), fix=fix_file)
    ids = [str(i).strip() for i in df.index]
    check_unique(ids, "spot ids", path, "each spot must appear once in the count file")
    values = df.to_numpy()
    check_counts(values, path)
    return ids, genes, to_count_matrix(values)


def parse_spot_id(spot_id: str) -> tuple[int, int] | None:
    """``"12x20"`` (or ``"12.0x20.0"``) -> (12, 20); None if it is not of that form."""
    m = _SPOT_ID.match(spot_id)
    if not m:
        return None
    return int(round(float(m.group(1)))), int(round(float(m.group(2))))


def read_spot_file(path: Path):
    """A legacy-ST spot file as a DataFrame indexed by spot id ``"XxY"`` (rounded x, y).

    Columns kept: ``x y pixel_x pixel_y`` (required), ``new_x new_y`` (optional, the
    sub-spot array position used for the pixel fit), ``selected`` (optional; all selected
    when absent).
    """
    import pandas as pd

    fix = "re-download the spot file (columns x y new_x new_y pixel_x pixel_y selected)"
    try:
        with open_text(path) as fh:
            df = pd.read_csv(fh, sep="\t", engine="c")
    except FileNotFoundError as exc:
        raise DataError("spot file not found", where=str(path), fix="check dataset.root") from exc
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot parse spot file ({str(exc).splitlines()[0]})",
                        where=str(path), fix=fix) from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("x", "y", "pixel_x", "pixel_y") if c not in df.columns]
    if missing:
        raise DataError(f"spot file lacks column(s) {missing}", where=str(path), fix=fix)
    for c in ("x", "y", "pixel_x", "pixel_y", "new_x", "new_y", "selected"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df[["x", "y", "pixel_x", "pixel_y"]].isna().any(axis=1)
    if bad.any():
        raise DataError(f"spot file has {int(bad.sum())} row(s) with missing or non-numeric "
                        "coordinates", where=str(path), fix=fix)
    if "selected" not in df.columns:
        df["selected"] = 1
    df["selected"] = df["selected"].fillna(0).astype(int)
    gx = np.round(df["x"].to_numpy(np.float64)).astype(np.int64)
    gy = np.round(df["y"].to_numpy(np.float64)).astype(np.int64)
    df["grid_x"], df["grid_y"] = gx, gy
    ids = [f"{a}x{b}" for a, b in zip(gx, gy)]
    check_unique(ids, "spot ids (rounded x, y)", path, "each array position must appear once")
    df.index = pd.Index(ids, name="spot")
    return df


def fit_microns_per_pixel(array_xy: np.ndarray, pixel_xy: np.ndarray, pitch_um: float,
                          where: str | Path) -> tuple[float, float]:
    """Microns per pixel from the spot grid: least squares ``pixel = A [x, y, 1]``.

    The pitch in pixels is the mean length of the two column vectors of ``A`` (one array step
    along x and along y); ``pitch_um`` is the physical centre-to-centre distance.

    Returns:
        (microns per pixel, RMS residual of the fit in pixels).
    """
    a = np.asarray(array_xy, np.float64)
    p = np.asarray(pixel_xy, np.float64)
    fix = "set dataset.microns_per_pixel explicitly"
    if len(a) < 3:
        raise DataError(f"only {len(a)} spot(s): cannot fit the spot grid to the image",
                        where=str(where), fix=fix)
    design = np.column_stack([a, np.ones(len(a))])
    coef, _, rank, _ = np.linalg.lstsq(design, p, rcond=None)
    if rank < 3:
        raise DataError("the spots lie on one line: cannot fit the spot grid to the image",
                        where=str(where), fix=fix)
    pitch_px = 0.5 * (np.linalg.norm(coef[0]) + np.linalg.norm(coef[1]))
    if not np.isfinite(pitch_px) or pitch_px <= 0:
        raise DataError("the spot grid fit gave no pitch", where=str(where), fix=fix)
    rms = float(np.sqrt(np.mean(np.sum((design @ coef - p) ** 2, axis=1))))
    return float(pitch_um / pitch_px), rms


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
    from stbench.imageio import _MAX_PIXELS

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
    """Side in pixels of the ``patch_um`` square the harness cuts (stbench.features)."""
    from stbench.features import patch_size_px

    return patch_size_px(patch_um, microns_per_pixel)


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
    if not np.isfinite(xy).all():
        raise DataError(f"section {name}: spot coordinates contain NaN or infinite values",
                        where=str(coords_where), fix="re-download the spot coordinate file")
    if not (np.isfinite(microns_per_pixel) and microns_per_pixel > 0):
        raise DataError(f"section {name}: microns per pixel is {microns_per_pixel}",
                        where=str(coords_where), fix="set dataset.microns_per_pixel to a positive number")
    width, height = image.size
    outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"section {name}: {int(outside.sum())} spot centre(s) lie outside the "
            f"{width} x {height} image, e.g. {spot_ids[i]} at ({xy[i, 0]:.0f}, {xy[i, 1]:.0f})",
            where=str(coords_where),
            fix=f"check that the coordinates belong to this image ({image_where})")
    keep = np.ones(len(xy), bool)
    n_border = 0
    if patch_um and patch_um > 0:
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
                DataWarning, stacklevel=3)
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
                 "dropped_border": n_border, "image_size": [int(width), int(height)]})
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


def load_legacy_section(
    *,
    name: str,
    patient: str,
    counts_path: Path,
    spots_path: Path,
    image_path: Path,
    microns_per_pixel: float | None,
    pitch_um: float,
    patch_um: float,
    min_spots: int,
    unmatched_counts: str,
    labels: dict[str, str] | None = None,
    extra_record: dict | None = None,
) -> Slide:
    """One legacy-ST section: counts x spot file x image.

    Spots are the count rows whose id is in the spot file with ``selected == 1``. Count rows
    that the spot file lists as unselected are dropped silently (counted); count rows absent
    from the spot file raise a DataError (``unmatched_counts="error"``) or are dropped with a
    warning (``"drop"``).
    """
    if unmatched_counts not in ("error", "drop"):
        raise ConfigError(f"unknown dataset.unmatched_counts={unmatched_counts!r}",
                          fix="use error or drop")
    ids, genes, counts = read_count_table(counts_path)
    spots = read_spot_file(spots_path)
    image = file_image(image_path)
    keys = []
    for i in ids:
        parsed = parse_spot_id(i)
        keys.append(f"{parsed[0]}x{parsed[1]}" if parsed else None)
    in_file = np.array([k is not None and k in spots.index for k in keys])
    n_unmatched = int((~in_file).sum())
    if n_unmatched == len(ids):
        raise DataError(f"section {name}: no count row matches a spot of the spot file "
                        f"(count ids like {ids[0]!r})", where=str(counts_path),
                        fix=f"check that the count and spot files belong together ({spots_path.name})")
    if n_unmatched:
        examples = [ids[i] for i in np.flatnonzero(~in_file)[:3]]
        if unmatched_counts == "error":
            raise DataError(
                f"section {name}: {n_unmatched} count row(s) match no spot of the spot file, "
                f"e.g. {examples}", where=str(counts_path),
                fix=f"check {spots_path.name}, or set dataset.unmatched_counts=drop to drop them")
        log.info("section %s: dropped %d count row(s) that match no spot of %s [%s]",
                 name, n_unmatched, spots_path.name, counts_path)
    matched_keys = [k for k, ok in zip(keys, in_file) if ok]
    selected = spots.loc[matched_keys, "selected"].to_numpy() == 1
    rows = np.flatnonzero(in_file)[selected]
    n_unselected = int((~selected).sum())
    keep_keys = [keys[i] for i in rows]
    sub = spots.loc[keep_keys]
    xy = sub[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    grid = sub[["grid_x", "grid_y"]].to_numpy(np.int64)
    how = "dataset.microns_per_pixel"
    rms = None
    if microns_per_pixel is None:
        sel = spots[spots["selected"] == 1]
        if "new_x" in sel.columns and "new_y" in sel.columns and sel[["new_x", "new_y"]].notna().all().all():
            arr = sel[["new_x", "new_y"]].to_numpy(np.float64)
        else:
            arr = sel[["x", "y"]].to_numpy(np.float64)
        microns_per_pixel, rms = fit_microns_per_pixel(arr, sel[["pixel_x", "pixel_y"]].to_numpy(),
                                                       pitch_um, spots_path)
        how = f"grid fit, {pitch_um:g} um pitch"
    obs = {"array_x": grid[:, 0], "array_y": grid[:, 1]}
    if labels is not None:
        obs["label"] = [labels.get(k, "") for k in keep_keys]
    record = {"counts_file": str(counts_path), "spot_file": str(spots_path),
              "image_file": str(image_path), "mpp_source": how,
              "unselected_dropped": n_unselected, "unmatched_dropped": n_unmatched,
              "count_rows": len(ids)}
    if rms is not None:
        record["grid_fit_rms_px"] = rms
    record.update(extra_record or {})
    return make_slide(
        name=name, patient=patient, counts=counts[rows], spot_ids=[ids[i] for i in rows],
        genes=genes, xy=xy, grid=grid, image=image, image_where=image_path,
        microns_per_pixel=float(microns_per_pixel), spot_diameter_um=LEGACY_SPOT_UM,
        coords_where=spots_path, patch_um=patch_um, min_spots=min_spots, obs=obs, record=record)


def read_labels(path: Path) -> dict[str, str]:
    """Pathologist labels (``ST-pat/lbl/<sec>_labeled_coordinates.tsv``): spot id -> label."""
    import pandas as pd

    try:
        with open_text(path) as fh:
            df = pd.read_csv(fh, sep="\t")
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot parse label file ({str(exc).splitlines()[0]})", where=str(path),
                        fix="re-download the ST-pat/lbl files or remove the broken one") from exc
    if not {"x", "y", "label"} <= set(df.columns):
        raise DataError("label file lacks columns x, y, label", where=str(path),
                        fix="re-download the ST-pat/lbl files or remove the broken one")
    df = df.dropna(subset=["x", "y"])
    out: dict[str, str] = {}
    for x, y, lab in zip(df["x"], df["y"], df["label"]):
        out[f"{int(round(float(x)))}x{int(round(float(y)))}"] = "" if pd.isna(lab) else str(lab)
    return out


def finish(slides: list[Slide], where: str | Path) -> list[Slide]:
    """Dataset-level checks after reading every section."""
    check_gene_overlap(slides, where)
    return slides


__all__ = [
    "DataWarning",
    "LEGACY_PITCH_UM",
    "LEGACY_SPOT_UM",
    "check_counts",
    "check_gene_overlap",
    "check_image_file",
    "check_unique",
    "find_literature_panel",
    "fit_microns_per_pixel",
    "load_legacy_section",
    "make_slide",
    "pitch_microns_per_pixel",
    "read_count_table",
    "read_gene_list",
    "read_labels",
    "read_spot_file",
    "resolve_root",
]
