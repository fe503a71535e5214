"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, each in its own thread.

A `Sink` listens on a free port and behaves as its `Behaviour` says: accept
and record (`ok`), refuse some recipients (`fail_rcpt`), defer first attempts
(`temp_fail_then_ok`), answer every command of one stage with a fixed reply
(`reply_to_all`), answer slowly (`slow`), drop the connection after the whole
message but before replying (`drop_after_data`), drop it when the client
announces DATA (`drop_before_dot`), require AUTH (`needs_auth`), or have no
listener at all (`refuse`).

Use as a context manager (``with Sink(ok()) as sink: ...``) or through the
fixtures, which tests/conftest.py registers for every test
(``pytest_plugins = ["tests.sinks"]``): ``sink_factory(behaviour)`` starts a
sink and stops it after the test; ``sink`` is one ``ok`` sink.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

RcptRule = Mapping[str, int] | Callable[[str], int | None]

_DEFAULT_TEXT = {
    421: "4.7.0 Service not available, closing channel",
    451: "4.3.0 Temporary failure, try again later",
    452: "4.2.2 Mailbox over quota",
    530: "5.7.0 Authentication required",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 No such user here",
    552: "5.2.2 Mailbox full",
    553: "5.1.3 Bad recipient address syntax",
    554: "5.7.1 Relay access denied",
}


@dataclass(frozen=True)
class Behaviour:
    """How a sink answers. The helpers below build the common ones."""

    rcpt_rule: RcptRule | None = None
    temp_failures: int = 0
    reply_stage: str | None = None  # connect, ehlo, mail, rcpt, data or dot
    reply: tuple[int, str] = (250, "OK")
    delay: float = 0.0
    drop_after_data: bool = False
    drop_before_dot: bool = False
    drop_limit: int | None = None  # drop only this many times, then behave
    deliver_dropped: bool = True  # record a message dropped after its dot
    credentials: tuple[str, str] | None = None
    refuse: bool = False
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd handles it but does not say so)


def ok() -> Behaviour:
    """Accept and record every message."""
    return Behaviour()


def fail_rcpt(rule: RcptRule) -> Behaviour:
    """Refuse a recipient with the code ``rule`` gives it (a mapping or a function)."""
    return Behaviour(rcpt_rule=rule)


def temp_fail_then_ok(attempts: int = 1) -> Behaviour:
    """Answer 451 to the first ``attempts`` RCPT TO of each address, then 250."""
    return Behaviour(temp_failures=attempts)


def reply_to_all(code: int, text: str | None = None, *, stage: str = "mail") -> Behaviour:
    """Answer every command of ``stage`` with ``code`` (at connect: then hang up)."""
    return Behaviour(reply_stage=stage, reply=(code, text or _DEFAULT_TEXT.get(code, "")))


def slow(seconds: float) -> Behaviour:
    """Wait ``seconds`` before each reply (greeting, EHLO, MAIL, RCPT, DATA, dot)."""
    return Behaviour(delay=seconds)


def drop_after_data(times: int | None = None, *, deliver: bool = True) -> Behaviour:
    """Read the whole message, then close without replying (``times`` times).

    With ``deliver`` the message is recorded as received, like a relay that
    queued it just before the connection died.
    """
    return Behaviour(drop_after_data=True, drop_limit=times, deliver_dropped=deliver)


def drop_before_dot(times: int | None = None) -> Behaviour:
    """Close the connection when the client sends DATA (``times`` times)."""
    return Behaviour(drop_before_dot=True, drop_limit=times)


def needs_auth(username: str, password: str) -> Behaviour:
    """Require AUTH PLAIN/LOGIN (without TLS) with these credentials."""
    return Behaviour(credentials=(username, password))


def refuse() -> Behaviour:
    """No listener: connecting is refused."""
    return Behaviour(refuse=True)


@dataclass(frozen=True)
class Received:
    """One message as the sink got it."""

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    message_id: str | None


