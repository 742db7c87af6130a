"""SQLAlchemy engines for the SQL stores (registry metadata and audit log), configured once.

SQLite: WAL, ``synchronous=FULL`` (a commit is on disk when it returns), foreign keys on, a busy
timeout, and ``BEGIN IMMEDIATE`` for write transactions (so two writers queue on the lock instead
of failing at commit). PostgreSQL: pre-ping, and a connect timeout unless the URL sets one
(libpq otherwise waits forever for an unreachable host).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import sqlalchemy as sa

from strongroom.errors import ConfigurationError, ConflictError, StorageError, StrongroomError

WRITE_OPTION: Final = "strongroom_write"
"""Execution option a store sets on write transactions (``conn.execution_options``)."""
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
PG_CONNECT_TIMEOUT_S: Final = 10
_WAL_ATTEMPTS: Final = 5


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a persistent setting; a no-op once done).

    Retried: two connections switching a fresh file at once deadlock, and SQLite fails one of
    them at once rather than waiting; by the retry the other has finished the switch.
    """
    for attempt in range(1, _WAL_ATTEMPTS + 1):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if attempt == _WAL_ATTEMPTS:
                raise
        else:
            return


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Durable, checked SQLite; and let SQLAlchemy, not sqlite3, emit BEGIN (``_begin_sqlite``)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _begin_sqlite(conn: sa.Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_engine(url: sa.URL, *, what: str) -> sa.Engine:
    """An engine for ``url``; ``what`` names the store in configuration errors."""
    try:
        if url.get_backend_name() == "sqlite":
            engine = sa.create_engine(url)
            sa.event.listen(engine, "connect", _configure_sqlite)
            sa.event.listen(engine, "begin", _begin_sqlite)
            return engine
        timeout = (
            {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        )
        return sa.create_engine(url, pool_pre_ping=True, connect_args=timeout)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, TypeError):
        raise ConfigurationError(f"the {what} URL has invalid options") from None


@contextmanager
def transaction(
    engine: sa.Engine, *, store: str, conflict: str | None = None
) -> Iterator[sa.Connection]:
    """One transaction of a SQL store. ``conflict`` marks a write (``BEGIN IMMEDIATE`` on
    SQLite) and is the ``ConflictError`` message for an integrity violation; any other driver
    failure is a ``StorageError`` naming ``store``."""
    try:
        with engine.connect() as conn:
            if conflict is not None:
                conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn
    except StrongroomError:
        raise
    except sa.exc.IntegrityError as exc:
        if conflict is None:
            raise StorageError(f"the {store} refused a read") from exc
        raise ConflictError(conflict) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"the {store} is unavailable or failed") from exc
