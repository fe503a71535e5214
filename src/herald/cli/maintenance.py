"""``herald maintenance``: run the cluster's maintenance jobs now, and see when they last ran."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.ops import maintenance as ops
from herald.ops.backups import BACKUP_DUTY
from herald.runtime import Runtime
from herald.services import duties

app = typer.Typer(
    help="Maintenance jobs: tracking roll-up, purges, database.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command("run")
def run(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="tracking, purge or database [default: all].")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Run one maintenance job (or all) now, on this machine; exit 1 if any failed."""
    outcomes = ops.run_now(cli_context(ctx).runtime(), job)
    if json:
        print_json([{"job": o.job, "ok": o.ok, "detail": o.detail} for o in outcomes])
    else:
        for o in outcomes:
            mark = "[bold green]✓[/]" if o.ok else "[bold red]✗[/]"
            console.print(f"{mark} {o.job}: {o.detail}")
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command("ls")
def ls(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every maintenance job and the scheduled backup: how often, and the last run."""
    runtime = cli_context(ctx).runtime()
    rows: list[dict[str, Any]] = []
    for job, last in ops.last_runs(runtime):
        rows.append(
            {
                "job": job.name,
                "every": job.schedule(runtime).text,
                "description": job.description,
                "last_started_at": last.started_at.isoformat() if last else None,
                "last_ok": last.ok if last else None,
                "last_node": last.node if last else None,
                "last_detail": last.detail if last else None,
            }
        )
    rows.append(_backup_row(runtime))
    if json:
        print_json(rows)
        return
    print_table(
        "Maintenance jobs",
        ["job", "every", "last run", "ok", "node", "detail"],
        [
            (
                r["job"],
                r["every"],
                r["last_started_at"] or "never",
                {True: "yes", False: "no", None: "-"}[r["last_ok"]],
                r["last_node"] or "",
                r["last_detail"] or "",
            )
            for r in rows
        ],
    )


def _backup_row(runtime: Runtime) -> dict[str, Any]:
    """The scheduled backup, a cluster duty like the maintenance jobs (docs/backups.md)."""
    last = duties.last_run(runtime.engine, BACKUP_DUTY)
    return {
        "job": BACKUP_DUTY,
        "every": runtime.settings.backup_schedule.strip() or "off",
        "description": "scheduled backup with retention (herald backup create runs one now)",
        "last_started_at": last.started_at.isoformat() if last else None,
        "last_ok": last.ok if last else None,
        "last_node": last.node if last else None,
        "last_detail": last.detail if last else None,
    }
