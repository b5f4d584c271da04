"""Bad input, table-driven: every reader and the CLI refuse malformed input with exit code 2.

Each row builds ONE malformed input in ``tmp_path`` (from the generators of
``tests/fixtures/make_fixtures.py``, so the table needs no real data and runs anywhere), runs
the CLI and checks the contract of DESIGN.md: exit code 2, ONE line on stderr and no traceback,
the line names the file or the setting at fault, and no result JSON marked complete.

Rows whose input is legitimately accepted end their id with ``-accepted`` and check the
documented behaviour instead (exit code 0 and what the reader made of it).

Most rows call ``stbench.cli.app.main`` in-process (an interpreter start costs 3-5 s here); the
rows marked ``sub`` run the real console entry point (``python -m stbench``) in a subprocess
and assert the same things.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fixture_data import fixture_generator
from stbench.cli.app import main


gen = fixture_generator()

#: (argv, what the error line must contain: one string or a tuple of them) or
#: (argv, check of an accepted input's stdout)
Expect = tuple[list[str], "str | tuple[str, ...] | Callable[[str], None]"]
CASES: list = []


def case(case_id: str, *, sub: bool = False):
    """Register a row; ``sub`` rows run the console entry point in a subprocess."""

    def register(build: Callable[[Path], Expect]):
        marks = [pytest.mark.slow] if sub else []
        CASES.append(pytest.param(build, sub, id=case_id, marks=marks))
        return build

    return register


# --------------------------------------------------------------------------------------------
# Builders' helpers
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _write_like(path: Path, data: bytes, gz: bool | None = None) -> None:
    """Write ``data`` gzipped if ``path`` is gzipped now (or ``gz`` says so)."""
    if gz is None:
        gz = path.exists() and path.read_bytes()[:2] == b"\x1f\x8b"
    path.write_bytes(gzip.compress(data) if gz else data)


def _edit_lines(path: Path, edit: Callable[[list[str]], None]) -> None:
    lines = _read(path).decode("utf-8").split("\n")
    edit(lines)
    _write_like(path, "\n".join(lines).encode("utf-8"))


def _set_cell(path: Path, row: int, col: int, value: str) -> None:
    def edit(lines):
        cells = lines[row].split("\t")
        cells[col] = value
        lines[row] = "\t".join(cells)

    _edit_lines(path, edit)


def _info(name: str, root: Path, *extra: str) -> list[str]:
    return ["data", "info", name, f"dataset.root={root}", *extra]


def _run(tmp: Path, method: str, dataset: str, *overrides: str) -> list[str]:
    return ["run", "--method", method, "--dataset", dataset, "--no-progress",
            "--json", str(tmp / "out.json"), f"tracking.dir={tmp / 'runs'}",
            "encoder=handcrafted", *overrides]


def _demo_run(tmp: Path, *overrides: str) -> list[str]:
    return _run(tmp, "bilinear", "demo", "dataset.n_slides=2", "dataset.n_spots=20",
                "dataset.n_genes=20", *overrides)


def _her2st(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """(root, counts, spot file, image) of section A1 of a generated her2st folder."""
    root = tmp / "her2st"
    gen.make_her2st(root, sections=("A1", "B1"))
    image = next((root / "ST-imgs" / "A" / "A1").glob("*.jpg"))
    return (root, root / "ST-cnts" / "A1.tsv.gz", root / "ST-spotfiles" / "A1_selection.tsv",
            image)


def _cscc(tmp: Path) -> Path:
    root = tmp / "cscc"
    gen.make_cscc(root, sections=("P2_ST_rep1", "P10_ST_rep1"))
    return root


def _hest(tmp: Path) -> Path:
    root = tmp / "hest"
    gen.make_hest(root, samples=[{"id": "TENX901", "organ": "Bowel", "st_technology": "Visium",
                                  "patient": "P1", "dataset_title": "Demo"}])
    return root


def _visium(tmp: Path) -> Path:
    """A generated Space Ranger 1.0.0 output folder."""
    root = tmp / "sample1"
    gen.make_visium(root)
    return root


def _h5ad(path: Path, *, genes: list[str] | None = None, mutate=None, image: str | None = "RGB",
          float_x: bool = False) -> Path:
    """One AnnData section (6 x 5 spots, 40 px = 100 um pitch) and its PNG image beside it."""
    import anndata as ad
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    genes = list(genes or gen.GENES[:12])
    gc, gr = np.meshgrid(np.arange(6), np.arange(5))
    xy = np.column_stack([40 + 40 * gc.ravel(), 40 + 40 * gr.ravel()]).astype(np.float64)
    counts = rng.poisson(3.0, size=(len(xy), len(genes)))
    counts[:, 0] += 1
    adata = ad.AnnData(X=counts.astype(np.float32 if float_x else np.int32),
                       obs=pd.DataFrame(index=[f"spot{i}" for i in range(len(xy))]),
                       var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = xy
    if mutate is not None:
        changed = mutate(adata)
        adata = adata if changed is None else changed
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    if image:
        h, w = 40 * 2 + 4 * 40 + 1, 40 * 2 + 5 * 40 + 1
        rgb = np.clip(rng.normal([220, 160, 200], 20, (h, w, 3)), 0, 255).astype(np.uint8)
        if image == "RGB":
            img = Image.fromarray(rgb)
        elif image == "RGBA":
            img = Image.fromarray(np.dstack([rgb, np.full((h, w), 200, np.uint8)]), "RGBA")
        elif image == "L":
            img = Image.fromarray(rgb[:, :, 0])
        elif image == "I;16":
            img = Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257))
        else:
            raise ValueError(image)
        img.save(path.with_suffix(".png"))
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _jpeg_claims(path: Path, width: int, height: int) -> None:
    """Patch a JPEG's frame header (SOF0/SOF2) to claim other dimensions."""
    data = bytearray(path.read_bytes())
    i = 2
    while i < len(data) - 9:
        assert data[i] == 0xFF, "not a JPEG segment"
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC2):
            data[i + 5:i + 7] = height.to_bytes(2, "big")
            data[i + 7:i + 9] = width.to_bytes(2, "big")
            path.write_bytes(bytes(data))
            return
        i += 2 + length
    raise AssertionError("no frame header found")


