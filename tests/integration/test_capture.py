"""The capture relay files what it receives, and SmtpConnection can send to it."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from pathlib import Path

import pytest

from herald.delivery.capture import CaptureRelay, CaptureRelayError
from herald.delivery.smtp import SmtpConnection
from herald.domain.relays import parse_relay_url


def message(n: int) -> bytes:
    return (
        b"From: news@herald.test\r\nTo: r%d@example.test\r\nSubject: Capture %d\r\n"
        b"Message-ID: <%d@herald.test>\r\n\r\nBody %d\r\n" % (n, n, n, n)
    )


def stored(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.eml"))


async def test_it_stores_each_message_as_an_eml_file(tmp_path: Path) -> None:
    async with CaptureRelay(tmp_path / "mail") as relay:
        conn = SmtpConnection(parse_relay_url(f"smtp://{relay.host}:{relay.port}?timeout=5"))
        outcomes = [
            await conn.send("news@herald.test", f"r{n}@example.test", message(n)) for n in range(5)
        ]
        await conn.close()
        assert all(o.ok for o in outcomes)
        assert relay.count == 5
    files = stored(tmp_path / "mail")
    assert len(files) == 5
    assert {f.read_bytes() for f in files} == {message(n) for n in range(5)}
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"].startswith("Capture ")
    assert not list((tmp_path / "mail").glob("*/*.tmp"))


async def test_it_files_messages_by_utc_day(tmp_path: Path) -> None:
    async with CaptureRelay(tmp_path) as relay:
        conn = SmtpConnection(parse_relay_url(f"smtp://{relay.host}:{relay.port}"))
        assert (await conn.send("a@herald.test", "b@example.test", message(1))).ok
        await conn.close()
    [path] = stored(tmp_path)
    day = path.parent.name
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d+\.eml", path.name)
    assert path.name.startswith(day.replace("-", ""))


async def test_it_reports_the_port_it_bound_and_stops_listening(tmp_path: Path) -> None:
    relay = CaptureRelay(tmp_path)
    host, port = await relay.start()
    assert host == "127.0.0.1"
    assert port > 0
    conn = SmtpConnection(parse_relay_url(f"smtp://{host}:{port}?timeout=5"))
    assert (await conn.probe()).ok
    await relay.stop()
    await relay.stop()  # idempotent
    after = await conn.send("a@herald.test", "b@example.test", message(2))
    await conn.close()
    assert after.kind == "temporary"
    assert relay.count == 0


async def test_it_refuses_to_start_on_a_port_in_use(tmp_path: Path) -> None:
    async with CaptureRelay(tmp_path) as first:
        with pytest.raises(CaptureRelayError):
            await CaptureRelay(tmp_path, port=first.port).start()


async def test_it_warns_when_the_stored_files_pile_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="herald.delivery.capture")
    async with CaptureRelay(tmp_path, warn_every=3) as relay:
        conn = SmtpConnection(parse_relay_url(f"smtp://{relay.host}:{relay.port}"))
        for n in range(7):
            assert (await conn.send("a@herald.test", "b@example.test", message(n))).ok
        await conn.close()
    warnings = [r for r in caplog.records if "capture relay has stored" in r.getMessage()]
    assert len(warnings) == 2
    assert len(stored(tmp_path)) == 7
