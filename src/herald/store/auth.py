"""Users, API tokens, idempotency keys and the failed-login throttle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from herald.store.dialect import insert_ignore
from herald.store.tables import api_tokens, auth_failures, idempotency_keys, users


def insert_user(conn: Connection, values: dict[str, Any], *, now: datetime) -> int | None:
    """Insert a user; None (nothing written) when the email is taken."""
    row = {**values, "created_at": now, "updated_at": now}
    inserted = conn.execute(insert_ignore(conn, users).values(**row).returning(users.c.id))
    return inserted.scalar()


def get_user(conn: Connection, *, email: str | None = None, user_id: int | None = None) -> Any:
    query = select(users)
    query = query.where(users.c.email == email) if email else query.where(users.c.id == user_id)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    query = select(users).order_by(users.c.email)
    return [dict(r) for r in conn.execute(query).mappings()]


def update_user(conn: Connection, email: str, values: dict[str, Any], *, now: datetime) -> bool:
    result = conn.execute(
        update(users).where(users.c.email == email).values(**values, updated_at=now)
    )
    return result.rowcount == 1


def mark_login(conn: Connection, user_id: int, *, now: datetime) -> None:
    """Note a successful login (``updated_at`` stays: it dates the user's sessions)."""
    conn.execute(update(users).where(users.c.id == user_id).values(last_login_at=now))


def insert_token(conn: Connection, values: dict[str, Any], *, now: datetime) -> int | None:
    """Insert an API token; None when the name is taken."""
    row = {**values, "created_at": now}
    inserted = conn.execute(
        insert_ignore(conn, api_tokens).values(**row).returning(api_tokens.c.id)
    )
    return inserted.scalar()


def token_by_hash(conn: Connection, token_hash: str) -> dict[str, Any] | None:
    query = select(api_tokens).where(api_tokens.c.token_hash == token_hash)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    query = select(api_tokens).order_by(api_tokens.c.name)
    return [dict(r) for r in conn.execute(query).mappings()]


def touch_token(conn: Connection, token_id: int, *, now: datetime) -> None:
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now))


def revoke_token(conn: Connection, name: str, *, now: datetime) -> bool:
    """Revoke a live token; False when there is no live token of that name."""
    result = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def failures(conn: Connection, address: str) -> dict[str, Any] | None:
    query = select(auth_failures).where(auth_failures.c.address == address)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def save_failures(conn: Connection, values: dict[str, Any]) -> None:
    """Replace the failure record of ``values["address"]``."""
    conn.execute(delete(auth_failures).where(auth_failures.c.address == values["address"]))
    conn.execute(auth_failures.insert().values(**values))


def clear_failures(conn: Connection, address: str) -> None:
    conn.execute(delete(auth_failures).where(auth_failures.c.address == address))


def claim_key(conn: Connection, values: dict[str, Any], *, now: datetime) -> bool:
    """Record the first use of an idempotency key; False when it was used before."""
    row = {**values, "created_at": now}
    inserted = conn.execute(
        insert_ignore(conn, idempotency_keys).values(**row).returning(idempotency_keys.c.id)
    )
    return inserted.first() is not None


def get_key(conn: Connection, principal: str, key: str) -> dict[str, Any] | None:
    query = select(idempotency_keys).where(
        idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def finish_key(
    conn: Connection, principal: str, key: str, *, status_code: int, response: str
) -> None:
    conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
        .values(status_code=status_code, response=response)
    )


def forget_key(conn: Connection, principal: str, key: str) -> None:
    conn.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
        )
    )


def purge_keys(conn: Connection, *, before: datetime) -> int:
    result = conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
    return result.rowcount or 0


def purge_failures(conn: Connection, *, now: datetime, window_start: datetime) -> int:
    """Delete failure records that no longer block nor count; returns how many.

    Such a record's block has passed (or never began) and its counting
    window began before ``window_start``: the next failure would start afresh.
    """
    result = conn.execute(
        delete(auth_failures).where(
            auth_failures.c.first_at < window_start,
            (auth_failures.c.blocked_until.is_(None)) | (auth_failures.c.blocked_until < now),
        )
    )
    return result.rowcount or 0