def _sixteen_genes_check(out: str) -> None:
    assert "genes in every section: 16" in out


# --------------------------------------------------------------------------------------------
# her2st: count table
# --------------------------------------------------------------------------------------------


@case("her2st-counts-truncated-gzip", sub=True)
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    data = counts.read_bytes()
    counts.write_bytes(data[: len(data) // 2])
    return _info("her2st", root), str(counts)


@case("her2st-counts-comma-delimited")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _write_like(counts, _read(counts).replace(b"\t", b","))
    return _info("her2st", root), str(counts)


@case("her2st-counts-header-only")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _edit_lines(counts, lambda lines: lines.__delitem__(slice(1, None)))
    return _info("her2st", root), str(counts)


@case("her2st-counts-0-byte-file")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    counts.write_bytes(b"")
    return _info("her2st", root), str(counts)


@case("her2st-counts-nan")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _set_cell(counts, 3, 2, "NaN")
    return _info("her2st", root), str(counts)


@case("her2st-counts-negative")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _set_cell(counts, 3, 2, "-3")
    return _info("her2st", root), str(counts)


@case("her2st-counts-normalised-not-integer")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _set_cell(counts, 3, 2, "0.731")
    return _info("her2st", root), str(counts)


@case("her2st-counts-non-numeric-cell")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _set_cell(counts, 3, 2, "n/a?")
    return _info("her2st", root), str(counts)


@case("her2st-counts-ragged-row")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)

    def edit(lines):
        lines[4] += "\t7\t8"

    _edit_lines(counts, edit)
    return _info("her2st", root), (str(counts), "cannot parse")


@case("her2st-counts-duplicate-spot-ids")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _edit_lines(counts, lambda lines: lines.insert(2, lines[1]))
    return _info("her2st", root), str(counts)


@case("her2st-counts-duplicate-gene-names")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _set_cell(counts, 0, 2, gen.GENES[0])
    return _info("her2st", root), str(counts)


@case("her2st-counts-non-utf8-latin1")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    text = _read(counts).decode("utf-8").replace("ERBB2", "\u00c9RBB2", 1)
    _write_like(counts, text.encode("latin-1"))
    return _info("her2st", root), str(counts)


@case("her2st-counts-unicode-gene-names-accepted")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    for c in (counts, root / "ST-cnts" / "B1.tsv.gz"):  # same genes in both sections
        text = _read(c).decode("utf-8").replace("ERBB2", "\u00c9RBB2-\u03b1", 1)
        _write_like(c, text.encode("utf-8"))

    def check(out: str) -> None:
        from stbench.datasets.her2st import Her2stConfig, Her2stDataset

        _sixteen_genes_check(out)
        slides = Her2stDataset(Her2stConfig(root=str(root))).load()
        assert all("\u00c9RBB2-\u03b1" in s.adata.var_names for s in slides)

    return _info("her2st", root), check


@case("her2st-counts-crlf-line-ends-accepted")
def _(tmp):
    root, counts, _, _ = _her2st(tmp)
    _write_like(counts, _read(counts).replace(b"\n", b"\r\n"))
    return _info("her2st", root), _sixteen_genes_check


# --------------------------------------------------------------------------------------------
# her2st: spot file, image, folder layout
# --------------------------------------------------------------------------------------------


@case("her2st-spots-missing-column")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    _set_cell(spots, 0, 4, "px")
    return _info("her2st", root), str(spots)


@case("her2st-spots-coordinate-outside-image")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    _set_cell(spots, 10, 4, "99999.0")
    return _info("her2st", root), str(spots)


@case("her2st-spots-nan-coordinate")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    _set_cell(spots, 10, 5, "NaN")
    return _info("her2st", root), str(spots)


@case("her2st-spots-duplicate-array-position")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    _edit_lines(spots, lambda lines: lines.insert(5, lines[4]))
    return _info("her2st", root), str(spots)


@case("her2st-spots-missing-file")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    spots.unlink()
    return _info("her2st", root), str(spots)


@case("her2st-spots-directory-instead-of-file")
def _(tmp):
    root, _, spots, _ = _her2st(tmp)
    spots.unlink()
    spots.mkdir()
    return _info("her2st", root), (str(spots), "is a directory")


@case("her2st-labels-wrong-columns")
def _(tmp):
    root, _, _, _ = _her2st(tmp)
    lbl = root / "ST-pat" / "lbl" / "A1_labeled_coordinates.tsv"
    lbl.write_text("spot\tannotation\n3x4\ttumour\n")
    return _info("her2st", root), str(lbl)


@case("her2st-image-0-byte")
def _(tmp):
    root, _, _, image = _her2st(tmp)
    image.write_bytes(b"")
    return _info("her2st", root), str(image)


@case("her2st-image-html-error-page-saved-as-jpg")
def _(tmp):
    root, _, _, image = _her2st(tmp)
    image.write_text("<html><body>429 Too Many Requests</body></html>")
    return _info("her2st", root), str(image)


@case("her2st-image-truncated-jpeg")
def _(tmp):
    root, _, _, image = _her2st(tmp)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])
    return _info("her2st", root), str(image)