def message_id_of(data: bytes) -> str | None:
    """The Message-ID header value, found with a cheap search of the header block."""
    end = data.find(b"\r\n\r\n")
    head = b"\r\n" + (data if end < 0 else data[:end]).lower()
    start = head.find(b"\r\nmessage-id:")
    if start < 0:
        return None
    start += len(b"\r\nmessage-id:")
    stop = head.find(b"\r\n", start)
    original = (b"\r\n" + data)[start : stop if stop >= 0 else len(head)]
    return original.strip().decode("ascii", "replace") or None


@dataclass
class _State:
    lock: threading.Condition = field(default_factory=threading.Condition)
    messages: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    drops: int = 0
    sessions: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)


class Sink:
    """A real SMTP server on 127.0.0.1; all reads are thread-safe."""

    host = "127.0.0.1"

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or ok()
        self._state = _State()
        self._controller: _Controller | None = None
        self._placeholder: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> Sink:
        """Start listening (or, for `refuse`, reserve a port nobody listens on)."""
        if self.behaviour.refuse:
            # A bound socket that never listens: connections get RST, and no
            # other test can take the port meanwhile.
            self._placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._placeholder.bind((self.host, 0))
            self.port = self._placeholder.getsockname()[1]
            return self
        self._controller = _Controller(self, _Handler(self.behaviour, self._state))
        self._controller.start()
        self.port = self._controller.port
        with self._state.lock:
            self._state.connections = 0  # forget the controller's own readiness check
        return self

    def restart(self) -> None:
        """Start listening again on the same port (after `stop`), keeping what was received."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def kick(self, timeout: float = 5.0) -> None:
        """Close every open connection from the server side, like a relay restart."""
        controller = self._controller
        if controller is None:
            return
        done = threading.Event()

        def close_all() -> None:
            with self._state.lock:
                sessions = list(self._state.sessions)
            for session in sessions:
                if session.transport is not None:
                    session.transport.close()
            done.set()

        controller.loop.call_soon_threadsafe(close_all)
        if not done.wait(timeout):
            raise TimeoutError("sink did not close its connections in time")

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.messages)

    @property
    def connections(self) -> int:
        """Connections accepted since start."""
        with self._state.lock:
            return self._state.connections

    @property
    def drops(self) -> int:
        """Connections this sink dropped on purpose (either drop behaviour)."""
        with self._state.lock:
            return self._state.drops

    def count(self) -> int:
        with self._state.lock:
            return len(self._state.messages)

    def message_ids(self) -> Counter[str | None]:
        """How many times each Message-ID arrived (a value above 1 is a duplicate)."""
        with self._state.lock:
            return Counter(m.message_id for m in self._state.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages arrived; False at the deadline."""
        with self._state.lock:
            return self._state.lock.wait_for(lambda: len(self._state.messages) >= count, timeout)

    async def until(self, count: int, timeout: float = 10.0) -> bool:
        """`wait_for` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)


class _Handler:
    """aiosmtpd hooks implementing a `Behaviour`; runs in the sink's thread."""

    def __init__(self, behaviour: Behaviour, state: _State) -> None:
        self.b = behaviour
        self.state = state

    async def _pause(self) -> None:
        if self.b.delay:
            await asyncio.sleep(self.b.delay)

    def _fixed(self, stage: str) -> str | None:
        if self.b.reply_stage != stage:
            return None
        return f"{self.b.reply[0]} {self.b.reply[1]}".rstrip()

    def take_drop(self) -> bool:
        """Count one drop if the behaviour still allows one."""
        with self.state.lock:
            if self.b.drop_limit is not None and self.state.drops >= self.b.drop_limit:
                return False
            self.state.drops += 1
            return True

    async def handle_EHLO(
        self, server: Any, session: Any, env: Any, host: str, rs: list[str]
    ) -> Any:
        await self._pause()
        session.host_name = host
        fixed = self._fixed("ehlo")
        if fixed:
            return [fixed]
        return [*rs[:-1], "250-PIPELINING", rs[-1]] if self.b.pipelining else rs

    async def handle_MAIL(self, server: Any, session: Any, env: Any, addr: str, opts: Any) -> str:
        await self._pause()
        fixed = self._fixed("mail")
        if fixed:
            return fixed
        env.mail_from = addr
        env.mail_options.extend(opts)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, env: Any, addr: str, opts: Any) -> str:
        await self._pause()
        code = self._rcpt_code(addr)
        if code is not None:
            return self._fixed("rcpt") or f"{code} {_DEFAULT_TEXT.get(code, 'refused')}"
        env.rcpt_tos.append(addr)
        return "250 OK"

    def _rcpt_code(self, addr: str) -> int | None:
        if self.b.reply_stage == "rcpt":
            return self.b.reply[0]
        rule = self.b.rcpt_rule
        code = (rule.get(addr) if isinstance(rule, Mapping) else rule(addr)) if rule else None
        if code is None and self.b.temp_failures:
            with self.state.lock:
                self.state.attempts[addr] += 1
                if self.state.attempts[addr] <= self.b.temp_failures:
                    code = 451
        return code

    async def handle_DATA(self, server: Any, session: Any, env: Any) -> str:
        await self._pause()
        fixed = self._fixed("dot")
        if fixed:
            return fixed
        dropping = self.b.drop_after_data and self.take_drop()
        if not dropping or self.b.deliver_dropped:
            data = bytes(env.original_content)
            received = Received(env.mail_from, tuple(env.rcpt_tos), data, message_id_of(data))
            with self.state.lock:
                self.state.messages.append(received)
                self.state.lock.notify_all()
        if dropping:
            server.transport.close()
            await asyncio.sleep(3600)  # cancelled by connection_lost: no reply is sent
        return "250 OK"


