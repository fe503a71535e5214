"""``herald campaigns``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.domain.throttle import parse_rate
from herald.errors import InvalidInput
from herald.services import campaigns as svc

app = typer.Typer(help="Campaigns.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TERMINAL = {"finished", "cancelled"}


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the {what} file {path}: {exc}") from exc


@app.command("create")
def create(
    ctx: typer.Context,
    list_names: Annotated[list[str], typer.Option("--list", help="Target list (repeatable).")],
    subject: Annotated[str, typer.Option(help="Subject (a template).")],
    html: Annotated[Path, typer.Option(help="HTML body template file.")],
    text: Annotated[Path | None, typer.Option(help="Text body template file.")] = None,
    from_addr: Annotated[str | None, typer.Option("--from", help="Sender.")] = None,
    name: Annotated[str, typer.Option(help="Internal name.")] = "",
    rate: Annotated[
        str | None, typer.Option(help="Cluster-wide send rate: N/s, N/min or N/h.")
    ] = None,
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="Track opens and clicks.")
    ] = True,
    json: JsonOpt = False,
) -> None:
    """Create a draft campaign; prints its id."""
    cctx = cli_context(ctx)
    runtime = cctx.runtime()
    draft = svc.CampaignDraft(
        name=name,
        subject=subject,
        html=_read(html, "HTML") or "",
        text=_read(text, "text"),
        from_addr=from_addr or runtime.settings.from_addr,
        list_names=tuple(list_names),
        rate_limit=parse_rate(rate) if rate else None,
        track=track,
    )
    campaign_id = svc.create_campaign(runtime.engine, draft)
    if json:
        print_json({"id": campaign_id})
    else:
        console.print(campaign_id)


def _change(ctx: typer.Context, campaign_id: int, action: str, json: bool) -> None:
    status = svc.change_status(cli_context(ctx).runtime().engine, campaign_id, action)
    if json:
        print_json({"id": campaign_id, "status": status})
    else:
        console.print(f"Campaign {campaign_id} is now {status}.")


@app.command("start")
def start(
    ctx: typer.Context,
    campaign_id: int,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until it finishes.")] = False,
    json: JsonOpt = False,
) -> None:
    """Start sending (workers of any running node pick it up)."""
    _change(ctx, campaign_id, "start", json)
    if wait:
        report = wait_for_campaign(cli_context(ctx).runtime().engine, campaign_id, quiet=json)
        if json:
            print_json(report)
        else:
            show_report(report)


@app.command("schedule")
def schedule(
    ctx: typer.Context,
    campaign_id: int,
    at: Annotated[
        str,
        typer.Option("--at", help="ISO 8601 time, e.g. 2026-12-01T09:00+01:00 (no zone = UTC)."),
    ],
    json: JsonOpt = False,
) -> None:
    """Schedule a draft: exactly one node starts it at that time."""
    try:
        when = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidInput(f"invalid time {at!r}: use ISO 8601, e.g. 2026-12-01T09:00Z") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    svc.schedule_campaign(cli_context(ctx).runtime().engine, campaign_id, when)
    if json:
        print_json({"id": campaign_id, "status": "scheduled", "send_at": when.isoformat()})
    else:
        console.print(f"Campaign {campaign_id} is scheduled for {when.isoformat()}.")


@app.command("rate")
def rate(
    ctx: typer.Context,
    campaign_id: int,
    limit: Annotated[str, typer.Argument(help="N/s, N/min, N/h, or 'none' to remove.")],
) -> None:
    """Set a campaign's cluster-wide send rate (takes effect within a second)."""
    value = None if limit.strip().lower() == "none" else parse_rate(limit)
    svc.set_rate(cli_context(ctx).runtime().engine, campaign_id, value)
    shown = "no limit" if value is None else f"{value:g} messages/s"
    console.print(f"Campaign {campaign_id}: {shown}.")


@app.command("pause")
def pause(ctx: typer.Context, campaign_id: int, json: JsonOpt = False) -> None:
    """Pause: no new messages within about a second."""
    _change(ctx, campaign_id, "pause", json)


@app.command("resume")
def resume(ctx: typer.Context, campaign_id: int, json: JsonOpt = False) -> None:
    """Resume a paused campaign."""
    _change(ctx, campaign_id, "resume", json)


@app.command("cancel")
def cancel(ctx: typer.Context, campaign_id: int, json: JsonOpt = False) -> None:
    """Cancel for good: nothing more is sent."""
    _change(ctx, campaign_id, "cancel", json)


@app.command("show")
def show(ctx: typer.Context, campaign_id: int, json: JsonOpt = False) -> None:
    """Counts per delivery status, rate and timings."""
    report = svc.campaign_report(cli_context(ctx).runtime().engine, campaign_id)
    if json:
        print_json(report)
    else:
        show_report(report)


@app.command("ls")
def ls(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every campaign, newest first."""
    rows = svc.list_campaigns(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "Campaigns",
        ["id", "name", "status", "created"],
        [(r["id"], r["name"], r["status"], r["created_at"]) for r in rows],
    )


def show_report(report: dict[str, Any]) -> None:
    c = report["counts"]
    console.print(
        f"[bold]Campaign {report['id']}[/] {report['name']!r}: [bold]{report['status']}[/]\n"
        f"  recipients {report['total']}"
        f"{'' if report['materialised'] else ' (still materialising)'}\n"
        f"  sent {c['sent']} · bounced {c['bounced']} · failed {c['failed']} · "
        f"pending {c['pending']} · sending {c['sending']}\n"
        f"  rate {report['rate_per_s'] or '-'} msg/s · started {report['started_at'] or '-'} · "
        f"finished {report['finished_at'] or '-'}"
    )


def wait_for_campaign(engine: Any, campaign_id: int, *, quiet: bool = False) -> dict[str, Any]:
    """Poll until the campaign is finished or cancelled, with a progress bar."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task(f"Campaign {campaign_id}", total=None)
        while True:
            report = svc.campaign_report(engine, campaign_id)
            total = report["total"] if report["materialised"] else None
            bar.update(task, completed=report["done"], total=total, description=report["status"])
            if report["status"] in TERMINAL:
                return report
            time.sleep(0.5)