@case("her2st-image-decompression-bomb-header")
def _(tmp):
    root, _, _, image = _her2st(tmp)
    _jpeg_claims(image, 65535, 65535)
    return _info("her2st", root), str(image)


@case("her2st-two-images-for-one-section")
def _(tmp):
    root, _, _, image = _her2st(tmp)
    shutil.copy(image, image.with_name("copy.jpg"))
    return _info("her2st", root), str(image.parent)


@case("her2st-root-missing")
def _(tmp):
    return _info("her2st", tmp / "nowhere"), str(tmp / "nowhere")


@case("her2st-root-is-a-file")
def _(tmp):
    _, counts, _, _ = _her2st(tmp)
    return _info("her2st", counts), (str(counts), "is a file, not a folder")


@case("her2st-unknown-section")
def _(tmp):
    root, _, _, _ = _her2st(tmp)
    return _info("her2st", root, "dataset.sections=[Z9]"), "dataset.sections"


# --------------------------------------------------------------------------------------------
# cscc
# --------------------------------------------------------------------------------------------


@case("cscc-count-ids-not-XxY")
def _(tmp):
    root = _cscc(tmp)
    counts = next(root.glob("*P2_ST_rep1_stdata.tsv.gz"))

    def edit(lines):
        for i in range(1, len(lines)):
            if lines[i]:
                lines[i] = f"spot_{i}" + lines[i][lines[i].index("\t"):]

    _edit_lines(counts, edit)
    return _info("cscc", root), str(counts)


