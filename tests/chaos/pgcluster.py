"""A real PostgreSQL primary with a streaming standby, for failover tests.

``PgPair`` builds both servers from this machine's PostgreSQL binaries
(``pg_config --bindir``, else the Debian layout ``/usr/lib/postgresql/<v>/bin``,
or ``HERALD_PG_BINDIR``) on free loopback ports, in a temporary directory:

1. ``initdb`` the primary (trust auth on 127.0.0.1, replication allowed),
   start it, create the database ``herald``;
2. ``pg_basebackup -R`` a standby from it and start it (hot standby);
3. with ``synchronous=True`` (the default) make the standby synchronous, so a
   commit is acknowledged only once the standby has flushed it; that is what
   makes "no acknowledged write is lost on failover" a promise at all.

``initdb`` refuses to run as root: as root every server command runs as the
``postgres`` OS user, and the directory is created in the system temp dir
(pytest's own temp root is private to root) and handed to that user.

Use it as a context manager or through the ``pg_pair`` fixture
(tests/chaos/conftest.py). Every wait has a deadline; ``stop()`` always
stops both servers, including the processes a killed postmaster left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil
import psycopg

from tests.processes import free_port, wait_until

PG_OS_USER = "postgres"
DBNAME = "herald"
COMMAND_TIMEOUT = 60.0
WAIT_TIMEOUT = 30.0


class PgHarnessUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or the OS user to run them) are missing."""


