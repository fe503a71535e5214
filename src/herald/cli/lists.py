"""``herald lists``."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.services import lists as svc

app = typer.Typer(help="Mailing lists.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    double_opt_in: Annotated[
        bool, typer.Option("--double-opt-in", help="Subscribers must confirm by email.")
    ] = False,
    description: Annotated[str, typer.Option(help="Shown to subscribers.")] = "",
    public: Annotated[
        bool, typer.Option("--public", help="Anyone may subscribe at /subscribe/ID.")
    ] = False,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a list."""
    list_id = svc.create_list(
        cli_context(ctx).runtime().engine,
        name,
        double_optin=double_opt_in,
        description=description,
        public=public,
    )
    if json:
        print_json({"id": list_id, "name": name})
    else:
        console.print(f"Created list {list_id} ({name!r}).")


@app.command("ls")
def ls(ctx: typer.Context, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show every list with its subscription counts."""
    rows = svc.list_lists(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "Lists",
        ["id", "name", "opt-in", "confirmed", "unconfirmed", "unsubscribed"],
        [
            (
                r["id"],
                r["name"],
                r["optin"],
                r["subscribers"].get("confirmed", 0),
                r["subscribers"].get("unconfirmed", 0),
                r["subscribers"].get("unsubscribed", 0),
            )
            for r in rows
        ],
    )
