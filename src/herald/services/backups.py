"""Online backups, restores into either backend, and proof that a backup restores.

The format is ``domain.backupformat``, the files ``services.backuparchive``,
the SQL ``store.dump``. Nothing holds a whole table in memory: rows stream
from a cursor into gzip files, and back from them into batched inserts.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from herald import __version__
from herald.domain.backupformat import Manifest, RowCodec, TableEntry, backup_filename, table_file
from herald.domain.clock import utcnow
from herald.errors import Conflict, HeraldError, InvalidInput
from herald.services import backuparchive as archive
from herald.store import dump
from herald.store.engine import current_revision, head_revision, make_engine, migrate

# (table being copied, rows done over all tables, rows in all tables)
Progress = Callable[[str, int, int], None]
BATCH_ROWS = 1000


@dataclass
class BackupResult:
    """A backup written: where, how big, rows per table, how long it took."""

    path: Path
    size: int
    tables: dict[str, int]
    schema_revision: str
    backend: str
    seconds: float


@dataclass
class RestoreResult:
    """A restore done: rows per table, the backup's revision and the one migrated to."""

    path: Path
    database: str
    tables: dict[str, int]
    schema_revision: str
    migrated_to: str
    seconds: float
    # Campaigns running at the snapshot, paused by the restore: their recipients
    # may have been sent to since, so nothing resumes until someone decides.
    paused: list[int] = field(default_factory=list)


@dataclass
class VerifyResult:
    """``ok`` when the checksums hold and a scratch restore has the manifest's row counts."""

    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)
    seconds: float = 0.0