class _Server(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP with the stages its handler hooks cannot reach."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink_handler = handler

    def connection_made(self, transport: Any) -> None:
        if self.transport is None:  # not the STARTTLS re-entry
            with self.sink_handler.state.lock:
                self.sink_handler.state.connections += 1
                self.sink_handler.state.sessions.add(self)
        super().connection_made(transport)

    async def _handle_client(self) -> None:
        handler = self.sink_handler
        fixed = handler._fixed("connect")
        if fixed:
            await handler._pause()
            await self.push(fixed)
            self.transport.close()
            return
        await handler._pause()
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.sink_handler
        fixed = handler._fixed("data")
        if fixed and self.envelope.rcpt_tos:
            await self.push(fixed)
            return
        if handler.b.drop_before_dot and self.envelope.rcpt_tos and handler.take_drop():
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):  # type: ignore[misc]
    def __init__(self, sink: Sink, handler: _Handler) -> None:
        # Port 0 the first time; a restarted sink listens on its old port again.
        super().__init__(handler, hostname=sink.host, port=sink.port)
        self.sink_handler = handler

    def factory(self) -> _Server:
        creds = self.sink_handler.b.credentials
        if creds is None:
            return _Server(self.sink_handler, hostname="sink.test")
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; on loopback in tests that is the point.
            warnings.simplefilter("ignore", UserWarning)
            return _Server(
                self.sink_handler,
                hostname="sink.test",
                auth_required=True,
                auth_require_tls=False,
                authenticator=_authenticator(creds),
            )

    def _trigger_server(self) -> None:
        # Listening on port 0: learn the real port before aiosmtpd connects to it.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _authenticator(creds: tuple[str, str]) -> Callable[..., AuthResult]:
    expected = LoginPassword(creds[0].encode(), creds[1].encode())

    def check(server: Any, session: Any, env: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=data == expected, handled=False)

    return check


@pytest.fixture
def sink_factory() -> Iterator[Callable[..., Sink]]:
    """Start sinks on demand (``sink_factory(fail_rcpt(...))``); all stop after the test."""
    started: list[Sink] = []

    def make(behaviour: Behaviour | None = None, **changes: Any) -> Sink:
        sink = Sink(replace(behaviour or ok(), **changes)).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


@pytest.fixture
def sink(sink_factory: Callable[..., Sink]) -> Sink:
    """One running sink that accepts and records everything."""
    return sink_factory()
