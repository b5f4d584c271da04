"""``stbench data``: download published datasets, inspect what a dataset reads.

    stbench data download cscc|her2st|hest [--root DIR] [--ids ID,...] [--force]
    stbench data info DATASET [dataset.root=DIR dataset.sections=[A,B] ...]
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from stbench.errors import UserError

app = typer.Typer(help="Datasets: download the published files, show what a dataset reads.",
                  no_args_is_help=True)

out = Console(soft_wrap=True)


@app.command()
def download(
    name: str = typer.Argument(..., help="Dataset: cscc, her2st or hest."),
    root: Optional[Path] = typer.Option(None, "--root",
                                        help="Destination (default $STBENCH_DATA/NAME or "
                                             "~/.cache/stbench/data/NAME)."),
    ids: Optional[str] = typer.Option(None, "--ids", help="HEST-1k sample ids, comma separated."),
    force: bool = typer.Option(False, "--force", help="Download again files already in place."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Download NAME's published files (resumable; SHA-256 checked or recorded in a lock file)."""
    from stbench.io.download import LOCK_NAME, download_dataset, manifest

    m = manifest(name)
    out.print(f"[bold]{escape(name)}[/bold]: {escape(m.source)}")
    if m.note:
        out.print(escape(m.note))
    id_list = [i.strip() for i in (ids or "").split(",") if i.strip()]
    path = download_dataset(name, root, ids=id_list, progress=False if no_progress else None,
                            force=force, log=lambda s: out.print(escape(s)))
    out.print(f"done: {escape(str(path))} (digests in {LOCK_NAME})")
    if root is not None:
        out.print(f"use it with: stbench run --dataset {name} dataset.root={escape(str(path))} ...")


def _load_with_warnings(dataset) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slides = dataset.load()
    return slides, [str(w.message) for w in caught]


@app.command(context_settings={"allow_extra_args": False})
def info(
    name: str = typer.Argument(..., help="Registered dataset name."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="dataset.* overrides key=value, e.g. dataset.root=DIR."),
) -> None:
    """Sections, patients, spots, genes, image sizes and microns per pixel of a dataset."""
    from omegaconf import OmegaConf
    from stbench.run.config import compose
    from stbench.plugins import DATASETS

    overrides = list(overrides or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"expected key=value overrides, got {bad[0]!r}",
                        fix="write settings as key=value, e.g. dataset.root=DIR")
    dataset_cls = DATASETS.get(name)
    cfg = compose([f"dataset={name}", *overrides])
    dataset = dataset_cls(OmegaConf.to_object(cfg.dataset))
    card = dataset_cls.card
    out.print(f"[bold]{escape(card.name)}[/bold] {escape(card.version)} - {escape(card.platform)}")
    out.print(f"source: {escape(card.url)}; licence: {escape(card.licence)}")
    out.print(f"citation: {escape(card.citation)}")
    slides, notes = _load_with_warnings(dataset)
    table = Table(title=f"{name}: {len(slides)} sections")
    for col, justify in (("section", "left"), ("patient", "left"), ("spots", "right"),
                         ("genes", "right"), ("image px", "right"), ("um/px", "right"),
                         ("border drop", "right"), ("um/px from", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col != "um/px from")
    for s in slides:
        rec = s.adata.uns.get("stbench", {}) if hasattr(s.adata, "uns") else {}
        w, h = s.image.size
        table.add_row(s.name, s.patient, str(s.n_spots), str(s.adata.n_vars), f"{w}x{h}",
                      f"{s.microns_per_pixel:.4f}", str(rec.get("dropped_border", 0)),
                      escape(str(rec.get("mpp_source", ""))))
    out.print(table)
    genes = set(slides[0].adata.var_names) if slides else set()
    for s in slides[1:]:
        genes &= set(s.adata.var_names)
    patients = sorted({s.patient for s in slides})
    out.print(f"patients: {len(patients)} ({', '.join(patients)}); spots: "
              f"{sum(s.n_spots for s in slides)}; genes in every section: {len(genes)}; "
              f"default split: {card.default_split}")
    try:
        panel = dataset.literature_panel()
    except UserError as exc:
        out.print(f"literature panel: unavailable ({escape(exc.one_line())})")
    else:
        if panel is None:
            out.print("literature panel: none for this dataset")
        else:
            present = sum(g in genes for g in panel)
            out.print(f"literature panel: {len(panel)} genes, {present} in every section")
    for note in notes:
        out.print(f"warning: {escape(note)}")
