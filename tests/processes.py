"""Real ``herald`` processes for tests: start them, signal them, always clean up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Nodes:
    """Starts ``herald worker`` processes against one database."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, relay_url: str, **settings: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "HERALD_DATABASE_URL": self.database_url,
            "HERALD_RELAYS": relay_url,
            "HERALD_NODE_NAME": name,
            "HERALD_SECRET_KEY": "test-secret",
            "HERALD_DATA_DIR": str(self.data_dir),
            **{f"HERALD_{k.upper()}": v for k, v in settings.items()},
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A file, not a pipe: an unread pipe fills up and blocks the node.
        with (self.data_dir / f"{name}.log").open("a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "herald", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def herald_nodes(database_url: str, tmp_path: Path) -> Iterator[Nodes]:
    nodes = Nodes(database_url, tmp_path / "data")
    yield nodes
    nodes.stop_all()


UP_TIMEOUT = 30.0


class HeraldUp:
    """One ``herald up`` process (HTTP and worker) that can be killed and restarted."""

    def __init__(self, database_url: str, data_dir: Path, relay_url: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_DATA_DIR": str(data_dir),
            "HERALD_SECRET_KEY": "test-secret",
            "HERALD_NODE_NAME": "tracker",
            "HERALD_RELAYS": relay_url,
            "HERALD_HTTP_PORT": str(self.port),
            "HERALD_BASE_URL": f"http://127.0.0.1:{self.port}",
        }
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with (self.data_dir / "node.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herald", "up"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until(self._answers, UP_TIMEOUT, "the node to answer /healthz")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited: {(self.data_dir / 'node.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
