"""CSV imports started through the API: stored progress, run on the receiving node.

The upload is saved under the data directory and imported by a thread of
the node that received it (``run_import``), batch by batch as
``services.imports`` does; every batch updates the ``imports`` row, which is
also the heartbeat. Any node answers ``get_import`` from that row, so a
client may poll through a load balancer; an open import whose heartbeat is
older than ``SILENT_AFTER`` lost its node and is reported failed.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from herald.domain import csvimport
from herald.domain.addresses import normalise_email
from herald.domain.clock import as_utc, utcnow
from herald.errors import HeraldError, InvalidInput, NotFound
from herald.services import imports
from herald.store import imports as store
from herald.store import lists as store_lists
from herald.store.retry import run_in_transaction

log = logging.getLogger(__name__)

SILENT_AFTER = timedelta(seconds=60)
MAX_ERROR_ROWS = 10_000
BATCH_SIZE = 1000
_PUBLIC = [
    "id",
    "status",
    "list_ids",
    "filename",
    "node",
    "rows",
    "added",
    "updated",
    "skipped",
    "errors",
    "bytes_read",
    "bytes_total",
    "detail",
]


def create_import(
    engine: Engine, *, list_ids: list[int], filename: str, node: str, bytes_total: int | None
) -> int:
    """Record a queued import into ``list_ids``; returns its id. Raises InvalidInput, NotFound."""
    if not list_ids:
        raise InvalidInput("an import needs at least one list")
    targets = list(dict.fromkeys(list_ids))
    values: dict[str, Any] = {
        "list_ids": targets,
        "filename": filename[:255],
        "node": node,
        "bytes_total": bytes_total,
    }
    with engine.begin() as conn:
        for list_id in targets:
            if store_lists.get_list(conn, list_id) is None:
                raise NotFound(f"no list {list_id}")
        return store.insert_import(conn, values, now=utcnow())


def run_import(engine: Engine, import_id: int, path: Path, *, batch_size: int = BATCH_SIZE) -> None:
    """Import ``path`` for the queued import ``import_id``; meant for a background thread.

    Never raises: a failure is stored on the row (``failed`` with the reason).
    Stops early if another node declared the import failed meanwhile.
    Side effect: deletes ``path`` when done.
    """
    try:
        _run(engine, import_id, path, batch_size)
    except HeraldError as exc:
        _finish(engine, import_id, "failed", exc.message)
    except Exception:
        log.exception("import %s failed", import_id)
        _finish(engine, import_id, "failed", "the import stopped on an internal error")
    finally:
        path.unlink(missing_ok=True)


def _run(engine: Engine, import_id: int, path: Path, batch_size: int) -> None:
    """1. Mark it running; 2. per batch, apply it to each list, store up to
    MAX_ERROR_ROWS refused rows and the counters (the heartbeat); 3. mark it done."""
    with engine.begin() as conn:
        job = _require(store.get_import(conn, import_id), import_id)
        targets = [store_lists.get_list(conn, lid) for lid in job["list_ids"]]
        running = {"status": "running", "started_at": utcnow()}
        if not store.set_progress(conn, import_id, running, now=utcnow()):
            log.warning("import %s is no longer queued; not running it", import_id)
            return
    if any(t is None for t in targets):
        raise NotFound("a list of this import was deleted")
    totals = {"rows": 0, "added": 0, "updated": 0, "skipped": 0, "errors": 0}
    with imports.CsvSource(path) as source:
        rows = csvimport.read_rows(source.text, normalise=normalise_email)
        for batch in imports.batches(rows, batch_size):
            outcomes = [imports.commit_batch(engine, batch, t) for t in targets if t]
            errors = outcomes[0].errors
            keep = max(0, MAX_ERROR_ROWS - totals["errors"])
            totals["rows"] += len(batch)
            totals["added"] += sum(o.imported for o in outcomes)
            totals["updated"] += sum(o.updated for o in outcomes)
            totals["skipped"] += sum(o.skipped for o in outcomes)
            totals["errors"] += len(errors)
            stored = [(e.line, e.given, e.error) for e in errors[:keep]]
            if not _progress(engine, import_id, totals, stored, bytes_read=source.bytes_read()):
                log.warning("import %s was declared failed by another node; stopping", import_id)
                return
    _finish(engine, import_id, "done", "")


def _progress(
    engine: Engine,
    import_id: int,
    totals: dict[str, int],
    errors: list[tuple[int, str, str]],
    *,
    bytes_read: int,
) -> bool:
    def write(conn: Connection) -> bool:
        # Idempotent (absolute counters, error rows keyed by line): safe to re-run.
        values = {**totals, "bytes_read": bytes_read}
        if not store.set_progress(conn, import_id, values, now=utcnow()):
            return False
        store.insert_errors(conn, import_id, errors)
        return True

    return run_in_transaction(engine, write)


def _finish(engine: Engine, import_id: int, status: str, detail: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        values = {"status": status, "detail": detail[:2000], "finished_at": now}
        store.set_progress(conn, import_id, values, now=now)


def get_import(engine: Engine, import_id: int) -> dict[str, Any]:
    """The import's progress, from any node. Raises NotFound.

    Side effect: an open import silent for over SILENT_AFTER is marked failed
    (guarded on the heartbeat seen, so a live node's progress is never lost).
    """
    now = utcnow()
    with engine.begin() as conn:
        job = _require(store.get_import(conn, import_id), import_id)
        beat = as_utc(job["updated_at"])
        if job["status"] in ("queued", "running") and now - beat > SILENT_AFTER:
            detail = (
                f"node {job['node']} stopped working on it: no progress since "
                f"{beat.isoformat()}; the rows before that are imported, import the file again "
                "to finish (rows already imported change nothing)"
            )
            store.fail_if_silent(
                conn, import_id, heartbeat=job["updated_at"], detail=detail, now=now
            )
            job = _require(store.get_import(conn, import_id), import_id)
    return _public(job)


def error_report(engine: Engine, import_id: int) -> str:
    """The refused rows as CSV (line, email, error), safe to open in a spreadsheet.

    Cells are escaped against formula injection; past MAX_ERROR_ROWS a last
    line says how many more were refused. Raises NotFound.
    """
    with engine.begin() as conn:
        job = _require(store.get_import(conn, import_id), import_id)
        rows = store.error_rows(conn, import_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(csvimport.REPORT_COLUMNS)
    writer.writerows(
        (str(line), csvimport.report_cell(email), csvimport.report_cell(error))
        for line, email, error in rows
    )
    if job["errors"] > len(rows):
        more = job["errors"] - len(rows)
        writer.writerow(("", "", f"{more} more refused rows are not in this report (capped)"))
    return out.getvalue()


def _public(job: dict[str, Any]) -> dict[str, Any]:
    view = {k: job[k] for k in _PUBLIC}
    for key in ("created_at", "started_at", "finished_at", "updated_at"):
        view[key] = as_utc(job[key]).isoformat() if job[key] is not None else None
    return view


def _require(row: dict[str, Any] | None, import_id: int) -> dict[str, Any]:
    if row is None:
        raise NotFound(f"no import {import_id}")
    return row
