"""``herald status``: uptime, response times and error budget from the built-in probes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.domain.slo import FIGURE_COLUMNS, WINDOWS, figure_cells
from herald.services.status import status_report

WindowOpt = Annotated[
    str | None,
    typer.Option("--window", help="Only this window: 24h, 7d or 30d (default: all three)."),
]


def status(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    window: WindowOpt = None,
) -> None:
    """Uptime %, p50/p95/p99, error rate and last error per endpoint and relay, the
    error budget left against HERALD_SLO, the nodes and the relay circuits."""
    runtime = cli_context(ctx).runtime()
    report = status_report(
        runtime.engine,
        windows=[window] if window else list(WINDOWS),
        slo=runtime.settings.slo,
    )
    if json:
        print_json(report)
        return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    console.print(f"Herald is [bold]{report['state']}[/] (SLO {report['slo_pct']:g} %).")
    print_table(
        "All endpoints (the SLO)",
        ["window", *FIGURE_COLUMNS],
        [(name, *figure_cells(f)) for name, f in report["endpoints"].items()],
    )
    for kind, title in (("endpoint", "Endpoints"), ("relay", "Relays (probes)")):
        targets = [t for t in report["targets"] if t["kind"] == kind]
        if targets:
            print_table(
                title,
                ["target", "now", "window", *FIGURE_COLUMNS],
                [
                    (t["name"], _now(t["up"]), name, *figure_cells(f))
                    for t in targets
                    for name, f in t["windows"].items()
                ],
            )
    for t in report["targets"]:
        if t["last_error"] is not None:
            failed = t["last_error"]
            console.print(
                f"Last failure of {t['kind']} {t['name']}: {failed['at'][:19]} "
                f"{failed['error'] or ''}",
                markup=False,
            )
    print_table(
        "Nodes",
        ["name", "roles", "state", "alive"],
        [
            (n["name"], ",".join(n["roles"]), n["state"], "yes" if n["alive"] else "no")
            for n in report["nodes"]
        ],
    )
    print_table(
        "Relay circuits", ["name", "circuit"], [(r["name"], r["state"]) for r in report["relays"]]
    )


def _now(up: bool | None) -> str:
    return {True: "up", False: "DOWN", None: "-"}[up]
