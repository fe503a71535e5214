"""A rolling upgrade across real migrations while a campaign sends.

"Version N" is Herald as of commit ``e05b47c`` (schema head 0007), extracted
from git and run from a temporary directory (same interpreter and
dependencies); "version N+1" is this working tree, whose expand-only
migrations 0008 and later add tables and columns. One database, one
campaign, slowed by a rate limit so that every step below happens while it
sends:

1. version N creates the schema (0007), the list and the campaign; two
   version-N worker nodes start sending;
2. ``herald migrate --check`` from N+1 says "behind" (exit 1); N+1 runs
   ``herald migrate`` while the old nodes send; both versions' ``--check``
   then say compatible (exit 0), and both old nodes keep sending on the
   migrated schema;
3. each node in turn is drained with SIGTERM (exit 0 within its lease, no
   row left claimed) and replaced by a version-N+1 node of the same name,
   which sends; between the two replacements one node of each version sends;
4. the rate limit is lifted and the campaign finishes.

The ledger: every subscriber received exactly one message (lost 0) and no
Message-ID arrived twice (dup 0: a drain leaves nothing in flight to resend).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine, func, select

from herald.services import campaigns
from herald.store.engine import current_revision, head_revision, make_engine
from herald.store.tables import deliveries
from tests.ci import unavailable
from tests.factories import SECRET, finished
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

REPO = Path(__file__).resolve().parents[2]
# A checkout owned by another user (a CI container) is still readable.
GIT = ("git", "-C", str(REPO), "-c", f"safe.directory={REPO}")
VERSION_N = "e05b47c"
VERSION_N_HEAD = "0007"
TOTAL = 4000
# Messages per second for the whole cluster while the upgrade runs: 100 s of
# sending at most, far longer than the upgrade takes; lifted afterwards.
SLOW_RATE = 40.0
LEASE = "5"
SETTINGS = {"lease_ttl": LEASE, "concurrency": "4", "batch_size": "50"}
NAMES = ("a", "b")
# Bounds, not expectations.
PROGRESS_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0
FINISH_TIMEOUT = 120.0

# Run by version N's interpreter path: its own services and tables create the
# list, the subscribers and the (rate-limited, started) campaign.
SEED = """
import sys
from sqlalchemy import insert, select
from herald.domain.clock import utcnow
from herald.services import campaigns, lists
from herald.store.engine import make_engine
from herald.store.tables import subscribers, subscriptions

url, total, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
engine = make_engine(url)
list_id = lists.create_list(engine, "News")
now = utcnow()
with engine.begin() as conn:
    conn.execute(insert(subscribers), [
        {"email": f"user{n}@example.com", "name": f"User {n}", "attribs": {},
         "status": "enabled", "created_at": now, "updated_at": now}
        for n in range(1, total + 1)
    ])
    ids = conn.scalars(select(subscribers.c.id)).all()
    conn.execute(insert(subscriptions), [
        {"list_id": list_id, "subscriber_id": i, "status": "confirmed",
         "created_at": now, "updated_at": now}
        for i in ids
    ])
