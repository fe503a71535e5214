"""Database upkeep that runs outside any transaction: VACUUM/ANALYZE, PRAGMA optimize.

These statements cannot run inside a transaction block (PostgreSQL refuses
``VACUUM`` there; SQLite cannot checkpoint past its own open read), so each
function takes the engine and opens an autocommit connection of its own.
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect

# The tables that change all day: the outbox, its campaigns, tracking, the
# cluster's bookkeeping. Vacuumed tables that do not exist (yet) are skipped.
BUSY_TABLES = (
    "deliveries",
    "campaigns",
    "subscribers",
    "subscriptions",
    "suppressions",
    "tracking_events",
    "tracking_daily",
    "tracking_uniques",
    "nodes",
    "cluster_leases",
    "job_runs",
    "idempotency_keys",
    "auth_failures",
)


def vacuum_analyze(engine: Engine, tables: tuple[str, ...] = BUSY_TABLES) -> list[str]:
    """PostgreSQL: ``VACUUM (ANALYZE)`` each existing table of ``tables``; returns them.

    Side effect: reclaims dead row versions for reuse and refreshes the
    planner's statistics. Takes no lock that blocks readers or writers; the
    session's statement timeout is lifted for it (a big table takes minutes).
    """
    present = set(inspect(engine).get_table_names())
    done = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET statement_timeout = 0")
        try:
            for table in tables:
                if table in present:
                    conn.exec_driver_sql(f'VACUUM (ANALYZE) "{table}"')
                    done.append(table)
        finally:
            conn.exec_driver_sql("RESET statement_timeout")
    return done


def optimise_sqlite(engine: Engine) -> tuple[int, int]:
    """SQLite: ``PRAGMA optimize`` then ``PRAGMA wal_checkpoint(TRUNCATE)``.

    Side effect: refreshes statistics where the planner would gain; copies
    the write-ahead log into the database file and truncates it (it waits
    for readers through the busy timeout). Returns the checkpoint's (log
    frames, frames checkpointed); -1 when another connection kept it from
    completing.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA optimize")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, frames, moved = cursor.fetchone() or (1, -1, -1)
        cursor.close()
    finally:
        raw.close()
    return (-1, -1) if busy else (int(frames), int(moved))
