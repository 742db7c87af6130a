"""``SqlAuditStore``: the audit log's ``AuditStore`` on SQLite or PostgreSQL (SQLAlchemy Core).

Tables (created by migration ``0002_audit``, in the registry's migration stream):

* ``audit_records(seq PK, canonical, leaf_hash, time, action, principal, outcome)``: the
  canonical bytes are the record; the other columns are indexes for the auditor's queries and
  are never trusted by verification.
* ``audit_checkpoints(size PK, text)``: signed checkpoints, one per size.
* ``audit_tree_state(size PK, nodes)``: the writer's compact range at its newest checkpoint
  (``nodes`` concatenated), so that a restarted writer need not re-read the whole log. Only the
  newest row is kept.

Invariants (see ``core.audit.ports``), and how this module keeps them:

* One batch is one transaction that first takes the log's write lock, so the "does the batch
  start at ``size()``?" check and the insert cannot interleave with another writer's: on SQLite
  ``BEGIN IMMEDIATE`` (and the file is in WAL mode with ``synchronous = FULL``, so a committed
  batch survives power loss), on PostgreSQL a transaction-scoped advisory lock. A batch that does
  not start at ``size()`` is a ``ConflictError`` and nothing is written; the primary key is the
  last line of defence.
* A checkpoint (and its tree state) is inserted with ``ON CONFLICT DO NOTHING`` and then read
  back: two processes saving the same checkpoint both succeed, a different text of the same size
  is an ``IntegrityError`` (a fork), never a ``ConflictError`` the writer would take for an outage.
* A hung database must not hang the writer: on PostgreSQL every transaction sets
  ``statement_timeout``, and write transactions also ``lock_timeout`` (the advisory lock
  included) and ``synchronous_commit = on`` (a commit is durable on the server whatever the
  role's default), all ``SET LOCAL``. A timeout is a ``StorageError``, so the writer fails closed.
* Any other database failure is a ``StorageError`` whose message holds no SQL and no URL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.adapters.storage.audit_sqlite import COLUMNS, SqliteAppender, record_values
from strongroom.adapters.storage.engine import WRITE_OPTION, create_engine
from strongroom.adapters.storage.schema import UtcDateTime
from strongroom.adapters.storage.sql import SqlMetadataStore, resolve_url
from strongroom.core.audit.merkle import HASH_BYTES
from strongroom.core.audit.ports import (
    MAX_READ_LIMIT,
    AuditQuery,
    Rebase,
    StoredRecord,
    TreeState,
    check_batch,
)
from strongroom.core.audit.record import AuditRecord
from strongroom.errors import (
    ConfigurationError,
    ConflictError,
    IntegrityError,
    MissingExtraError,
    StorageError,
    StrongroomError,
)

_CONFLICT: Final = "the audit log moved on: another writer appended first"
_APPEND_LOCK: Final = 0x7372617564  # pg_advisory_xact_lock key serialising appends ("sraud")
DEFAULT_LOCK_TIMEOUT_S: Final = 5.0
DEFAULT_STATEMENT_TIMEOUT_S: Final = 5.0


_V = TypeVar("_V", str, bytes)


@dataclass(frozen=True, slots=True)
class AuditTables:
    metadata: sa.MetaData
    records: sa.Table
    checkpoints: sa.Table
    tree_state: sa.Table


def build_audit_tables(metadata: sa.MetaData | None = None) -> AuditTables:
    """Table objects of the latest audit migration (a test compares them with the migrations)."""
    metadata = sa.MetaData() if metadata is None else metadata
    records = sa.Table(
        "audit_records",
        metadata,
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.CheckConstraint("seq >= 0", name="ck_audit_records_seq"),
        sa.Index("ix_audit_records_time", "time"),
        sa.Index("ix_audit_records_action", "action", "seq"),
        sa.Index("ix_audit_records_principal", "principal", "seq"),
    )
    checkpoints = sa.Table(
        "audit_checkpoints",
        metadata,
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    tree_state = sa.Table(
        "audit_tree_state",
        metadata,
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("nodes", sa.LargeBinary(), nullable=False),
    )
    return AuditTables(metadata, records, checkpoints, tree_state)


# --- engine -----------------------------------------------------------------------------------


def _resolve(url: str) -> sa.URL:
    """``sql.resolve_url``, with messages that name the audit store."""
    try:
        return resolve_url(url)
    except MissingExtraError:
        raise
    except ConfigurationError as exc:
        raise ConfigurationError(f"audit_url: {exc.message}", hint=exc.hint) from None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_READ_LIMIT:
        raise ValueError(f"limit must be in [1, {MAX_READ_LIMIT}]")


class SqlAuditStore:
    """``AuditStore`` on ``sqlite:///path``, ``postgresql://`` or ``postgresql+psycopg://``."""

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        """``lock_timeout``/``statement_timeout`` (seconds, PostgreSQL only) bound how long one
        statement may wait for a lock or run: a hung database becomes a ``StorageError``."""
        if min(lock_timeout, statement_timeout) <= 0:
            raise ValueError("audit store timeouts are positive")
        self._lock_ms = max(1, round(lock_timeout * 1000))
        self._statement_ms = max(1, round(statement_timeout * 1000))
        self._url = url
        self._engine = create_engine(_resolve(url), what="audit store")
        self._tables = build_audit_tables()
        self._sqlite = (
            SqliteAppender(self._engine, self._tables.records)
            if self._engine.dialect.name == "sqlite"
            else None
        )

    def close(self) -> None:
        """Close pooled connections; the store reconnects if used again."""
        self._engine.dispose()

    def migrate(self) -> None:
        """Create or upgrade the schema: the one migration stream shared with the registry."""
        migrator = SqlMetadataStore(self._url)
        try:
            migrator.migrate()
        finally:
            migrator.close()

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    self._set_limits(conn, write=write)
                    yield conn
        except StrongroomError:
            raise
        except sa.exc.IntegrityError as exc:
            if not write:
                raise StorageError("the audit store refused a read") from exc
            raise ConflictError(_CONFLICT) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError("the audit store is unavailable or failed") from exc

    def _set_limits(self, conn: sa.Connection, *, write: bool) -> None:
        """PostgreSQL: timeouts (and durable commits) for this transaction only."""
        if conn.dialect.name != "postgresql":
            return
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {self._statement_ms:d}")
        if write:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {self._lock_ms:d}")
            conn.exec_driver_sql("SET LOCAL synchronous_commit = on")

    def _next_seq(self, conn: sa.Connection) -> int:
        highest = conn.execute(sa.select(sa.func.max(self._tables.records.c.seq))).scalar_one()
        return 0 if highest is None else int(highest) + 1

    # --- records ----------------------------------------------------------------------------

    def size(self) -> int:
        with self._transaction() as conn:
            return self._next_seq(conn)

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        check_batch(records)
        if not records:
            return
        if self._sqlite is not None:
            self._sqlite.append(records)
            return
        with self._transaction(write=True) as conn:
            self._insert(conn, records)

    def append_rebased(self, known: int, build: Rebase) -> None:
        t = self._tables.records
        query = sa.select(t.c.seq, t.c.canonical).where(t.c.seq >= known).order_by(t.c.seq)
        with self._transaction(write=True) as conn:
            self._lock_appends(conn)
            missed = [StoredRecord(int(r.seq), bytes(r.canonical)) for r in conn.execute(query)]
            records = build(missed)
            check_batch(records)
            if records:
                self._insert(conn, records)

    @staticmethod
    def _lock_appends(conn: sa.Connection) -> None:
        """Serialise appends: SQLite's ``BEGIN IMMEDIATE`` already did; PostgreSQL takes an
        advisory lock until the transaction ends (database-wide, so shared by every schema)."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK)))

    def _insert(self, conn: sa.Connection, records: Sequence[AuditRecord]) -> None:
        self._lock_appends(conn)
        if self._next_seq(conn) != records[0].seq:
            raise ConflictError(_CONFLICT)
        conn.execute(
            self._tables.records.insert(),
            [dict(zip(COLUMNS, record_values(r), strict=True)) for r in records],
        )

    def read(self, start_seq: int, limit: int) -> list[StoredRecord]:
        _check_limit(limit)
        t = self._tables.records
        query = (
            sa.select(t.c.seq, t.c.canonical)
            .where(t.c.seq >= start_seq)
            .order_by(t.c.seq)
            .limit(limit)
        )
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        return [StoredRecord(int(row.seq), bytes(row.canonical)) for row in rows]

    def query(self, query: AuditQuery) -> list[StoredRecord]:
        t = self._tables.records
        where = [t.c.seq > query.after_seq]
        if query.action is not None:
            where.append(t.c.action == query.action)
        if query.principal is not None:
            where.append(t.c.principal == query.principal)
        if query.since is not None:
            where.append(t.c.time >= query.since)
        if query.until is not None:
            where.append(t.c.time < query.until)
        select = (
            sa.select(t.c.seq, t.c.canonical).where(*where).order_by(t.c.seq).limit(query.limit)
        )
        with self._transaction() as conn:
            rows = conn.execute(select).all()
        return [StoredRecord(int(row.seq), bytes(row.canonical)) for row in rows]

    # --- checkpoints and tree state ---------------------------------------------------------

    def save_checkpoint(self, size: int, text: str, nodes: Sequence[bytes] | None = None) -> None:
        if nodes is not None and any(len(node) != HASH_BYTES for node in nodes):
            raise ValueError("tree nodes are 32-byte hashes")
        cp, state = self._tables.checkpoints, self._tables.tree_state
        with self._transaction(write=True) as conn:
            if _insert_once(conn, cp.c.size, size, cp.c.text, text) != text:
                raise IntegrityError("a different checkpoint of this size is stored: a fork")
            if nodes is None:
                return
            packed = b"".join(nodes)
            if bytes(_insert_once(conn, state.c.size, size, state.c.nodes, packed)) != packed:
                raise IntegrityError("a different tree state of this size is stored")
            conn.execute(sa.delete(state).where(state.c.size < size))

    def last_checkpoint(self) -> str | None:
        cp = self._tables.checkpoints
        with self._transaction() as conn:
            text = conn.execute(sa.select(cp.c.text).order_by(cp.c.size.desc()).limit(1)).scalar()
        return None if text is None else str(text)

    def checkpoints(self) -> list[str]:
        cp = self._tables.checkpoints
        with self._transaction() as conn:
            texts = conn.execute(sa.select(cp.c.text).order_by(cp.c.size)).scalars().all()
        return [str(text) for text in texts]

    def load_tree_state(self) -> TreeState | None:
        state = self._tables.tree_state
        query = sa.select(state.c.size, state.c.nodes).order_by(state.c.size.desc()).limit(1)
        with self._transaction() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        packed = bytes(row.nodes)
        nodes = tuple(packed[i : i + HASH_BYTES] for i in range(0, len(packed), HASH_BYTES))
        return TreeState(int(row.size), nodes)


def _insert_once(
    conn: sa.Connection, key: sa.Column[int], size: int, column: sa.Column[_V], value: _V
) -> _V:
    """Insert ``value`` at ``size`` unless a row is there, and return the stored value.

    ``ON CONFLICT DO NOTHING`` waits for a concurrent insert of the same key and then does
    nothing, so of two processes saving one checkpoint neither fails; the caller compares what
    is stored with what it meant to store.
    """
    table = key.table
    if conn.dialect.name == "postgresql":
        insert: sa.Insert = postgresql.insert(table).on_conflict_do_nothing()
    else:
        insert = sqlite.insert(table).on_conflict_do_nothing()
    conn.execute(insert.values({key.name: size, column.name: value}))
    stored: _V = conn.execute(sa.select(column).where(key == size)).scalar_one()
    return stored
