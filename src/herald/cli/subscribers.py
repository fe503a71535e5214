"""``herald subscribers``."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from herald.cli.context import cli_context
from herald.cli.output import console, print_json
from herald.services.imports import import_subscribers

app = typer.Typer(help="Subscribers.", no_args_is_help=True)


@app.command("import")
def import_csv(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    list_name: Annotated[str, typer.Option("--list", help="List to subscribe them to.")],
    errors_to: Annotated[
        Path | None, typer.Option("--errors", help="Where to write the per-row error report.")
    ] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import a CSV (header row with `email`, optional `name`, other columns as attributes)."""
    engine = cli_context(ctx).runtime().engine
    show_bar = sys.stdout.isatty() and not json
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_bar,
        transient=True,
    ) as bar:
        task = bar.add_task(f"Importing {file.name}", total=file.stat().st_size)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        result = import_subscribers(
            engine, file, list_name=list_name, error_report=errors_to, progress=progress
        )
    summary = dataclasses.asdict(result)
    summary["error_report"] = str(result.error_report) if result.error_report else None
    if json:
        print_json(summary)
        return
    console.print(
        f"imported {result.imported} / updated {result.updated} / "
        f"skipped {result.skipped} / errors {result.errors}"
    )
    if result.error_report:
        console.print(f"Per-row errors written to {result.error_report}")
    if result.errors:
        raise typer.Exit(0)
