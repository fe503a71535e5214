"""The ``herald`` command: global options, node commands, error handling."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.exc import OperationalError

from herald import __version__
from herald.cli import backup, campaigns, lists, maintenance, nodes, relays, subscribers, users
from herald.cli.alerts import app as alerts_app
from herald.cli.check import NagiosCommand, check
from herald.cli.context import CliContext, cli_context, run_async
from herald.cli.main_banner import print_banner
from herald.cli.output import console, fail, print_json
from herald.cli.status import status
from herald.errors import HeraldError
from herald.services import health
from herald.store.engine import migrate

if TYPE_CHECKING:
    from herald.node import NodeState

app = typer.Typer(
    name="herald",
    help="Herald: self-hosted email marketing built for high availability.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(lists.app, name="lists")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(nodes.app, name="nodes")
app.add_typer(relays.app, name="relays")
app.add_typer(users.users_app, name="users")
app.add_typer(users.tokens_app, name="tokens")
app.command("check", cls=NagiosCommand)(check)
app.command("status")(status)
app.add_typer(backup.app, name="backup")
app.add_typer(alerts_app, name="alerts")
app.add_typer(maintenance.app, name="maintenance")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///PATH or postgresql://… [env HERALD_DATABASE_URL]")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env HERALD_DATA_DIR]")
    ] = None,
    relays: Annotated[
        str | None, typer.Option(help="Comma-separated smtp:// relay URLs [env HERALD_RELAYS]")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Public URL for links [env HERALD_BASE_URL]")
    ] = None,
    from_addr: Annotated[
        str | None, typer.Option("--from", help="Default sender [env HERALD_FROM]")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    ctx.obj = CliContext(
        overrides={
            "database_url": database_url,
            "data_dir": data_dir,
            "relays": relays,
            "base_url": base_url,
            "from_addr": from_addr,
        }
    )


@app.command()
def version() -> None:
    """Print Herald's version."""
    console.print(__version__)


@app.command()
def init(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Create or migrate the database (idempotent)."""
    runtime = cli_context(ctx).runtime()
    before, after = migrate(runtime.engine)
    url = runtime.engine.url.render_as_string(hide_password=True)
    if json:
        print_json({"database": url, "revision_before": before, "revision": after})
    else:
        state = (
            "already up to date" if before == after else f"migrated {before or 'empty'} → {after}"
        )
        console.print(f"Database {url}: {state}.")


@app.command("migrate")
def migrate_command(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option("--check", help="Only tell whether this version fits the database."),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Migrate the database (expand-only, safe while older nodes run), or --check it.

    With --check: exit 0 when this version of Herald can run against the
    database (schema current, or newer from a later version), 1 when it needs
    'herald migrate' first. Live nodes and their versions are listed.
    """
    runtime = cli_context(ctx).runtime()
    if not check:
        init(ctx, json)
        return
    report = health.schema_compatibility(runtime.engine)
    if json:
        print_json(report)
    else:
        console.print(
            f"Schema {report['revision'] or 'empty'} (this version's head: {report['head']}): "
            f"{report['state']} — {'compatible' if report['compatible'] else 'run herald migrate'}"
        )
        for node in report["live_nodes"]:  # type: ignore[attr-defined]
            console.print(f"  live node {node['name']}: version {node['version']}")
    raise typer.Exit(0 if report["compatible"] else 1)


def _serve_options(ctx: typer.Context, host: str | None, port: int | None) -> CliContext:
    cctx = cli_context(ctx)
    cctx.overrides.update({"http_host": host, "http_port": port})
    return cctx


HostOpt = Annotated[str | None, typer.Option(help="HTTP listen address [env HERALD_HTTP_HOST]")]
PortOpt = Annotated[int | None, typer.Option(help="HTTP port [env HERALD_HTTP_PORT]")]


@app.command()
def up(ctx: typer.Context, host: HostOpt = None, port: PortOpt = None) -> None:
    """Run one node: HTTP server plus a sending worker (Ctrl-C or SIGTERM drains it)."""
    from herald.node import run_node  # the HTTP stack loads only for node commands

    runtime = _serve_options(ctx, host, port).runtime(migrate_schema=True)

    async def ready(state: NodeState) -> None:
        print_banner(runtime.settings, state, runtime.engine.url.render_as_string())

    run_async(run_node(runtime, http=True, worker=True, on_ready=ready))
    console.print("Herald stopped.")


@app.command()
def worker(ctx: typer.Context) -> None:
    """Run a sending-only node."""
    from herald.node import run_node

    runtime = cli_context(ctx).runtime(migrate_schema=False)

    async def ready(state: NodeState) -> None:
        print_banner(runtime.settings, state, runtime.engine.url.render_as_string(), http=False)

    run_async(run_node(runtime, http=False, worker=True, on_ready=ready))


@app.command()
def demo(
    ctx: typer.Context,
    host: HostOpt = None,
    port: PortOpt = None,
    subscribers_count: Annotated[int, typer.Option("--subscribers", min=1)] = 1000,
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop once the demo campaign has finished.")
    ] = False,
) -> None:
    """Run a node with sample data: 1,000 subscribers and a personalised campaign."""
    from herald.cli.demo import run_demo

    runtime = _serve_options(ctx, host, port).runtime(migrate_schema=True)
    run_demo(runtime, subscribers_count=subscribers_count, exit_after=exit_after)


def main() -> None:
    """Entry point: run the app, mapping Herald errors to messages and exit codes."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)  # typer.Exit(n) comes back as a return value here
    except HeraldError as exc:
        fail(exc.message)
        sys.exit(exc.exit_code)
    except OperationalError as exc:
        fail(f"database unavailable: {str(exc.orig or exc).strip().splitlines()[0]}")
        sys.exit(5)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        fail("aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        show = getattr(exc, "show", None)
        if code is not None and show is not None:
            show()
            sys.exit(code)
        raise
