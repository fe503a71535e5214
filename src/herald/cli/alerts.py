"""``herald alerts``: what is firing, and silences."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.domain.schedules import parse_interval
from herald.services import alerts as svc

app = typer.Typer(help="Alerts and silences.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("ls")
def ls(
    ctx: typer.Context,
    json: JsonOpt = False,
    hours: Annotated[
        float, typer.Option("--hours", help="Also show alerts resolved in the last HOURS.")
    ] = 24.0,
) -> None:
    """Pending and firing alerts, those resolved lately, and the silences in force."""
    engine = cli_context(ctx).runtime().engine
    rows = svc.list_alerts(engine, hours=hours)
    silences = svc.list_silences(engine)
    if json:
        print_json({"alerts": rows, "silences": silences})
        return
    print_table(
        "Alerts",
        ["id", "status", "severity", "rule", "key", "summary", "since", "resolved"],
        [
            (
                r["id"],
                r["status"],
                r["severity"],
                r["rule"],
                r["key"],
                r["summary"],
                _when(r["started_at"]),
                _when(r["resolved_at"]),
            )
            for r in rows
        ],
    )
    if silences:
        _print_silences(silences)


@app.command("silence")
def silence(
    ctx: typer.Context,
    rule: Annotated[str, typer.Argument(help="Rule name, e.g. HeraldRelayCircuitOpen.")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
    key: Annotated[
        str | None, typer.Option("--key", help="Only this relay or node (default: every key).")
    ] = None,
    comment: Annotated[str, typer.Option("--comment", help="Why (shown in ls).")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who (default: your login).")] = None,
    json: JsonOpt = False,
) -> None:
    """Mute an alert rule (or one key of it) for a while: it notifies nothing meanwhile."""
    seconds = parse_interval(duration).total_seconds()
    made = svc.add_silence(
        cli_context(ctx).runtime().engine,
        rule,
        key=key,
        seconds=seconds,
        comment=comment,
        created_by=by if by is not None else getpass.getuser(),
    )
    if json:
        print_json(made)
        return
    which = f" [{made['key']}]" if made["key"] else ""
    console.print(f"Silence {made['id']}: {made['rule']}{which} until {_when(made['expires_at'])}.")


@app.command("unsilence")
def unsilence(ctx: typer.Context, silence_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """End a silence now."""
    svc.remove_silence(cli_context(ctx).runtime().engine, silence_id)
    console.print(f"Silence {silence_id} ended.")


def _print_silences(rows: list[dict[str, Any]]) -> None:
    print_table(
        "Silences",
        ["id", "rule", "key", "until", "by", "comment"],
        [
            (
                s["id"],
                s["rule"],
                s["key"] or "*",
                _when(s["expires_at"]),
                s["created_by"],
                s["comment"],
            )
            for s in rows
        ],
    )


def _when(value: Any) -> str:
    return "" if value is None else str(value)[:19]
