from __future__ import annotations

import csv
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, select, update

from herald.domain.clock import utcnow
from herald.errors import InvalidInput, NotFound
from herald.services import lists
from herald.services.imports import ImportResult, import_subscribers
from herald.store import subscribers as store
from herald.store.tables import subscribers, subscriptions, suppressions


def _write(tmp_path: Path, data: str | bytes, name: str = "subs.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _counts(result: ImportResult) -> tuple[int, int, int, int]:
    return (result.imported, result.updated, result.skipped, result.errors)


def _subscriber(engine: Engine, email: str) -> dict[str, Any] | None:
    with engine.begin() as conn:
        return store.get_subscriber_by_email(conn, email)


def _subscription_statuses(engine: Engine) -> dict[str, str]:
    stmt = select(subscribers.c.email, subscriptions.c.status).join(
        subscriptions, subscriptions.c.subscriber_id == subscribers.c.id
    )
    with engine.begin() as conn:
        return {email: status for email, status in conn.execute(stmt)}


def _report(path: Path | None) -> list[list[str]]:
    assert path is not None
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


GOOD = "email,name,city\nann@example.com,Ann,Paris\nBob@Example.com,Bob,\n"


def test_it_imports_a_good_file_into_a_single_optin_list(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    result = import_subscribers(engine, _write(tmp_path, GOOD), list_name="News")
    assert _counts(result) == (2, 0, 0, 0)
    assert result.error_report is None
    assert not (tmp_path / "subs.csv.errors.csv").exists()
    ann = _subscriber(engine, "ann@example.com")
    assert ann is not None
    assert (ann["name"], ann["attribs"], ann["status"]) == ("Ann", {"city": "Paris"}, "enabled")
    bob = _subscriber(engine, "bob@example.com")
    assert bob is not None
    assert bob["attribs"] == {}
    assert _subscription_statuses(engine) == {
        "ann@example.com": "confirmed",
        "bob@example.com": "confirmed",
    }


def test_it_subscribes_unconfirmed_to_a_double_optin_list(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "Beta", double_optin=True)
    import_subscribers(engine, _write(tmp_path, GOOD), list_name="Beta")
    assert set(_subscription_statuses(engine).values()) == {"unconfirmed"}


def test_it_reads_a_file_with_a_bom(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    path = _write(tmp_path, b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    assert _counts(import_subscribers(engine, path, list_name="News")) == (2, 0, 0, 0)


def test_it_reports_latin1_and_nul_rows_and_imports_the_rest(
    engine: Engine, tmp_path: Path
) -> None:
    lists.create_list(engine, "News")
    data = b"email,name\nok1@example.com,A\nlatin@example.com,Ren\xe9\nnul@example.com,a\x00b\n"
    data += b"ok2@example.com,B\n"
    result = import_subscribers(engine, _write(tmp_path, data), list_name="News")
    assert _counts(result) == (2, 0, 0, 2)
    assert result.error_report == tmp_path / "subs.csv.errors.csv"
    assert _report(result.error_report) == [
        ["line", "email", "error"],
        ["3", "latin@example.com", "invalid UTF-8 encoding"],
        ["4", "nul@example.com", "NUL byte in the row"],
    ]
    assert set(_subscription_statuses(engine)) == {"ok1@example.com", "ok2@example.com"}


def test_it_refuses_a_file_without_an_email_column_and_writes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    lists.create_list(engine, "News")
    path = _write(tmp_path, "mail,name\nann@example.com,Ann\n")
    with pytest.raises(InvalidInput, match="no 'email' column"):
        import_subscribers(engine, path, list_name="News")
    with pytest.raises(InvalidInput, match="empty"):
        import_subscribers(engine, _write(tmp_path, b"", "empty.csv"), list_name="News")
    with engine.begin() as conn:
        assert store.count_subscribers(conn) == 0
    assert list(tmp_path.glob("*.errors.csv")) == []


def test_it_refuses_an_unknown_list(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        import_subscribers(engine, _write(tmp_path, GOOD), list_name="Nope")
    with engine.begin() as conn:
        assert store.count_subscribers(conn) == 0


def test_it_reports_invalid_addresses_and_duplicates_differing_in_case(
    engine: Engine, tmp_path: Path
) -> None:
    lists.create_list(engine, "News")
    data = "email,name\nnot-an-address,X\nAnn@Example.com,First\nann@example.COM,Second\n"
    report = tmp_path / "report.csv"
    result = import_subscribers(
        engine, _write(tmp_path, data), list_name="News", error_report=report
    )
    assert _counts(result) == (1, 0, 0, 2)
    rows = _report(report)
    assert [r[:2] for r in rows[1:]] == [["2", "not-an-address"], ["4", "ann@example.COM"]]
    assert rows[1][2].lower().startswith("invalid email address")
    assert rows[2][2].startswith("duplicate")
    ann = _subscriber(engine, "ann@example.com")
    assert ann is not None
    assert ann["name"] == "First"


def test_it_escapes_formula_cells_in_the_error_report(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    data = 'email,note\n=HYPERLINK("http://x"),a\n+1 (555) 0100,b\n@SUM(A1),c\n'
    data += "ok@example.com,=1+1\n"
    result = import_subscribers(engine, _write(tmp_path, data), list_name="News")
    assert _counts(result) == (1, 0, 0, 3)
    given = [r[1] for r in _report(result.error_report)[1:]]
    assert given == ['\'=HYPERLINK("http://x")', "'+1 (555) 0100", "'@SUM(A1)"]
    ok = _subscriber(engine, "ok@example.com")
    assert ok is not None
    assert ok["attribs"] == {"note": "=1+1"}  # stored as given


def test_it_merges_extra_columns_into_existing_attributes(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    first = "email,name,city,plan\nann@example.com,Ann,Paris,pro\n"
    import_subscribers(engine, _write(tmp_path, first, "a.csv"), list_name="News")
    second = "EMAIL , Country ,city\nann@example.com,FR,Lyon\n"
    result = import_subscribers(engine, _write(tmp_path, second, "b.csv"), list_name="News")
    assert _counts(result) == (0, 1, 0, 0)
    ann = _subscriber(engine, "ann@example.com")
    assert ann is not None
    assert ann["name"] == "Ann"
    assert ann["attribs"] == {"city": "Lyon", "plan": "pro", "country": "FR"}


def test_it_changes_nothing_when_the_same_file_is_imported_again(
    engine: Engine, tmp_path: Path
) -> None:
    lists.create_list(engine, "News")
    path = _write(tmp_path, GOOD + "bad,x,y\n")
    assert _counts(import_subscribers(engine, path, list_name="News")) == (2, 0, 0, 1)
    with engine.begin() as conn:
        before = conn.execute(select(subscribers).order_by(subscribers.c.id)).all()
    assert _counts(import_subscribers(engine, path, list_name="News")) == (0, 0, 2, 1)
    with engine.begin() as conn:
        assert conn.execute(select(subscribers).order_by(subscribers.c.id)).all() == before


def test_it_counts_subscribing_an_existing_subscriber_to_another_list_as_updated(
    engine: Engine, tmp_path: Path
) -> None:
    lists.create_list(engine, "News")
    lists.create_list(engine, "Offers")
    path = _write(tmp_path, GOOD)
    import_subscribers(engine, path, list_name="News")
    assert _counts(import_subscribers(engine, path, list_name="Offers")) == (0, 2, 0, 0)


def test_it_never_resubscribes_an_unsubscribed_or_blocklisted_subscriber(
    engine: Engine, tmp_path: Path
) -> None:
    news = lists.create_list(engine, "News")
    lists.create_list(engine, "Offers")
    path = _write(tmp_path, GOOD)
    import_subscribers(engine, path, list_name="News")
    with engine.begin() as conn:
        conn.execute(update(subscriptions).values(status="unsubscribed"))
        conn.execute(
            update(subscribers)
            .where(subscribers.c.email == "bob@example.com")
            .values(status="blocklisted")
        )
    assert _counts(import_subscribers(engine, path, list_name="News")) == (0, 0, 2, 0)
    assert set(_subscription_statuses(engine).values()) == {"unsubscribed"}
    assert _counts(import_subscribers(engine, path, list_name="Offers")) == (0, 1, 1, 0)
    bob = _subscriber(engine, "bob@example.com")
    assert bob is not None
    assert bob["status"] == "blocklisted"
    with engine.begin() as conn:
        offers = conn.execute(
            select(subscriptions.c.subscriber_id).where(subscriptions.c.list_id != news)
        ).all()
    assert len(offers) == 1  # ann only


def test_it_refuses_suppressed_addresses(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    with engine.begin() as conn:
        conn.execute(
            suppressions.insert().values(
                email="bob@example.com", reason="hard_bounce", source="", created_at=utcnow()
            )
        )
    result = import_subscribers(engine, _write(tmp_path, GOOD), list_name="News")
    assert _counts(result) == (1, 0, 0, 1)
    assert _report(result.error_report)[1] == [
        "3",
        "Bob@Example.com",
        "address is suppressed (hard_bounce)",
    ]
    assert _subscriber(engine, "bob@example.com") is None


def test_it_reports_progress_after_every_batch(engine: Engine, tmp_path: Path) -> None:
    lists.create_list(engine, "News")
    path = _write(tmp_path, "email\n" + "".join(f"s{i}@example.com\n" for i in range(25)))
    calls: list[tuple[int, int | None]] = []
    import_subscribers(
        engine, path, list_name="News", batch_size=10, progress=lambda r, t: calls.append((r, t))
    )
    size = path.stat().st_size
    assert len(calls) == 3
    assert calls[-1] == (size, size)


def _generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("email,name,city,plan\n")
        for i in range(rows):
            f.write(f"subscriber{i}@example.com,Subscriber {i},City {i % 97},plan{i % 3}\n")


def _peak_rss_growth_during(fn: Callable[[], None]) -> int:
    """Peak growth of the process's resident memory while ``fn`` runs.

    A thread samples RSS every 20 ms: what is measured is a sustained footprint
    (a file read into memory), which sampling cannot miss.
    """
    process = psutil.Process()
    base = process.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, process.memory_info().rss) - base


@pytest.mark.slow
def test_it_imports_a_large_file_in_bounded_memory(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    # 200,000 rows on SQLite; PostgreSQL commits row by row in a pipeline and takes
    # ~4x longer, so it gets a smaller file that still spans many batches.
    rows = 200_000 if database_url.startswith("sqlite") else 50_000
    lists.create_list(engine, "News")
    path = tmp_path / "big.csv"
    _generate(path, rows)
    results: list[ImportResult] = []

    growth = _peak_rss_growth_during(
        lambda: results.append(import_subscribers(engine, path, list_name="News"))
    )
    assert _counts(results[0]) == (rows, 0, 0, 0)
    # ~10 MB of CSV per 200,000 rows; what grows with the file is the set of seen
    # addresses (~110 bytes each, ~22 MB here).
    assert growth < 100 * 1024 * 1024
    with engine.begin() as conn:
        assert store.count_subscribers(conn) == rows
