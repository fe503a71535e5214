"""A private Postfix relay for tests, relaying everything into an aiosmtpd sink.

`postfix_relay` starts Debian's Postfix as an instance of its own: its
config_directory (main.cf, master.cf), queue_directory and log file live under
a pytest tmp dir, its data_directory in a temporary directory of its own (see
`_data_dir`), it listens only on 127.0.0.1:<free port>
and relays every message to a `Sink` (``relayhost = [127.0.0.1]:<sink port>``).
Nothing is shared with a system Postfix that may be running beside it: the
master lock lives in data_directory, every socket and the pid file in
queue_directory, and it is started and stopped with ``postfix -c DIR``.

Postfix only starts as root (CI runs as root). Where it is missing, or we are
not root, the tests that use it are skipped; under ``CI=true`` they fail.
Register with ``pytest_plugins = ["tests.postfix"]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ci import unavailable
from tests.processes import free_port, wait_until
from tests.sinks import Behaviour, Sink

_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0

# Only the services an SMTP-in, SMTP-out relay needs; nothing is chrooted (a
# chroot would need copies of /etc files), and there is no local delivery,
# pickup or TLS manager.
_MASTER_CF = """\
# service  type  private unpriv chroot wakeup maxproc command
{listen}   inet  n       -      n      -      -       smtpd
cleanup    unix  n       -      n      -      0       cleanup
qmgr       unix  n       -      n      300    1       qmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
proxywrite unix  -       -      n      -      1       proxymap
smtp       unix  -       -      n      -      -       smtp
relay      unix  -       -      n      -      -       smtp
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
postlog    unix-dgram n  -      n      -      1       postlogd
"""

# maillog_file (with the postlog service) needs Postfix 3.4 or later.
_MAIN_CF = """\
compatibility_level = 3.6
syslog_name = postfix-herald-test
queue_directory = {queue}
data_directory = {data}
maillog_file = {maillog}
maillog_file_prefixes = {root}
myhostname = relay.herald.test
mydomain = herald.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
in_flow_delay = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
"""


@dataclass(frozen=True)
class PostfixRelay:
    """A running private Postfix: Herald sends to ``url``; it relays into ``sink``."""

    port: int
    sink: Sink
    config_dir: Path
    queue_dir: Path
    data_dir: Path
    maillog: Path

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Postfix's own log so far (empty if it has not written one yet)."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""


def _postfix_or_skip() -> str:
    """Path of the ``postfix`` command; skip (fail under CI) where it cannot run."""
    postfix = shutil.which("postfix", path=_SBIN)
    if postfix is None:
        reason = "Postfix is not installed (Debian package postfix)"
    elif os.geteuid() != 0:
        reason = "Postfix only starts as root"
    else:
        return postfix
    unavailable(reason, in_ci=f"{reason}; the Postfix relay tests need it in CI")


def _data_dir() -> Path:
    """A fresh data_directory the ``postfix`` user can reach.

    The master opens its lock file there as that user, by absolute path, and
    pytest's tmp dirs are private to root (mode 0700), so it cannot live there.
    Removed again by `_stop`.
    """
    path = Path(tempfile.mkdtemp(prefix="herald-postfix-"))
    shutil.chown(path, user="postfix", group="postfix")
    return path


def _write_config(root: Path, sink: Sink, *, port: int) -> PostfixRelay:
    """Write main.cf and master.cf under ``root``; Postfix fills in the queue itself."""
    config_dir = root / "etc"
    config_dir.mkdir()
    queue_dir = root / "spool"
    queue_dir.mkdir(mode=0o755)  # the postfix command chdirs into it before anything else
    maillog = root / "maillog"
    data_dir = _data_dir()
    main_cf = _MAIN_CF.format(
        queue=queue_dir,
        data=data_dir,
        maillog=maillog,
        root=root,
        sink_port=sink.port,
    )
    (config_dir / "main.cf").write_text(main_cf)
    (config_dir / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    return PostfixRelay(port, sink, config_dir, queue_dir, data_dir, maillog)


def _greets(port: int) -> bool:
    """True once something on ``port`` answers with a 220 banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


def _postfix(postfix: str, relay: PostfixRelay, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [postfix, "-c", str(relay.config_dir), command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _start(postfix: str, relay: PostfixRelay) -> None:
    """Start the instance and wait for its banner; fail with Postfix's own words."""
    done = _postfix(postfix, relay, "start")
    if done.returncode != 0:
        pytest.fail(f"postfix start failed:\n{done.stdout}{done.stderr}\n{relay.log()}")
    try:
        wait_until(lambda: _greets(relay.port), _READY_TIMEOUT, "Postfix's 220 banner")
    except AssertionError as exc:
        pytest.fail(f"{exc}\n--- maillog ---\n{relay.log()}")


def _master_pid(relay: PostfixRelay) -> int | None:
    try:
        return int((relay.queue_dir / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(postfix: str, relay: PostfixRelay) -> None:
    """Stop the instance, then kill whatever is left of its process group.

    The master is a session leader, so its pid is the process group of every
    daemon it started; those finish their current request and exit after it.
    """
    pgid = _master_pid(relay)
    with contextlib.suppress(subprocess.TimeoutExpired):  # the kill below still ends it
        _postfix(postfix, relay, "stop")
    if pgid is not None:
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    shutil.rmtree(relay.data_dir, ignore_errors=True)


@pytest.fixture
def postfix_factory(
    tmp_path_factory: pytest.TempPathFactory, sink_factory: Callable[..., Sink]
) -> Iterator[Callable[..., PostfixRelay]]:
    """Start private Postfix relays, each into a new sink of ``behaviour``; all stop after."""
    postfix = _postfix_or_skip()
    started: list[PostfixRelay] = []

    def make(behaviour: Behaviour | None = None) -> PostfixRelay:
        sink = sink_factory(behaviour)
        root = tmp_path_factory.mktemp("postfix")
        relay = _write_config(root, sink, port=free_port())
        started.append(relay)
        _start(postfix, relay)
        return relay

    try:
        yield make
    finally:
        for relay in started:
            _stop(postfix, relay)


@pytest.fixture
def postfix_relay(postfix_factory: Callable[..., PostfixRelay]) -> PostfixRelay:
    """One private Postfix on 127.0.0.1 relaying everything into an ``ok`` sink."""
    return postfix_factory()