draft = campaigns.CampaignDraft(
    name="Upgrade", subject="Hello {{ subscriber.name }}", html="<p>Hi</p>", text=None,
    from_addr="Herald Test <news@herald.test>", list_names=("News",), rate_limit=rate,
)
campaign_id = campaigns.create_campaign(engine, draft)
campaigns.change_status(engine, campaign_id, "start")
print(campaign_id)
"""


def _have_commit() -> bool:
    probe = [*GIT, "cat-file", "-e", f"{VERSION_N}^{{commit}}"]
    try:
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def _fetch_commit() -> None:
    fetch = [*GIT, "fetch", "--depth=100", "origin", VERSION_N]
    with contextlib.suppress(FileNotFoundError, subprocess.TimeoutExpired):
        subprocess.run(fetch, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def version_n(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``src`` directory of version N, extracted from git (fetched if the clone is shallow)."""
    if not _have_commit():
        _fetch_commit()
    if not _have_commit():
        reason = f"commit {VERSION_N} (version N) is not in this clone and could not be fetched"
        unavailable(reason, in_ci=f"{reason}: CI needs the git history (fetch-depth 0)")
    dest = tmp_path_factory.mktemp("version-n")
    archive = subprocess.run(
        [*GIT, "archive", VERSION_N, "src"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


@dataclass
class Cluster:
    """The database, one sink per node process, and how to run either version."""

    url: str
    data_dir: Path
    old_code: Path
    nodes: Nodes
    sinks: dict[str, Sink]

    def python(self, code: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
        """Run this interpreter (``-m herald …`` or ``-c …``) with version N's code
        (``code``) or this tree's (None) on the path, against the database."""
        env = {
            **os.environ,
            "HERALD_DATABASE_URL": self.url,
            "HERALD_DATA_DIR": str(self.data_dir),
            "HERALD_SECRET_KEY": SECRET,
        }
        if code is not None:  # first on the path: it hides the installed herald
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def start(self, name: str, sink: str, *, code: Path | None) -> Popen[str]:
        """Start worker ``name`` of version N (``code``) or of this tree, sending to ``sink``."""
        with pytest.MonkeyPatch.context() as env:
            if code is not None:  # Nodes.start passes os.environ on
                env.setenv("PYTHONPATH", str(code), prepend=os.pathsep)
            return self.nodes.start(name, self.sinks[sink].url, **SETTINGS)

    def sent(self, *names: str) -> int:
        return sum(self.sinks[n].count() for n in names or self.sinks)


@pytest.fixture(params=["postgresql", "sqlite"])
def cluster(
    request: pytest.FixtureRequest,
    empty_database: Callable[[str], str],
    tmp_path: Path,
    version_n: Path,
    sink_factory: Callable[..., Sink],
) -> Iterator[Cluster]:
    """A database of each backend with no schema (version N creates it), one
    sink per node and version; every node process is killed afterwards."""
    url = empty_database(request.param)
    nodes = Nodes(url, tmp_path / "data")
    sinks = {f"{v}-{n}": sink_factory() for v in ("old", "new") for n in NAMES}
    try:
        yield Cluster(url, tmp_path / "data", version_n, nodes, sinks)
    finally:
        nodes.stop_all()


def _ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def _claimed_by(engine: Engine, node: str) -> int:
    with engine.begin() as conn:
        query = select(func.count()).where(
            deliveries.c.status == "sending", deliveries.c.lease_owner == node
        )
        return int(conn.scalar(query.select_from(deliveries)) or 0)


def _grows(cluster: Cluster, *names: str, by: int = 10) -> None:
    """Wait until each of the named sinks has received ``by`` more messages."""
    for name in names:
        target = cluster.sent(name) + by
        reached = functools.partial(_reached, cluster, name, target)
        wait_until(reached, PROGRESS_TIMEOUT, f"{name} to send {by} more")


def _reached(cluster: Cluster, name: str, count: int) -> bool:
    return cluster.sent(name) >= count


def _replace(cluster: Cluster, engine: Engine, procs: dict[str, Popen[str]], name: str) -> float:
    """Drain version N's node ``name`` with SIGTERM and start version N+1's in its place.

    Returns the seconds the drain took; the new node has sent when this returns.
    """
    started = time.monotonic()
    procs[name].send_signal(signal.SIGTERM)
    code = procs[name].wait(timeout=float(LEASE) * 2)
    drained = time.monotonic() - started
    assert code == 0, cluster.nodes.log(name)[-2000:]
    assert _claimed_by(engine, name) == 0, "the drained node left rows claimed"
    procs[name] = cluster.start(name, f"new-{name}", code=None)
    _grows(cluster, f"new-{name}", by=1)
    return drained


@pytest.mark.slow
def test_it_upgrades_every_node_in_turn_across_migrations_while_sending(
    cluster: Cluster,
) -> None:
    old = cluster.old_code
    _ok(cluster.python(old, "-m", "herald", "init"))
    engine = make_engine(cluster.url)
    try:
        assert current_revision(engine) == VERSION_N_HEAD
        seeded = _ok(cluster.python(old, "-c", SEED, cluster.url, str(TOTAL), str(SLOW_RATE)))
        campaign_id = int(seeded.strip())
        procs = {n: cluster.start(n, f"old-{n}", code=old) for n in NAMES}
        _grows(cluster, "old-a", "old-b")

        # Migrate from the new version while the old nodes send.
        assert "behind" in _ok(cluster.python(None, "-m", "herald", "migrate", "--check"), 1)
        _ok(cluster.python(None, "-m", "herald", "migrate"))
        assert current_revision(engine) == head_revision() != VERSION_N_HEAD
        assert "compatible" in _ok(cluster.python(None, "-m", "herald", "migrate", "--check"))
        assert "ahead" in _ok(cluster.python(old, "-m", "herald", "migrate", "--check"))
        _grows(cluster, "old-a", "old-b")  # version N sends on the migrated schema

        drains = [_replace(cluster, engine, procs, "a")]
        _grows(cluster, "old-b", "new-a")  # one node of each version, side by side
        drains.append(_replace(cluster, engine, procs, "b"))
        _grows(cluster, "new-a", "new-b")
        assert cluster.sent() < TOTAL, "the campaign ended before the upgrade did"

        campaigns.set_rate(engine, campaign_id, None)
        wait_until(finished(engine, campaign_id), FINISH_TIMEOUT, "the campaign to finish")
        dead = {n: cluster.nodes.log(n)[-2000:] for n, p in procs.items() if p.poll() is not None}
        assert not dead, dead
    finally:
        engine.dispose()

    received: Counter[str | None] = Counter()
    for sink in cluster.sinks.values():
        received.update(sink.message_ids())
    assert None not in received
    assert set(received.values()) == {1}  # dup = 0
    rcpts = [r for sink in cluster.sinks.values() for m in sink.messages for r in m.rcpts]
    assert sorted(rcpts) == sorted(f"user{n}@example.com" for n in range(1, TOTAL + 1))
    print(
        f"\nrolling upgrade {VERSION_N_HEAD} → {head_revision()}: per sink "
        f"{ {name: sink.count() for name, sink in cluster.sinks.items()} }, duplicates 0, "
        f"SIGTERM→exit {', '.join(f'{d:.2f}s' for d in drains)}"
    )