@case("cscc-image-still-gzipped")
def _(tmp):
    root = _cscc(tmp)
    image = next(root.glob("*P2_ST_rep1.jpg"))
    gz = image.with_name(image.name + ".gz")
    gz.write_bytes(gzip.compress(image.read_bytes()))
    image.unlink()
    return _info("cscc", root), str(gz)


@case("cscc-two-count-files-for-a-section")
def _(tmp):
    root = _cscc(tmp)
    counts = next(root.glob("*P2_ST_rep1_stdata.tsv.gz"))
    shutil.copy(counts, root / "GSM0000000_P2_ST_rep1_stdata.tsv.gz")
    return _info("cscc", root), str(root)


@case("cscc-spot-file-comma-delimited")
def _(tmp):
    root = _cscc(tmp)
    spots = next(root.glob("*spot*P2_ST_rep1.tsv.gz"))
    _write_like(spots, _read(spots).replace(b"\t", b","))
    return _info("cscc", root), str(spots)


# --------------------------------------------------------------------------------------------
# hest
# --------------------------------------------------------------------------------------------


@case("hest-metadata-invalid-json", sub=True)
def _(tmp):
    root = _hest(tmp)
    meta = root / "metadata" / "TENX901.json"
    meta.write_text(meta.read_text()[:-10])
    return _info("hest", root), str(meta)


@case("hest-metadata-not-an-object")
def _(tmp):
    root = _hest(tmp)
    meta = root / "metadata" / "TENX901.json"
    meta.write_text("[1, 2, 3]")
    return _info("hest", root), str(meta)


@case("hest-metadata-pixel-size-wrong-type")
def _(tmp):
    root = _hest(tmp)
    meta = root / "metadata" / "TENX901.json"
    data = json.loads(meta.read_text())
    data["pixel_size_um_estimated"] = "half a micron"
    meta.write_text(json.dumps(data))
    return _info("hest", root), str(meta)


@case("hest-metadata-no-pixel-size")
def _(tmp):
    root = _hest(tmp)
    meta = root / "metadata" / "TENX901.json"
    data = json.loads(meta.read_text())
    for key in ("pixel_size_um_estimated", "pixel_size_um_embedded"):
        data.pop(key)
    meta.write_text(json.dumps(data))
    return _info("hest", root), str(meta)


@case("hest-h5ad-garbage-bytes")
def _(tmp):
    root = _hest(tmp)
    st = root / "st" / "TENX901.h5ad"
    st.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    return _info("hest", root), str(st)


@case("hest-wsi-missing")
def _(tmp):
    root = _hest(tmp)
    wsi = root / "wsis" / "TENX901.tif"
    wsi.unlink()
    return _info("hest", root), str(wsi)


@case("hest-unknown-sample-id")
def _(tmp):
    root = _hest(tmp)
    return _info("hest", root, "dataset.ids=[TENX999]"), "dataset.ids"


# --------------------------------------------------------------------------------------------
# h5ad (AnnData + image)
# --------------------------------------------------------------------------------------------


@case("h5ad-0-byte-file")
def _(tmp):
    path = tmp / "s.h5ad"
    path.write_bytes(b"")
    return _info("h5ad", path), str(path)


@case("h5ad-empty-anndata")
def _(tmp):
    import anndata as ad

    def empty(a):
        out = ad.AnnData(X=np.zeros((0, 0), np.int32))
        out.obsm["spatial"] = np.zeros((0, 2))
        return out

    path = _h5ad(tmp / "s.h5ad", mutate=empty)
    return _info("h5ad", path), str(path)


@case("h5ad-X-of-wrong-shape")
def _(tmp):
    import h5py

    path = _h5ad(tmp / "s.h5ad")
    with h5py.File(path, "r+") as f:
        del f["X"]
        f["X"] = np.ones((7, 3), np.int32)
    return _info("h5ad", path), str(path)


@case("h5ad-negative-counts")
def _(tmp):
    def negative(a):
        a.X[2, 3] = -4

    path = _h5ad(tmp / "s.h5ad", mutate=negative)
    return _info("h5ad", path), str(path)


@case("h5ad-nan-counts")
def _(tmp):
    def nan(a):
        a.X[2, 3] = np.nan

    path = _h5ad(tmp / "s.h5ad", mutate=nan, float_x=True)
    return _info("h5ad", path), str(path)


