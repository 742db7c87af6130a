"""The SQLite audit append path: the one database write on the request path, made lean.

Every served request waits for its record's group commit, so the per-batch cost of appending
is paid again and again on the serving core. ``SqliteAppender`` issues exactly the statements
the generic SQLAlchemy path issues (``BEGIN IMMEDIATE``, the next-sequence check, one
``executemany``, ``COMMIT``) on one pooled driver connection, without SQLAlchemy's
per-statement compilation and bookkeeping. Values go through each column type's own bind
processor (public SQLAlchemy API), so what is stored is byte for byte what the generic path
stores (``tests/unit/test_audit_sqlite_fast_insert.py`` compares them).

Errors map as in ``SqlAuditStore``: a duplicate sequence number or a lost race is
``ConflictError`` (the writer renumbers), anything else from the driver is ``StorageError``
(the writer fails closed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from strongroom.core.audit.record import AuditRecord
from strongroom.errors import ConflictError, StorageError

COLUMNS: Final = ("seq", "canonical", "leaf_hash", "time", "action", "principal", "outcome")
CONFLICT: Final = "another writer appended to the audit log first"


def record_values(record: AuditRecord) -> tuple[Any, ...]:
    """The stored columns of one record, in ``COLUMNS`` order (both insert paths use this)."""
    return (
        record.seq,
        record.canonical,
        record.leaf_hash(),
        record.time,
        record.action,
        record.principal,
        str(record.outcome),
    )


class SqliteAppender:
    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self._engine = engine
        processors = [table.c[name].type.bind_processor(engine.dialect) for name in COLUMNS]
        self._processors: list[tuple[int, Any]] = [
            (index, process) for index, process in enumerate(processors) if process is not None
        ]
        names = ", ".join(COLUMNS)
        placeholders = ", ".join("?" for _ in COLUMNS)
        self._insert = f"INSERT INTO {table.name} ({names}) VALUES ({placeholders})"  # noqa: S608 - fixed names  # nosec B608
        self._highest = f"SELECT max(seq) FROM {table.name}"  # noqa: S608 - fixed names  # nosec B608

    def rows(self, records: Sequence[AuditRecord]) -> list[tuple[Any, ...]]:
        if not self._processors:
            return [record_values(record) for record in records]
        rows = []
        for record in records:
            values = list(record_values(record))
            for index, process in self._processors:
                values[index] = process(values[index])
            rows.append(tuple(values))
        return rows

    def append(self, records: Sequence[AuditRecord]) -> None:
        rows = self.rows(records)
        try:
            connection = self._engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError("the audit store is unavailable or failed") from exc
        try:
            self._append(connection, records[0].seq, rows)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(CONFLICT) from exc
        except sqlite3.Error as exc:
            raise StorageError("the audit store is unavailable or failed") from exc
        finally:
            connection.close()  # back to the pool

    def _append(self, connection: Any, first_seq: int, rows: list[tuple[Any, ...]]) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                self._check_next(cursor, first_seq)
                cursor.executemany(self._insert, rows)
                cursor.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.close()

    def _check_next(self, cursor: Any, first_seq: int) -> None:
        """Under the write lock: the batch must start right after the last stored record."""
        (highest,) = cursor.execute(self._highest).fetchone()
        if (0 if highest is None else int(highest) + 1) != first_seq:
            raise ConflictError(CONFLICT)
