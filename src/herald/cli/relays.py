"""``herald relays``: the SMTP relays stored in the database."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.domain.replies import SendOutcome
from herald.domain.throttle import parse_rate
from herald.errors import HeraldError, InvalidInput
from herald.services import relays as svc

app = typer.Typer(help="SMTP relays.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
WeightOpt = Annotated[int | None, typer.Option(help="Share of the traffic, relative to others.")]
ConnOpt = Annotated[
    int | None,
    typer.Option("--max-connections", help="Open SMTP sessions, cluster-wide (default 50)."),
]
_COLUMNS = (
    *("name", "address", "tls", "weight", "max conn", "max rate", "enabled", "state"),
    *("sent", "deferred", "failed", "latency", "last error"),
)


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    url: Annotated[str, typer.Argument(help="smtp://[user:pass@]host:port[?tls=…] or smtps://…")],
    weight: WeightOpt = None,
    max_connections: ConnOpt = None,
    max_rate: Annotated[
        str | None,
        typer.Option("--max-rate", help="Rate limit: 20/s, 600/min, … (default: unlimited)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Store a relay (its password is sealed with the Herald secret key)."""
    runtime = cli_context(ctx).runtime()
    relay = svc.add_relay(
        runtime.engine,
        runtime.secret,
        name,
        url,
        weight=1 if weight is None else weight,
        max_connections=svc.DEFAULT_CONNECTIONS if max_connections is None else max_connections,
        max_rate=None if max_rate is None else _parse_rate(max_rate),
    )
    _show_one(relay, json, "Added")


@app.command("ls")
def ls(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every stored relay: address, limits, state and counters (never a password)."""
    rows = svc.list_relays(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "Relays",
        _COLUMNS,
        [
            (
                r["name"],
                f"{r['host']}:{r['port']}",
                r["tls"] + ("" if r["verify_tls"] else " (no verify)"),
                r["weight"],
                r["max_connections"],
                "unlimited" if r["max_rate"] is None else f"{r['max_rate']:g}/s",
                "yes" if r["enabled"] else "no",
                r["state"],
                r["sent"],
                r["deferred"],
                r["failed"],
                "" if r["latency_ms"] is None else f"{r['latency_ms']:.0f} ms",
                r["last_error"],
            )
            for r in rows
        ],
    )


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str,
    url: Annotated[str | None, typer.Option(help="New URL (replaces the credentials too).")] = None,
    weight: WeightOpt = None,
    max_connections: ConnOpt = None,
    max_rate: Annotated[
        str | None, typer.Option("--max-rate", help="Messages per second, or 'none'.")
    ] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Use the relay or not.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Change a relay's URL, limits or whether it is used."""
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "url": url,
            "weight": weight,
            "max_connections": max_connections,
            "enabled": enabled,
        }.items()
        if value is not None
    }
    if max_rate is not None:
        changes["max_rate"] = _parse_rate(max_rate)
    if not changes:
        raise InvalidInput("nothing to change: give --url, --weight, --max-connections, …")
    runtime = cli_context(ctx).runtime()
    _show_one(svc.set_relay(runtime.engine, runtime.secret, name, **changes), json, "Updated")


@app.command("rm")
def rm(ctx: typer.Context, name: str) -> None:
    """Delete a relay."""
    svc.remove_relay(cli_context(ctx).runtime().engine, name)
    console.print(f"Removed relay {name}.")


@app.command("test")
def probe(
    ctx: typer.Context,
    name: str,
    to: Annotated[str | None, typer.Option("--to", help="Also send a test message here.")] = None,
    json: JsonOpt = False,
) -> None:
    """Connect to a relay (EHLO, TLS, AUTH, NOOP); with --to, send a test message."""
    runtime = cli_context(ctx).runtime()
    settings = runtime.settings
    result = asyncio.run(
        svc.probe_relay(
            runtime.engine,
            runtime.secret,
            name,
            to=to,
            from_addr=settings.from_addr,
            base_url=settings.base_url,
        )
    )
    if json:
        print_json(
            {
                "name": name,
                "ok": result.ok,
                "session": _outcome(result.session),
                "send": None if result.send is None else _outcome(result.send),
            }
        )
    if not result.ok:
        # main() turns this into one error line and exit code 1.
        raise HeraldError(_failure(result))
    if not json:
        console.print(f"Relay {name}: session ok ({result.session.reply}).")
        if result.send is not None:
            console.print(f"Test message to {to} accepted: {result.send.reply}")


def _failure(result: svc.RelayProbe) -> str:
    if not result.session.ok:
        return f"relay {result.name}: {result.session.kind} failure: {result.session.reply}"
    send = result.send
    assert send is not None  # not ok with a good session: the send failed
    return f"relay {result.name}: test message refused ({send.kind}): {send.reply}"


def _outcome(outcome: SendOutcome) -> dict[str, Any]:
    return {"ok": outcome.ok, "kind": outcome.kind, "code": outcome.code, "reply": outcome.reply}


def _parse_rate(text: str) -> float | None:
    """``none``/``unlimited``, or a rate such as ``20``, ``20/s`` or ``600/min``."""
    if text.strip().lower() in {"none", "unlimited"}:
        return None
    try:
        return parse_rate(text)
    except InvalidInput:
        raise InvalidInput(
            f"--max-rate must be a rate such as 20/s or 600/min, or 'none', not {text!r}"
        ) from None


def _show_one(relay: dict[str, Any], json: bool, verb: str) -> None:
    if json:
        print_json(relay)
        return
    rate = "unlimited" if relay["max_rate"] is None else f"{relay['max_rate']:g}/s"
    console.print(
        f"{verb} relay {relay['name']} ({relay['host']}:{relay['port']}, tls {relay['tls']}, "
        f"weight {relay['weight']}, {relay['max_connections']} connections, {rate}, "
        f"{'enabled' if relay['enabled'] else 'disabled'})."
    )
