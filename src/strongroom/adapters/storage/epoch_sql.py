"""``SqlCredentialEpoch``: the credential epoch in the database, for replicas on several hosts.

One row of ``credential_epoch`` (migration ``0003_identity``). ``bump`` adds one in its own
transaction (``UPDATE ... SET value = value + 1``: concurrent bumps all count); ``current``
reads it.

Cost: ``current`` is one ``SELECT`` of one row by primary key per call, and the identity service
calls it on every authenticated request. Each thread keeps its own autocommit connection open for
it (no pool checkout, no pre-ping, no transaction statements), so it is one round trip: measured
on these machines about 7 µs on SQLite and about 100 µs on a local PostgreSQL (a remote one adds
its network round trip). That is a blocking call: with PostgreSQL the HTTP app should
authenticate in a worker thread, not on the event loop. A connection that broke (server restart)
is dropped and the read retried once on a new one. ``max_staleness`` (seconds, default 0) trades
the round trip for revocation latency: a value read less than ``max_staleness`` ago is reused, so
a change takes effect within that time instead of on the very next request. Keep it 0 unless the
measured cost matters, and never above a few seconds. A single host should use ``epoch_file``
instead (no database round trip and no staleness).

A database failure is a ``StorageError``, which the server answers with 503 (fail closed: a
request is never authenticated from a cache that might be stale).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.adapters.storage.engine import WRITE_OPTION, create_engine
from strongroom.adapters.storage.schema import EPOCH_ROW_ID, build_identity_tables
from strongroom.adapters.storage.sql import resolve_url
from strongroom.errors import ConfigurationError, StorageError

MAX_STALENESS_S: Final = 10.0
_READ: Final = "SELECT value FROM credential_epoch WHERE id = 1"  # EPOCH_ROW_ID


class SqlCredentialEpoch:
    """``CredentialEpoch`` in the identity tables of a SQL database (see module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        max_staleness: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= max_staleness <= MAX_STALENESS_S:
            raise ConfigurationError(
                f"the credential epoch staleness must be 0 to {MAX_STALENESS_S} seconds"
            )
        self._engine = create_engine(resolve_url(url), what="credential epoch")
        self._table = build_identity_tables().epoch
        self._max_staleness = max_staleness
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, int] | None = None
        self._local = threading.local()
        self._held: list[Any] = []

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for connection in held:
            connection.invalidate()
        self._engine.dispose()

    def _reader(self) -> Any:
        """This thread's own autocommit connection, kept open: one round trip per read."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._engine.raw_connection()
            driver: Any = connection.driver_connection
            if self._engine.dialect.name == "postgresql":
                driver.autocommit = True
            self._local.connection = connection
            with self._lock:
                self._held.append(connection)
        return connection

    def _discard_reader(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._held.remove(connection)
            connection.invalidate()  # closed for real, never handed back to the pool

    def _read(self) -> int:
        cursor = self._reader().cursor()
        try:
            cursor.execute(_READ)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return 0 if row is None else int(row[0])

    def current(self) -> int:
        if self._max_staleness > 0:
            with self._lock:
                cached = self._cached
            if cached is not None and self._monotonic() - cached[0] < self._max_staleness:
                return cached[1]
        read_at = self._monotonic()
        driver_error = self._engine.dialect.loaded_dbapi.Error
        try:
            value = self._read()
        except driver_error:
            self._discard_reader()  # e.g. the server restarted: one retry on a new connection
            try:
                value = self._read()
            except (driver_error, sa.exc.SQLAlchemyError) as exc:
                self._discard_reader()
                raise StorageError("the credential epoch cannot be read") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError("the credential epoch cannot be read") from exc
        with self._lock:
            self._cached = (read_at, value)
        return value

    def bump(self) -> None:
        t = self._table
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    conn.execute(_insert_ignore(conn, t).values(id=EPOCH_ROW_ID, value=0))
                    conn.execute(
                        sa.update(t).where(t.c.id == EPOCH_ROW_ID).values(value=t.c.value + 1)
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError("the credential epoch cannot be updated") from exc
        with self._lock:
            self._cached = None


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> sa.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