def find_bindir() -> Path:
    """Directory holding initdb, pg_ctl, pg_basebackup and postgres.

    Raises PgHarnessUnavailable when none is found.
    """
    candidates: list[str] = []
    if os.environ.get("HERALD_PG_BINDIR"):
        candidates.append(os.environ["HERALD_PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return path
    raise PgHarnessUnavailable(f"PostgreSQL server binaries not found (looked in {candidates})")


@dataclass
class _Node:
    name: str
    datadir: Path
    port: int
    orphans: list[psutil.Process] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.name}.log"

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid if that process is still alive, else None."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


class PgPair:
    """A PostgreSQL primary and a streaming standby on 127.0.0.1 (see module docstring)."""

    def __init__(self, base_dir: Path | None = None, *, synchronous: bool = True) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam(PG_OS_USER)
            except KeyError as exc:
                raise PgHarnessUnavailable(f"running as root and no {PG_OS_USER!r} user") from exc
        self.synchronous = synchronous
        self._own_dir = self.as_root or base_dir is None
        parent = None if self._own_dir else base_dir
        self.dir = Path(tempfile.mkdtemp(prefix="herald-pg-", dir=parent))
        self.sockdir = self.dir / "sock"
        self.primary = _Node("primary", self.dir / "primary", free_port())
        self.standby = _Node("standby", self.dir / "standby", free_port())

    @property
    def primary_port(self) -> int:
        return self.primary.port

    @property
    def standby_port(self) -> int:
        return self.standby.port

    @property
    def url(self) -> str:
        """libpq multi-host URL: whichever of the two accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
            f"/{DBNAME}?target_session_attrs=read-write"
        )

    def node_url(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{DBNAME}"

    def start(self) -> PgPair:
        """Create and start both servers; on any failure stop what was started and raise."""
        try:
            self._prepare_dir()
            self._init_primary()
            self._start(self.primary)
            self._sql(self.primary.port, f'CREATE DATABASE "{DBNAME}"', dbname="postgres")
            self._clone_standby()
            self._start(self.standby)
            self._wait_streaming()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> PgPair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster (a crash), then wait until its port refuses."""
        pid = self.primary.postmaster_pid()
        if pid is None:
            raise RuntimeError("primary is not running")
        # Its backends outlive it briefly; remember them so stop() can reap them.
        with contextlib.suppress(psutil.Error):
            self.primary.orphans = psutil.Process(pid).children(recursive=True)
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not _accepts_tcp(self.primary.port),
            timeout=WAIT_TIMEOUT,
            what="the killed primary's port to close",
        )

    def promote_standby(self) -> None:
        """Promote the standby and wait until it accepts a write."""
        self._pg_ctl(self.standby, "promote", "-w", "-t", str(int(WAIT_TIMEOUT)))
        wait_until(
            lambda: self._accepts_writes(self.standby.port),
            timeout=WAIT_TIMEOUT,
            what="the promoted standby to accept writes",
        )

    def wait_replicated(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until the standby has replayed everything the primary has flushed."""
        with self._connect(self.primary.port) as conn:
            row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        lsn = row[0]
        wait_until(
            lambda: (
                self._scalar(
                    self.standby.port, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", lsn
                )
                is True
            ),
            timeout=timeout,
            what=f"the standby to replay up to {lsn}",
        )

    def stop(self) -> None:
        """Stop both servers and remove the directory; never raises, always bounded."""
        for node in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                self._stop_node(node)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _prepare_dir(self) -> None:
        self.sockdir.mkdir()
        if self.as_root:
            user = pwd.getpwnam(PG_OS_USER)
            for path in (self.dir, self.sockdir):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _init_primary(self) -> None:
        self._run(
            "initdb",
            *("-D", str(self.primary.datadir), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        self._append_conf(
            self.primary,
            wal_level="replica",
            max_wal_senders="5",
            hot_standby="on",
            max_connections="40",
            shared_buffers="'16MB'",
            listen_addresses="'127.0.0.1'",
            unix_socket_directories=f"'{self.sockdir}'",
            wal_sender_timeout="'5s'",
            wal_receiver_status_interval="'1s'",
        )
        with (self.primary.datadir / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 127.0.0.1/32 trust\n")
            hba.write("host replication all 127.0.0.1/32 trust\n")

    def _clone_standby(self) -> None:
        self._run(
            "pg_basebackup",
            *("-D", str(self.standby.datadir), "-h", "127.0.0.1"),
            *("-p", str(self.primary.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast"),
        )
        self._append_conf(self.standby)

    def _wait_streaming(self) -> None:
        if self.synchronous:
            # Only the primary's own auto.conf gets this: it was set after the
            # base backup, so a promoted standby does not wait for a replica.
            self._sql(self.primary.port, "ALTER SYSTEM SET synchronous_standby_names = '*'")
            self._sql(self.primary.port, "SELECT pg_reload_conf()")
        wanted = "sync" if self.synchronous else "async"
        wait_until(
            lambda: (
                self._scalar(
                    self.primary.port,
                    "SELECT count(*) FROM pg_stat_replication"
                    " WHERE state = 'streaming' AND sync_state = %s",
                    wanted,
                )
                == 1
            ),
            timeout=WAIT_TIMEOUT,
            what=f"the standby to stream ({wanted})",
        )

    def _append_conf(self, node: _Node, **settings: str) -> None:
        settings["port"] = str(node.port)
        with (node.datadir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self, node: _Node) -> None:
        try:
            self._pg_ctl(node, "start", "-w", "-t", str(int(WAIT_TIMEOUT)), "-l", str(node.log))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- {node.name} log ---\n{node.log_tail()}") from exc

    def _stop_node(self, node: _Node) -> None:
        pid = node.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._pg_ctl(node, "stop", "-m", "immediate", "-w", "-t", "10")
        leftovers = [p for p in node.orphans if p.is_running()]
        pid = node.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                postmaster = psutil.Process(pid)
                leftovers += [postmaster, *postmaster.children(recursive=True)]
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)

    def _pg_ctl(self, node: _Node, action: str, *args: str) -> None:
        self._run("pg_ctl", "-D", str(node.datadir), *args, action)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, cwd=self.dir
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )

    def _connect(self, port: int, dbname: str = DBNAME) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def _sql(self, port: int, sql: str, *, dbname: str = DBNAME) -> None:
        with self._connect(port, dbname) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def _scalar(self, port: int, sql: str, *params: object) -> object:
        """First column of the first row, or None if the server cannot be asked."""
        try:
            with self._connect(port) as conn:
                row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        except psycopg.Error:
            return None
        return None if row is None else row[0]

    def _accepts_writes(self, port: int) -> bool:
        return self._scalar(port, "SELECT NOT pg_is_in_recovery()") is True


def _accepts_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
