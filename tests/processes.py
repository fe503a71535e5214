"""Real ``herald`` processes for tests: start them, signal them, always clean up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
