"""``herald users`` and ``herald tokens``: who may use the API and the web UI."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.errors import InvalidInput
from herald.services import auth

users_app = typer.Typer(help="Users of the web UI and the API.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RoleOpt = Annotated[str, typer.Option(help="admin, editor or viewer.")]


def _read_password() -> str:
    """From a prompt (twice, hidden) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidInput("give the password on standard input (one line)")
    return line


@users_app.command("create")
def create_user(
    ctx: typer.Context, email: str, role: RoleOpt = "viewer", json: JsonOpt = False
) -> None:
    """Create a user; the password comes from standard input (or a prompt)."""
    engine = cli_context(ctx).runtime().engine
    user = auth.create_user(engine, email, _read_password(), role)
    if json:
        print_json(user)
    else:
        console.print(f"Created user {user['email']} ({user['role']})")


@users_app.command("ls")
def list_users(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every user, with role and last login (never a password)."""
    rows = auth.list_users(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "Users",
        ("email", "role", "disabled", "last login"),
        [(u["email"], u["role"], "yes" if u["disabled"] else "", u["last_login_at"]) for u in rows],
    )


@users_app.command("set")
def set_user(
    ctx: typer.Context,
    email: str,
    role: Annotated[str | None, typer.Option(help="admin, editor or viewer.")] = None,
    password: Annotated[
        bool, typer.Option("--password", help="Set a new password (stdin or prompt).")
    ] = False,
    disabled: Annotated[
        bool | None, typer.Option("--disable/--enable", help="Block or allow logins.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Change a user's role, password or access (their sessions end)."""
    engine = cli_context(ctx).runtime().engine
    new_password = _read_password() if password else None
    user = auth.set_user(engine, email, role=role, password=new_password, disabled=disabled)
    if json:
        print_json(user)
    else:
        console.print(f"Changed user {user['email']} ({user['role']})")


@tokens_app.command("create")
def create_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")],
    role: RoleOpt = "viewer",
    json: JsonOpt = False,
) -> None:
    """Create an API token and print it once: only a hash is stored."""
    token, record = auth.create_token(cli_context(ctx).runtime().engine, name, role)
    if json:
        print_json({**record, "token": token})
        return
    console.print(f"Token {record['name']!r} ({record['role']}); it is shown only now:")
    print(token)


@tokens_app.command("ls")
def list_tokens(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every token: name, role, prefix, last use, revoked (never the token)."""
    rows = auth.list_tokens(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "API tokens",
        ("name", "role", "prefix", "last used", "revoked"),
        [
            (t["name"], t["role"], t["prefix"] + "…", t["last_used_at"], t["revoked_at"])
            for t in rows
        ],
    )


@tokens_app.command("revoke")
def revoke_token(ctx: typer.Context, name: str) -> None:
    """Revoke a token: it stops working at once on every node."""
    auth.revoke_token(cli_context(ctx).runtime().engine, name)
    console.print(f"Revoked token {name!r}")
