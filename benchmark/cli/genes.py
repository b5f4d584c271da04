"""``stbench genes``: inspect the gene descriptions and representations of the zero-shot track."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from stbench.errors import DataError
from stbench.features.descriptions import DescriptionTable, coverage as _coverage

app = typer.Typer(
    help="Gene descriptions for the zero-shot track: show them, check a panel's coverage.",
    no_args_is_help=True,
)


def read_panel(path: Path) -> list[str]:
    """Gene symbols of a panel file: one per line; blank lines and ``#`` comments ignored.

    Args:
        path: The panel file.

    Returns:
        The symbols, in file order.

    Raises:
        DataError: The file is missing or unreadable.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the gene panel file: {exc}",
            where=str(path),
            fix="pass a UTF-8 text file with one gene symbol per line",
        ) from exc
    symbols = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [s for s in symbols if s]


@app.command()
def show(
    symbols: Annotated[list[str], typer.Argument(help="Gene symbols (aliases are resolved).")],
) -> None:
    """Print the shipped description of each gene: symbol, official symbol, Entrez id, text."""
    console = Console(soft_wrap=True)
    table = DescriptionTable.shipped()
    unknown: list[str] = []
    for symbol in symbols:
        official = table.resolve(symbol)
        if official is None:
            unknown.append(symbol)
            continue
        rec = table.record(official)
        console.print(
            f"[bold]{escape(symbol)}[/bold]  official: {escape(official)}  "
            f"Entrez: {escape(rec['entrez_id'])}"
        )
        if rec["aliases"]:
            console.print(f"  aliases: {escape(rec['aliases'].replace('|', ', '))}")
        console.print(f"  {escape(table.text_for(symbol) or '')}")
    if unknown:
        raise DataError(
            f"unknown or ambiguous gene symbol(s): {', '.join(unknown)}",
            where=str(table.path),
            fix="check the spelling, or describe the genes in a file passed as "
            "genes.descriptions=PATH",
        )


@app.command("coverage")
def coverage_cmd(
    panel_file: Annotated[
        Path, typer.Argument(help="Gene panel: one symbol per line, '#' starts a comment.")
    ],
    descriptions: Annotated[
        Path | None,
        typer.Option("--descriptions", help="User description file (TSV or JSON)."),
    ] = None,
    representation: Annotated[
        str | None,
        typer.Option("--representation",
                     help="A gene representation (`stbench list representations`): report its "
                          "coverage instead of the descriptions'."),
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="The embedding file of --representation table."),
    ] = None,
) -> None:
    """List the panel's genes without a description (or without a vector of
    ``--representation``), then print ``coverage: N/M`` (``coverage (NAME): N/M (P%)``)."""
    symbols = read_panel(panel_file)
    if representation is None:
        covered, missing = _coverage(symbols, descriptions)
        label = "coverage"
    else:
        from stbench.features.representations import RepresentationOptions, make_representation

        options = RepresentationOptions(embeddings=str(embeddings) if embeddings else None,
                                        descriptions=str(descriptions) if descriptions else None)
        covered, missing = make_representation(representation, options).coverage(symbols)
        label = f"coverage ({representation})"
    for symbol in missing:
        typer.echo(f"missing: {symbol}")
    pct = f" ({100.0 * len(covered) / len(symbols):.1f}%)" if representation and symbols else ""
    typer.echo(f"{label}: {len(covered)}/{len(symbols)}{pct}")