@case("h5ad-normalised-values-refused")
def _(tmp):
    def lognorm(a):
        a.X = np.log1p(a.X / a.X.sum(1, keepdims=True) * 1e4)

    path = _h5ad(tmp / "s.h5ad", mutate=lognorm, float_x=True)
    return _info("h5ad", path), str(path)


@case("h5ad-duplicate-spot-ids")
def _(tmp):
    def dupes(a):
        a.obs_names = ["same"] * 2 + list(a.obs_names[2:])

    path = _h5ad(tmp / "s.h5ad", mutate=dupes)
    return _info("h5ad", path), str(path)


@case("h5ad-duplicate-gene-names")
def _(tmp):
    genes = gen.GENES[:12]
    path = _h5ad(tmp / "s.h5ad", genes=genes[:11] + genes[:1])
    return _info("h5ad", path), str(path)


@case("h5ad-spatial-with-one-column")
def _(tmp):
    def one_col(a):
        a.obsm["spatial"] = a.obsm["spatial"][:, :1]

    path = _h5ad(tmp / "s.h5ad", mutate=one_col)
    return _info("h5ad", path), str(path)


@case("h5ad-spot-outside-image")
def _(tmp):
    def far(a):
        a.obsm["spatial"][4] = [5000.0, 40.0]

    path = _h5ad(tmp / "s.h5ad", mutate=far)
    return _info("h5ad", path), str(path)


@case("h5ad-unknown-counts-layer")
def _(tmp):
    path = _h5ad(tmp / "s.h5ad")
    return _info("h5ad", path, "dataset.counts_layer=raw_counts"), "dataset.counts_layer"


@case("h5ad-folder-without-h5ad")
def _(tmp):
    folder = tmp / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing here")
    return _info("h5ad", folder), str(folder)


@case("h5ad-no-root-given")
def _(tmp):
    return ["data", "info", "h5ad"], "dataset.root"


@case("h5ad-image-0-byte")
def _(tmp):
    path = _h5ad(tmp / "s.h5ad")
    path.with_suffix(".png").write_bytes(b"")
    return _info("h5ad", path), str(path.with_suffix(".png"))


@case("h5ad-image-directory-instead-of-file")
def _(tmp):
    path = _h5ad(tmp / "s.h5ad", image=None)
    (tmp / "he.png").mkdir()
    return (_info("h5ad", path, f"dataset.image={tmp / 'he.png'}"),
            (str(tmp / "he.png"), "is a directory"))


@case("h5ad-image-png-decompression-bomb-header")
def _(tmp):
    path = _h5ad(tmp / "s.h5ad", image=None)
    _png_header(path.with_suffix(".png"), 100_000, 100_000)
    return _info("h5ad", path), str(path.with_suffix(".png"))


@case("h5ad-image-truncated-png-at-decode")
def _(tmp):
    path = _h5ad(tmp / "s.h5ad")
    png = path.with_suffix(".png")
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    return (["features", "--dataset", "h5ad", f"dataset.root={path}", "encoder=handcrafted",
             "--kinds", "image", "--no-progress"], str(png))


def _image_mode_accepted(tmp: Path, mode: str) -> Expect:
    path = _h5ad(tmp / "s.h5ad", image=mode)

    def check(out: str) -> None:
        from stbench.io.images import read_rgb

        assert "s: image (30, " in out
        rgb = read_rgb(path.with_suffix(".png"))
        assert rgb.dtype == np.uint8 and rgb.shape == (241, 281, 3)
        assert rgb.max() > 100  # 16-bit values are rescaled, not clipped to 0/255 noise

    return (["features", "--dataset", "h5ad", f"dataset.root={path}", "encoder=handcrafted",
             "--kinds", "image", "--no-progress"], check)


@case("h5ad-image-rgba-converted-accepted")
def _(tmp):
    return _image_mode_accepted(tmp, "RGBA")


@case("h5ad-image-greyscale-converted-accepted")
def _(tmp):
    return _image_mode_accepted(tmp, "L")


@case("h5ad-image-16bit-rescaled-accepted")
def _(tmp):
    return _image_mode_accepted(tmp, "I;16")


# --------------------------------------------------------------------------------------------
# visium (a generated Space Ranger 1.0.0 output folder)
# --------------------------------------------------------------------------------------------


