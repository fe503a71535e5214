"""Alembic environment: runs against the engine Herald hands over."""

from __future__ import annotations

from alembic import context

from herald.store.tables import metadata

engine = context.config.attributes["engine"]
LOCK_TIMEOUT_MS = 2000

with engine.connect() as connection:
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:
        # Nodes keep sending while a rolling upgrade migrates. A DDL statement
        # waiting for a table lock makes every sender queue behind it, and can
        # deadlock with a sender that holds one table and wants another: give
        # up soon instead (herald.store.engine.migrate tries again), one
        # migration per transaction so that a retry keeps what was done.
        connection.exec_driver_sql(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if postgresql:  # the pooled connection goes back to ordinary work
            connection.rollback()
            connection.exec_driver_sql("RESET lock_timeout")
            connection.commit()
