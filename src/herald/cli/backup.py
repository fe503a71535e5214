"""``herald backup``: online backups, restore into either backend, verify."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.services import backups as svc

app = typer.Typer(help="Backups: create, restore, verify.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
FileArg = Annotated[Path, typer.Argument(help="A herald-backup-*.tar archive.")]


@contextmanager
def _progress(verb: str, *, quiet: bool) -> Iterator[svc.Progress]:
    """A row-count progress bar on a terminal (nothing for --json or a pipe)."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not sys.stdout.isatty(),
        transient=True,
    ) as bar:
        task = bar.add_task(verb, total=None)

        def update(table: str, done: int, total: int) -> None:
            bar.update(task, description=f"{verb} {table}", completed=done, total=total)

        yield update


@app.command("create")
def create(
    ctx: typer.Context,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Directory for the archive [default: HERALD_BACKUP_DIR or DATA_DIR/backups].",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Take a consistent backup of the database while Herald keeps running."""
    runtime = cli_context(ctx).runtime()
    settings = runtime.settings
    dest = to if to is not None else settings.backup_dir or settings.data_dir / "backups"
    with _progress("Backing up", quiet=json) as progress:
        result = svc.create_backup(runtime.engine, dest, progress=progress)
    summary = {
        "path": str(result.path),
        "bytes": result.size,
        "tables": result.tables,
        "schema_revision": result.schema_revision,
        "backend": result.backend,
        "seconds": result.seconds,
    }
    if json:
        print_json(summary)
        return
    console.print(
        f"Backup written to {result.path} ({_size(result.size)}, "
        f"{sum(result.tables.values())} rows in {len(result.tables)} tables, {result.seconds} s)."
    )


@app.command("restore")
def restore(
    file: FileArg,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url", help="The database to restore into: sqlite:///PATH or postgresql://…"
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Empty a target that holds data, then restore.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Restore a backup into an empty database of either backend (checked before writing)."""
    with _progress("Restoring", quiet=json) as progress:
        result = svc.restore_backup(file, database_url, force=force, progress=progress)
    if json:
        print_json(
            {
                "path": str(result.path),
                "database": result.database,
                "tables": result.tables,
                "schema_revision": result.schema_revision,
                "migrated_to": result.migrated_to,
                "seconds": result.seconds,
                "paused_campaigns": result.paused,
            }
        )
        return
    migrated = (
        ""
        if result.migrated_to == result.schema_revision
        else f", migrated {result.schema_revision} → {result.migrated_to}"
    )
    console.print(
        f"Restored {sum(result.tables.values())} rows in {len(result.tables)} tables "
        f"into {result.database}{migrated} ({result.seconds} s)."
    )
    if result.paused:
        ids = ", ".join(str(i) for i in result.paused)
        console.print(
            f"Campaigns {ids} were running at the snapshot and are now paused: the old "
            "installation may have sent more since. Resume each with 'herald campaigns resume ID'."
        )


@app.command("verify")
def verify(file: FileArg, json: JsonOpt = False) -> None:
    """Check a backup's checksums and restore it into a scratch database (exit 1 if bad)."""
    with _progress("Verifying", quiet=json) as progress:
        result = svc.verify_backup(file, progress=progress)
    if json:
        print_json(
            {
                "path": str(result.path),
                "ok": result.ok,
                "problems": result.problems,
                "tables": result.tables,
                "seconds": result.seconds,
            }
        )
    else:
        _print_verdict(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_verdict(result: svc.VerifyResult) -> None:
    if result.tables:
        rows: list[tuple[Any, ...]] = [
            (name, c["manifest"], c["restored"]) for name, c in result.tables.items()
        ]
        print_table(str(result.path.name), ("table", "manifest", "restored"), rows)
    for problem in result.problems:
        console.print(f"[bold red]✗[/] {problem}")
    if result.ok:
        console.print(f"[bold green]✓[/] {result.path.name} restores ({result.seconds} s).")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
