"""Importing subscribers into a list from a CSV file, streamed in batches.

The file is never held in memory: it is decoded and parsed row by row (see
``domain.csvimport``) and written one batch at a time.
"""

from __future__ import annotations

import csv
import io
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from herald.domain import csvimport
from herald.domain.addresses import normalise_email
from herald.domain.clock import utcnow
from herald.domain.csvimport import Row, RowError
from herald.domain.states import OptIn, SubscriberStatus, SubscriptionStatus
from herald.errors import Conflict, InvalidInput
from herald.store import lists as store_lists
from herald.store import subscribers as store
from herald.store.retry import run_in_transaction

Progress = Callable[[int, int | None], None]


@dataclass
class ImportResult:
    """What an import did. ``updated`` counts existing subscribers whose data
    changed or who were newly subscribed; ``skipped`` counts good rows that
    changed nothing; ``error_report`` is None when there were no errors."""

    imported: int
    updated: int
    skipped: int
    errors: int
    error_report: Path | None


@dataclass
class BatchOutcome:
    """What one batch did; ``errors`` are its refused rows."""

    imported: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)


def import_subscribers(
    engine: Engine,
    path: Path,
    *,
    list_name: str,
    error_report: Path | None = None,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the subscribers of CSV file ``path`` into the list ``list_name``.

    Rows that are refused go to a CSV error report (line, email as given,
    error), written only if there is an error, by default to
    ``<file>.errors.csv``; they never stop the import. ``progress(bytes_read,
    total_bytes)`` is called after every batch (total is None when the size is
    unknown). Re-importing the same file changes nothing.

    Transactions: one short read to find the list, then one per batch of
    ``batch_size`` rows, not one for the whole file, so a million-row import
    neither holds a write lock for minutes nor loses everything on a failure
    near the end. If it stops part-way, the earlier batches stay imported and
    running it again completes it.

    Raises NotFound (no such list), InvalidInput (unreadable file, no header
    row, no ``email`` column), both before anything is written; Conflict if a
    batch keeps colliding with concurrent writes.
    """
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1")
    report_path = error_report or path.with_name(path.name + ".errors.csv")
    with CsvSource(path) as source:
        rows = csvimport.read_rows(source.text, normalise=normalise_email)
        with engine.begin() as conn:
            target = store_lists.get_list_by_name(conn, list_name)
        with _ErrorReport(report_path) as report:
            totals = BatchOutcome()
            for batch in batches(rows, batch_size):
                outcome = commit_batch(engine, batch, target)
                report.write(outcome.errors)
                totals.imported += outcome.imported
                totals.updated += outcome.updated
                totals.skipped += outcome.skipped
                if progress is not None:
                    progress(source.bytes_read(), source.total_bytes)
    return ImportResult(
        imported=totals.imported,
        updated=totals.updated,
        skipped=totals.skipped,
        errors=report.count,
        error_report=report_path if report.count else None,
    )


def batches(rows: Iterable[Row | RowError], size: int) -> Iterator[list[Row | RowError]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def commit_batch(
    engine: Engine, batch: list[Row | RowError], target: dict[str, Any]
) -> BatchOutcome:
    """Write one batch in its own transaction; retried once after a write collision.

    On PostgreSQL another session (a signup form, another import) may insert one
    of the batch's addresses or subscriptions between our SELECT and INSERT;
    the retry reads them and treats them as existing.
    """
    for attempt in (1, 2):
        try:
            # A batch is idempotent (importing rows again changes nothing), so a
            # transaction that lost its connection (a failover) is simply re-run.
            return run_in_transaction(engine, lambda conn: _apply_batch(conn, batch, target))
        except IntegrityError as exc:
            if attempt == 2:
                raise Conflict(
                    "the import kept colliding with concurrent changes (or the list was "
                    "deleted); earlier batches were imported, run it again to finish"
                ) from exc
    raise AssertionError("unreachable")


def _apply_batch(
    conn: Connection, batch: list[Row | RowError], target: dict[str, Any]
) -> BatchOutcome:
    """Plan and write one batch: 1. refuse suppressed addresses; 2. insert new
    subscribers; 3. update changed ones; 4. subscribe those not yet subscribed
    (never touching an existing subscription, never a blocklisted subscriber)."""
    out = BatchOutcome(errors=[r for r in batch if isinstance(r, RowError)])
    rows = [r for r in batch if isinstance(r, Row)]
    if not rows:
        return out
    emails = [r.email for r in rows]
    suppressed = store.suppressed_among(conn, emails)
    existing = store.find_for_import(conn, emails, list_id=target["id"])
    new: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    to_subscribe: list[str] = []
    for row in rows:
        if row.email in suppressed:
            reason = suppressed[row.email]
            out.errors.append(RowError(row.line, row.given, f"address is suppressed ({reason})"))
            continue
        old = existing.get(row.email)
        if old is None:
            new.append({"email": row.email, "name": row.name or "", "attribs": row.attribs})
            continue
        change, subscribes = _plan_existing(row, old)
        if change is not None:
            changes.append(change)
        if subscribes:
            to_subscribe.append(row.email)
        if change is not None or subscribes:
            out.updated += 1
        else:
            out.skipped += 1
    _write_batch(conn, new, changes, to_subscribe, target)
    out.imported = len(new)
    out.errors.sort(key=lambda e: e.line)
    return out


def _plan_existing(row: Row, old: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """For an existing subscriber: the data update (or None) and whether to subscribe.

    An existing subscription, whatever its status, is never touched (consent is
    never overwritten); a blocklisted subscriber is not subscribed to anything.
    """
    merged = csvimport.merge_subscriber(row, old["name"], old["attribs"])
    change = None if merged is None else {"id": old["id"], "name": merged[0], "attribs": merged[1]}
    subscribes = old["subscription"] is None and old["status"] != SubscriberStatus.BLOCKLISTED
    return change, subscribes


def _write_batch(
    conn: Connection,
    new: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    to_subscribe: list[str],
    target: dict[str, Any],
) -> None:
    now = utcnow()
    store.insert_subscribers(conn, new, status=SubscriberStatus.ENABLED.value, now=now)
    store.update_subscriber_data(conn, changes, now=now)
    status = (
        SubscriptionStatus.UNCONFIRMED
        if target["optin"] == OptIn.DOUBLE
        else SubscriptionStatus.CONFIRMED
    )
    emails = [*(n["email"] for n in new), *to_subscribe]
    store.subscribe_emails(conn, emails, list_id=target["id"], status=status.value, now=now)


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from a binary file, for progress (works on pipes too)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class CsvSource:
    """The open input file: its decoded text stream and how far it has been read."""

    def __init__(self, path: Path) -> None:
        try:
            self._raw: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
        info = path.stat()
        self.total_bytes: int | None = info.st_size if stat.S_ISREG(info.st_mode) else None
        self._counter = _CountingReader(self._raw)
        # utf-8-sig drops a BOM; surrogateescape turns bad bytes into per-row errors.
        self.text = io.TextIOWrapper(
            io.BufferedReader(self._counter, buffer_size=1 << 16),
            encoding="utf-8-sig",
            errors="surrogateescape",
            newline="",
        )

    def bytes_read(self) -> int:
        return self._counter.count

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.text.close()
        self._raw.close()


class _ErrorReport:
    """The CSV error report, created on the first error only (UTF-8 with a BOM,
    so spreadsheets detect the encoding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None
        self._writer: Any = None

    def write(self, errors: list[RowError]) -> None:
        if not errors:
            return
        if self._writer is None:
            self._file = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(csvimport.REPORT_COLUMNS)
        self._writer.writerows(csvimport.report_row(e) for e in errors)
        self.count += len(errors)

    def __enter__(self) -> _ErrorReport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()