class _Tally:
    """Counts rows over all tables for an optional progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self._progress = total, 0, progress

    def counted(self, table: str, batches: Iterable[list[Any]]) -> Iterator[list[Any]]:
        for batch in batches:
            yield batch
            self.done += len(batch)
            if self._progress is not None:
                self._progress(table, self.done, self.total)


def create_backup(
    engine: Engine, dest_dir: Path, *, progress: Progress | None = None
) -> BackupResult:
    """Write a consistent snapshot of the database into ``dest_dir`` as one archive.

    Runs beside live nodes: every table is read from one snapshot (see
    ``store.dump.snapshot``) and nothing is locked against senders. The
    archive gets its final name ``herald-backup-<UTC time>.tar`` only once
    complete and synced. Returns what was written.

    Raises InvalidInput when the database has no Herald schema or one newer
    than this code; Conflict when a backup of the same second already exists;
    HeraldError when the directory cannot be written (full, not permitted).
    """
    started = time.monotonic()
    created_at = utcnow()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".herald-backup-", dir=dest_dir) as tmp:
            with dump.snapshot(engine, Path(tmp)) as conn:
                revision = _source_revision(conn)
                entries = _dump_tables(conn, Path(tmp), progress)
            manifest = Manifest(
                herald_version=__version__,
                schema_revision=revision,
                created_at=created_at,
                backend=engine.dialect.name,
                tables=tuple(entries),
            )
            path = archive.pack(manifest, Path(tmp), dest_dir / backup_filename(created_at))
    except OSError as exc:  # disk full, no permission, ...: say so, no traceback
        raise HeraldError(f"cannot write a backup into {dest_dir}: {exc.strerror or exc}") from exc
    return BackupResult(
        path=path,
        size=path.stat().st_size,
        tables={e.name: e.rows for e in entries},
        schema_revision=revision,
        backend=manifest.backend,
        seconds=round(time.monotonic() - started, 3),
    )


def _source_revision(conn: Connection) -> str:
    revision = dump.revision_of(conn)
    if revision is None:
        raise InvalidInput("the database has no Herald schema: run 'herald init' first")
    if revision not in dump.known_revisions():
        raise InvalidInput(
            f"the database is at schema revision {revision}, newer than this Herald: "
            "back it up with the newer version"
        )
    return revision


def _dump_tables(conn: Connection, work: Path, progress: Progress | None) -> list[TableEntry]:
    specs = dump.table_specs(conn)
    counts = {s.name: dump.count_rows(conn, s) for s in specs}
    tally = _Tally(sum(counts.values()), progress)
    entries = []
    for spec in specs:
        rows = _batches(dump.read_rows(conn, spec, batch=BATCH_ROWS), BATCH_ROWS)
        file = table_file(spec.name)
        written = archive.write_table_file(
            work / file, RowCodec(spec.columns), tally.counted(spec.name, rows)
        )
        if written.rows != counts[spec.name]:  # impossible inside one snapshot: refuse if seen
            raise Conflict(f"table {spec.name} changed while it was being backed up")
        entries.append(
            TableEntry(
                name=spec.name,
                columns=spec.columns,
                rows=written.rows,
                file=file,
                size=written.size,
                sha256=written.sha256,
            )
        )
    return entries


def restore_backup(
    path: Path, database_url: str, *, force: bool = False, progress: Progress | None = None
) -> RestoreResult:
    """Restore the backup at ``path`` into the database at ``database_url`` (either backend).

    1. Check the archive whole (``backuparchive.check_archive``) and its
       schema revision known to this code — before anything is written.
    2. Refuse a target holding any row in a Herald table, unless ``force``,
       which empties those tables first.
    3. Bring the target's schema to the backup's revision, load every table
       in dependency order in one transaction (batched inserts, ids kept),
       point PostgreSQL sequences past the loaded ids.
    4. Migrate to this code's head revision.
    5. Pause the campaigns that were running at the snapshot (RELIABILITY
       row 13): the old cluster may have sent since, so nothing is resent
       blindly; ``herald campaigns resume`` continues one deliberately.

    Raises InvalidInput (corrupt, truncated, not a backup, newer schema),
    Conflict (target not empty, or at a schema revision this code does not know).
    """
    started = time.monotonic()
    manifest = archive.check_archive(path)
    return _restore_checked(
        path, manifest, database_url, force=force, progress=progress, started=started
    )


def _restore_checked(
    path: Path,
    manifest: Manifest,
    database_url: str,
    *,
    force: bool,
    progress: Progress | None,
    started: float,
) -> RestoreResult:
    """Steps 1 (the revision) to 4 of ``restore_backup``, for an archive already checked."""
    if manifest.schema_revision not in dump.known_revisions():
        raise InvalidInput(
            f"{path.name}: the backup's schema revision {manifest.schema_revision} is newer "
            f"than this Herald's ({head_revision()}): restore it with a newer Herald"
        )
    engine = make_engine(database_url)
    try:
        _prepare_target(engine, manifest.schema_revision, force=force)
        tables = _load_tables(engine, path, manifest, progress)
        _, head = migrate(engine)
        with engine.begin() as conn:
            paused = dump.pause_running(conn)
        database = engine.url.render_as_string(hide_password=True)
    finally:
        engine.dispose()
    return RestoreResult(
        path=path,
        database=database,
        tables=tables,
        schema_revision=manifest.schema_revision,
        migrated_to=head,
        seconds=round(time.monotonic() - started, 3),
        paused=paused,
    )


def _prepare_target(engine: Engine, revision: str, *, force: bool) -> None:
    """Refuse a non-empty or unknown-schema target; empty it if forced; set its schema."""
    current = current_revision(engine)
    if current is not None and current not in dump.known_revisions():
        raise Conflict(
            f"the target database is at schema revision {current}, unknown to this Herald"
        )
    with engine.begin() as conn:
        filled = dump.has_rows(conn)
        if filled and not force:
            raise Conflict(
                f"the target database is not empty (rows in {', '.join(filled)}): restore "
                "into an empty database, or pass --force to empty it first"
            )
        if filled:
            dump.empty_tables(conn)
    dump.migrate_to(engine, revision)


def _load_tables(
    engine: Engine, path: Path, manifest: Manifest, progress: Progress | None
) -> dict[str, int]:
    """Insert every table's rows in one transaction; returns rows per table."""
    tally = _Tally(sum(t.rows for t in manifest.tables), progress)
    loaded: dict[str, int] = {}
    with engine.begin() as conn, archive.open_archive(path) as tar:
        dump.relax_timeouts(conn)
        specs = dump.table_specs(
            conn, {t.name: [c.name for c in t.columns] for t in manifest.tables}
        )
        for entry, spec in zip(manifest.tables, specs, strict=True):
            if spec.columns != entry.columns:
                raise InvalidInput(f"table {entry.name} has other column types than the backup")
            batches = _batches(archive.read_table(tar, entry), BATCH_ROWS)
            loaded[entry.name] = sum(
                dump.insert_rows(conn, spec, batch) for batch in tally.counted(entry.name, batches)
            )
            if loaded[entry.name] != entry.rows:
                raise InvalidInput(f"{entry.file} did not hold the {entry.rows} rows it lists")
        dump.reset_sequences(conn, specs)
    return loaded


def verify_backup(path: Path, *, progress: Progress | None = None) -> VerifyResult:
    """Prove a backup restores: checksums, then a restore into a scratch SQLite
    database (deleted afterwards), whose row counts must equal the manifest's.

    Never raises for a bad backup: the problems are in the result.
    """
    started = time.monotonic()
    result = VerifyResult(path=path, ok=False)
    try:
        manifest = archive.check_archive(path)
        with tempfile.TemporaryDirectory(prefix="herald-verify-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'verify.db'}"
            _restore_checked(path, manifest, url, force=False, progress=progress, started=started)
            restored = _count_tables(url)
    except (HeraldError, SQLAlchemyError, OSError) as exc:
        message = exc.message if isinstance(exc, HeraldError) else str(exc)
        result.problems.append(message.strip().splitlines()[0])
    else:
        for entry in manifest.tables:
            count = restored.get(entry.name)
            result.tables[entry.name] = {"manifest": entry.rows, "restored": count}
            if count != entry.rows:
                result.problems.append(
                    f"table {entry.name}: {count} rows restored, the manifest lists {entry.rows}"
                )
    result.ok = not result.problems
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _count_tables(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return {spec.name: dump.count_rows(conn, spec) for spec in dump.table_specs(conn)}
    finally:
        engine.dispose()


def _batches(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(rows, size)):
        yield batch