@case("visium-positions-wrong-column-count")
def _(tmp):
    root = _visium(tmp)
    pos = root / "spatial" / "tissue_positions_list.csv"
    _edit_lines(pos, lambda lines: lines.__setitem__(
        slice(None), [",".join(ln.split(",")[:4]) for ln in lines]))
    return _info("visium", root), str(pos)


@case("visium-scalefactors-invalid-json")
def _(tmp):
    root = _visium(tmp)
    sf = root / "spatial" / "scalefactors_json.json"
    sf.write_text("{'tissue_hires_scalef': 0.17,}")
    return _info("visium", root), str(sf)


@case("visium-matrix-truncated-h5")
def _(tmp):
    root = _visium(tmp)
    h5 = root / "filtered_feature_bc_matrix.h5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 3])
    return _info("visium", root), str(h5)


@case("visium-image-res-wrong-value")
def _(tmp):
    root = _visium(tmp)
    return _info("visium", root, "dataset.image_res=fullres"), "dataset.image_res"


# --------------------------------------------------------------------------------------------
# Configuration (the demo dataset and the run settings)
# --------------------------------------------------------------------------------------------


@case("config-demo-n-spots-wrong-type")
def _(tmp):
    return ["data", "info", "demo", "dataset.n_spots=many"], "dataset.n_spots"


@case("config-demo-n-slides-float")
def _(tmp):
    return ["data", "info", "demo", "dataset.n_slides=1.5"], "dataset.n_slides"


@case("config-demo-n-spots-below-minimum")
def _(tmp):
    return ["data", "info", "demo", "dataset.n_spots=2"], "dataset.n_spots"


@case("config-unknown-key")
def _(tmp):
    return _demo_run(tmp, "dataset.bogus=1"), "dataset.bogus"


@case("config-unknown-key-added-with-plus")
def _(tmp):
    return _demo_run(tmp, "+genes.panle=hvg"), "genes.panle"


@case("config-required-key-deleted", sub=True)
def _(tmp):
    return _demo_run(tmp, "~seed=0"), "seed"


@case("config-bool-wrong-type")
def _(tmp):
    return _demo_run(tmp, "tracking.enabled=maybe"), "tracking.enabled"


@case("config-list-given-a-string")
def _(tmp):
    return _demo_run(tmp, "split=holdout", "split.test=P1_A"), "split.test"


@case("cli-override-without-equals")
def _(tmp):
    return _demo_run(tmp, "seed"), "'seed'"


@case("cli-json-path-is-a-directory")
def _(tmp):
    (tmp / "outdir").mkdir()
    argv = _demo_run(tmp)
    argv[argv.index("--json") + 1] = str(tmp / "outdir")
    return argv, str(tmp / "outdir")


# --------------------------------------------------------------------------------------------
# Gene descriptions (genes.descriptions) and split / panel files
# --------------------------------------------------------------------------------------------


@case("descriptions-missing-genes")
def _(tmp):
    fake = [f"ZZFAKE{i}" for i in range(12)]
    for name in ("a", "b", "c"):
        _h5ad(tmp / "h5" / f"{name}.h5ad", genes=fake)
    desc = tmp / "desc.tsv"
    desc.write_text("".join(f"{g}\tA made-up gene number {i}.\n" for i, g in enumerate(fake[:3])))
    return (_run(tmp, "bilinear", "h5ad", f"dataset.root={tmp / 'h5'}",
                 f"genes.descriptions={desc}"), str(desc))


@case("descriptions-three-columns")
def _(tmp):
    desc = tmp / "desc.tsv"
    desc.write_text("KRT5\tkeratin 5\textra\n")
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("descriptions-duplicate-symbol")
def _(tmp):
    desc = tmp / "desc.tsv"
    desc.write_text("KRT5\tkeratin 5\nKRT5\tkeratin five\n")
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("descriptions-invalid-json")
def _(tmp):
    desc = tmp / "desc.json"
    desc.write_text('{"KRT5": "keratin 5",}')
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("descriptions-non-utf8")
def _(tmp):
    desc = tmp / "desc.tsv"
    desc.write_bytes("KRT5\tk\u00e9ratine 5\n".encode("latin-1"))
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("descriptions-unsupported-suffix")
def _(tmp):
    desc = tmp / "desc.csv"
    desc.write_text("KRT5,keratin 5\n")
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("descriptions-directory-instead-of-file")
def _(tmp):
    desc = tmp / "desc.tsv"
    desc.mkdir()
    return _demo_run(tmp, f"genes.descriptions={desc}"), (str(desc), "is a directory")


