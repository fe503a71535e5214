"""``herald demo``: a node plus sample data and a campaign sent to the capture relay."""

from __future__ import annotations

import asyncio

from herald.cli.campaigns import show_report
from herald.cli.context import run_async
from herald.cli.main_banner import print_banner
from herald.cli.output import console
from herald.node import NodeState, run_node
from herald.runtime import Runtime
from herald.services import campaigns
from herald.services.demo import seed_demo


def run_demo(runtime: Runtime, *, subscribers_count: int, exit_after: bool) -> None:
    """Seed, run a node, start the demo campaign, print its report when finished."""
    settings = runtime.settings
    console.print(f"Creating {subscribers_count} demo subscribers and a sample campaign…")
    campaign_id = seed_demo(
        runtime.engine, settings.data_dir, count=subscribers_count, from_addr=settings.from_addr
    )
    stop = asyncio.Event()

    async def ready(state: NodeState) -> None:
        print_banner(settings, state, runtime.engine.url.render_as_string())
        await asyncio.to_thread(campaigns.change_status, runtime.engine, campaign_id, "start")
        console.print(f"Started campaign {campaign_id}; waiting for it to finish…")
        while True:
            report = await asyncio.to_thread(campaigns.campaign_report, runtime.engine, campaign_id)
            if report["status"] in {"finished", "cancelled"}:
                break
            await asyncio.sleep(0.5)
        show_report(report)
        if state.capture:
            console.print(f"The messages are in {settings.capture_dir}/ (open any .eml file).")
        if exit_after:
            stop.set()

    run_async(run_node(runtime, http=True, worker=True, on_ready=ready, stop=stop))
