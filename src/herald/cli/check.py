"""``herald check``: a monitoring plugin for Nagios, Icinga and Zabbix.

It prints one status line with perfdata and exits 0 OK, 1 WARNING,
2 CRITICAL or 3 UNKNOWN, whatever happens: a usage error or an unexpected
failure is UNKNOWN with a status line too, never a traceback and never
click's usual exit status 2 (which a monitoring system would read as
CRITICAL). The judgement itself is `herald.domain.nagios`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from herald.cli.context import cli_context
from herald.domain import nagios
from herald.errors import DatabaseUnavailable, HeraldError
from herald.services import monitoring

USAGE_ERROR = 2  # click's exit status for a usage error


class NagiosCommand(TyperCommand):
    """A command whose usage errors are reported as UNKNOWN status lines (exit 3)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            # Typer bundles its own click, so its UsageError is recognised by
            # what it carries (as cli.main does), not by class.
            message = getattr(exc, "format_message", None)
            if getattr(exc, "exit_code", None) != USAGE_ERROR or message is None:
                raise
            typer.echo(nagios.status_line(nagios.unknown(message())))
            raise typer.Exit(int(nagios.State.UNKNOWN)) from None


PendingOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="N", help="Open deliveries of running campaigns above N."),
]
AgeOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="S", help="Oldest due, pending delivery waiting over S s."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(help="Also GET this URL (a node's /readyz): anything but 2xx is CRITICAL."),
]


def check(
    ctx: typer.Context,
    warn_pending: PendingOpt = None,
    crit_pending: PendingOpt = None,
    warn_age: AgeOpt = None,
    crit_age: AgeOpt = None,
    url: UrlOpt = None,
) -> None:
    """Check Herald's health like a Nagios plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

    CRITICAL: database unreachable or not migrated, a running campaign with no
    live worker, every relay open or failed, a threshold's critical level.
    WARNING: some relay open or failed, a threshold's warning level.
    """
    try:
        limits = nagios.make_thresholds(
            warn_pending=warn_pending,
            crit_pending=crit_pending,
            warn_age=warn_age,
            crit_age=crit_age,
        )
        verdict = _judge(ctx, limits, url)
    except HeraldError as exc:
        verdict = nagios.unknown(exc.message)
    except Exception as exc:  # a plugin must answer with a status line, whatever failed
        verdict = nagios.unknown(f"check failed: {type(exc).__name__}: {exc}")
    typer.echo(nagios.status_line(verdict))
    raise typer.Exit(int(verdict.state))


def _judge(ctx: typer.Context, limits: nagios.Thresholds, url: str | None) -> nagios.Verdict:
    """Observe the database (and ``url``) with the CLI's settings, and judge."""
    settings = cli_context(ctx).settings()
    probe = monitoring.probe_url(url) if url else None
    try:
        engine = monitoring.engine_for_check(settings.effective_database_url)
    except DatabaseUnavailable as exc:
        observed = nagios.Observation(database_problem=exc.message)
    else:
        try:
            observed = monitoring.observe(engine)
        finally:
            engine.dispose()
    return nagios.evaluate(monitoring.with_probe(observed, probe), limits)
