"""The legacy Spatial Transcriptomics file format, read by ``her2st`` and ``cscc``.

Legacy ST (2016 arrays: 100 um spots, 200 um centre to centre) ships a count table (spots x
genes, raw counts, spot ids ``"XxY"`` in the first column, tab separated, gzipped or not) and a
spot file from the ST spot detector (columns ``x y new_x new_y pixel_x pixel_y [selected]``,
``x``/``y`` the array position, ``pixel_x``/``pixel_y`` the spot centre in full-resolution
image pixels). The checks shared with the other readers are in
:mod:`stbench.datasets._readers`.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from stbench.data import Slide
from stbench.datasets._readers import (
    check_counts,
    check_unique,
    file_image,
    make_slide,
    open_text,
    to_count_matrix,
)
from stbench.errors import ConfigError, DataError

log = logging.getLogger("stbench.datasets")


#: Centre-to-centre distance of legacy ST spots (um).
LEGACY_PITCH_UM = 200.0
#: Diameter of legacy ST spots (um).
LEGACY_SPOT_UM = 100.0

_SPOT_ID = re.compile(r"^\s*(-?\d+(?:\.\d+)?)x(-?\d+(?:\.\d+)?)\s*$")


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
    except (OSError, EOFError) as exc:
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


def _spot_keys(ids: list[str]) -> list[str | None]:
    """Count-table spot ids normalised to the spot file's ``"XxY"`` index (None if malformed)."""
    keys: list[str | None] = []
    for i in ids:
        parsed = parse_spot_id(i)
        keys.append(f"{parsed[0]}x{parsed[1]}" if parsed else None)
    return keys


def _match_count_rows(name: str, ids: list[str], keys: list[str | None], spots,
                      counts_path: Path, spots_path: Path, unmatched_counts: str) -> np.ndarray:
    """Mask of the count rows found in the spot file; a DataError (or a log line, with
    ``unmatched_counts="drop"``) for the others."""
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
    return in_file


def _grid_fit(spots, pitch_um: float, spots_path: Path) -> tuple[float, float]:
    """Microns per pixel and RMS residual from the selected spots of the spot file, fitted on
    the sub-spot positions ``new_x new_y`` where every selected spot has them, else ``x y``."""
    sel = spots[spots["selected"] == 1]
    if "new_x" in sel.columns and "new_y" in sel.columns and sel[["new_x", "new_y"]].notna().all().all():
        arr = sel[["new_x", "new_y"]].to_numpy(np.float64)
    else:
        arr = sel[["x", "y"]].to_numpy(np.float64)
    return fit_microns_per_pixel(arr, sel[["pixel_x", "pixel_y"]].to_numpy(), pitch_um, spots_path)


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
    keys = _spot_keys(ids)
    in_file = _match_count_rows(name, ids, keys, spots, counts_path, spots_path, unmatched_counts)
    n_unmatched = int((~in_file).sum())
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
        microns_per_pixel, rms = _grid_fit(spots, pitch_um, spots_path)
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


__all__ = [
    "LEGACY_PITCH_UM",
    "LEGACY_SPOT_UM",
    "fit_microns_per_pixel",
    "load_legacy_section",
    "parse_spot_id",
    "read_count_table",
    "read_labels",
    "read_spot_file",
]