@case("descriptions-empty-description")
def _(tmp):
    desc = tmp / "desc.tsv"
    desc.write_text("KRT5\t   \n")
    return _demo_run(tmp, f"genes.descriptions={desc}"), str(desc)


@case("unseen-file-non-utf8")
def _(tmp):
    f = tmp / "unseen.txt"
    f.write_bytes(b"KRT5\n\xff\xfeKRT14\n")
    return _demo_run(tmp, "genes.split=file", f"genes.unseen_file={f}"), str(f)


@case("unseen-file-directory-instead-of-file")
def _(tmp):
    f = tmp / "unseen.txt"
    f.mkdir()
    return _demo_run(tmp, "genes.split=file", f"genes.unseen_file={f}"), (str(f), "is a directory")


@case("unseen-file-duplicate-genes")
def _(tmp):
    from stbench.datasets.demo import demo_genes

    g = demo_genes(20)
    f = tmp / "unseen.txt"
    f.write_text(f"{g[0]}\n{g[1]}\n{g[0]}\n")
    return _demo_run(tmp, "genes.split=file", f"genes.unseen_file={f}"), str(f)


@case("unseen-file-comments-only")
def _(tmp):
    f = tmp / "unseen.txt"
    f.write_text("# nothing yet\n\n")
    return _demo_run(tmp, "genes.split=file", f"genes.unseen_file={f}"), str(f)


@case("unseen-file-gene-not-in-panel")
def _(tmp):
    f = tmp / "unseen.txt"
    f.write_text("NOTAGENE1\n")
    return _demo_run(tmp, "genes.split=file", f"genes.unseen_file={f}"), str(f)


@case("panel-file-missing")
def _(tmp):
    f = tmp / "panel.txt"
    return _demo_run(tmp, "genes.panel=file", f"genes.panel_file={f}"), str(f)


# --------------------------------------------------------------------------------------------
# Other commands: compare, leaderboard, ui
# --------------------------------------------------------------------------------------------


@case("compare-truncated-result-json")
def _(tmp):
    a, b = tmp / "a.json", tmp / "b.json"
    a.write_text('{"schema": 1, "method": "ridge", "folds": [')
    b.write_text("{}")
    return ["compare", str(a), str(b)], str(a)


@case("compare-result-json-is-a-directory")
def _(tmp):
    a = tmp / "a.json"
    a.mkdir()
    return ["compare", str(a), str(a)], str(a)


@case("leaderboard-malformed-result-file")
def _(tmp):
    res = tmp / "inputs"
    res.mkdir()
    (res / "bad.json").write_bytes(b"\xff\xfe{ not json")
    return (["leaderboard", "--dataset", "demo", "--results", str(res), "--no-recorded",
             "--out", str(tmp / "board")], str(res / "bad.json"))


@case("ui-without-a-store")
def _(tmp):
    return ["ui", "--dir", str(tmp / "no-runs")], str(tmp / "no-runs" / "mlflow.db")


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _complete_results(root: Path) -> list[Path]:
    """Result JSONs marked complete: ``--json`` output, recorded results, finished checkpoints."""
    found = [p for p in root.rglob("*.json")
             if p.name == "out.json" or "results" in p.relative_to(root).parts
             or (p.name == "result.json" and "checkpoints" in p.relative_to(root).parts)]
    return sorted(found)


def test_table_has_enough_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build, sub", CASES)
def test_bad_input(build, sub, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv, expect = build(tmp_path)
    capsys.readouterr()
    if sub:
        proc = subprocess.run([sys.executable, "-m", "stbench", *argv], cwd=work,
                              capture_output=True, text=True, timeout=300)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code = main(argv)
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    if callable(expect):  # legitimately accepted input: the documented behaviour
        assert code == 0, err
        expect(out)
        return
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    for needle in (expect,) if isinstance(expect, str) else expect:
        assert needle in lines[0], f"{needle!r} not named in: {lines[0]}"
    assert _complete_results(tmp_path) == []
