"""The audit port contracts on every implementation, and what only the SQL store has to show:
its tables match the migrations, SQLite is durable, failures are ``StorageError``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from strongroom.adapters.storage.audit_sql import SqlAuditStore, build_audit_tables
from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.adapters.storage.schema import (
    build_guard_tables,
    build_identity_tables,
    build_tables,
)
from strongroom.core.audit.ports import AuditStore, CheckpointSink
from strongroom.core.crypto.notes import NoteSigner
from strongroom.errors import ConfigurationError, IntegrityError, StorageError
from strongroom.testing.contracts.audit import (
    ORIGIN,
    AuditStoreContract,
    CheckpointSinkContract,
    checkpoint_text,
    make_records,
    race_saves,
)
from strongroom.testing.fake_audit import InMemoryAuditStore, InMemoryCheckpointSink

VERSION_TABLE = "strongroom_registry_version"


class TestInMemoryAuditStore(AuditStoreContract):
    @pytest.fixture
    def audit_store(self) -> AuditStore:
        return InMemoryAuditStore()


class TestSqliteAuditStore(AuditStoreContract):
    @pytest.fixture
    def audit_store(self, tmp_path: Path) -> Iterator[AuditStore]:
        store = SqlAuditStore(f"sqlite:///{tmp_path / 'registry.db'}")
        store.migrate()
        yield store
        store.close()


@pytest.mark.postgres
class TestPostgresAuditStore(AuditStoreContract):
    @pytest.fixture
    def audit_store(self, postgres_schema_url: str) -> Iterator[AuditStore]:
        store = SqlAuditStore(postgres_schema_url)
        store.migrate()
        yield store
        store.close()


class TestInMemoryCheckpointSink(CheckpointSinkContract):
    @pytest.fixture
    def checkpoint_sink(self) -> CheckpointSink:
        return InMemoryCheckpointSink()


class TestDirectoryCheckpointSink(CheckpointSinkContract):
    @pytest.fixture
    def checkpoint_sink(self, tmp_path: Path) -> CheckpointSink:
        return DirectoryCheckpointSink(tmp_path / "external")


# --- the SQL store beyond the contract ------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlAuditStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = str(request.getfixturevalue("postgres_schema_url"))
    store = SqlAuditStore(url)
    store.migrate()
    yield store
    store.close()


def test_audit_tables_match_the_migrations(sql_store: SqlAuditStore) -> None:
    """The registry tables and the audit tables together are exactly what the migrations build."""

    def differences(metadata: sa.MetaData) -> list[Any]:
        with sql_store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return list(compare_metadata(context, metadata))

    combined = build_tables().metadata
    build_audit_tables(combined)
    build_identity_tables(combined)  # migration 0003 is in the same stream
    build_guard_tables(combined)  # and 0004
    assert differences(combined) == []
    drifted = build_tables().metadata
    build_identity_tables(drifted)
    build_guard_tables(drifted)
    build_audit_tables(drifted).records.append_column(sa.Column("extra", sa.Integer()))
    assert differences(drifted) != []


def test_sqlite_audit_connections_are_durable(tmp_path: Path) -> None:
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
    finally:
        store.close()


def test_an_unmigrated_database_is_a_storage_error(tmp_path: Path) -> None:
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        for call in (store.size, lambda: store.append_batch(make_records(0, 1))):
            with pytest.raises(StorageError) as caught:
                call()
            assert "SELECT" not in str(caught.value).upper()
    finally:
        store.close()


def test_an_unreachable_postgres_is_a_storage_error() -> None:
    store = SqlAuditStore("postgresql://u:s3cret@127.0.0.1:1/audit?connect_timeout=3")
    try:
        with pytest.raises(StorageError) as caught:
            store.append_batch(make_records(0, 1))
        assert "s3cret" not in str(caught.value)
    finally:
        store.close()


def test_a_bad_url_is_a_configuration_error_naming_the_audit_store() -> None:
    for url in ("mysql://db/audit", "sqlite://", "::not a url::"):
        with pytest.raises(ConfigurationError) as caught:
            SqlAuditStore(url)
        assert "audit" in str(caught.value)


def test_two_stores_racing_to_save_one_checkpoint_both_succeed(sql_store: SqlAuditStore) -> None:
    """Two processes (two engines on one database) saving the same checkpoint: both succeed,
    where a duplicate key used to surface as a ``ConflictError`` (a false outage)."""
    signer = NoteSigner.generate(ORIGIN, os.urandom)
    other = SqlAuditStore(sql_store._url)
    try:
        sql_store.append_batch(make_records(0, 40))
        for size in range(1, 41):
            text = checkpoint_text(size, signer)
            assert race_saves([sql_store, other], size, [text, text], [bytes(32)]) == []
        forks = [checkpoint_text(41, signer), checkpoint_text(41, signer, salt=b"\x03")]
        sql_store.append_batch(make_records(40, 1))
        raised = race_saves([sql_store, other], 41, forks)
        assert [type(e) for e in raised] == [IntegrityError]
        assert other.last_checkpoint() in forks
    finally:
        other.close()


@pytest.mark.postgres
def test_postgres_write_transactions_are_bounded_and_durable(postgres_schema_url: str) -> None:
    store = SqlAuditStore(postgres_schema_url, lock_timeout=0.25, statement_timeout=1.5)
    store.migrate()
    try:
        with store._transaction(write=True) as conn:
            settings = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar_one()
                for name in ("lock_timeout", "statement_timeout", "synchronous_commit")
            }
        assert settings == {
            "lock_timeout": "250ms",
            "statement_timeout": "1500ms",
            "synchronous_commit": "on",
        }
    finally:
        store.close()


@pytest.mark.postgres
def test_a_held_append_lock_is_a_storage_error_not_a_hang(postgres_schema_url: str) -> None:
    """Another session holding the log's write lock (a hung writer) makes an append fail after
    ``lock_timeout`` instead of blocking the writer thread for ever."""
    store = SqlAuditStore(postgres_schema_url, lock_timeout=0.2)
    store.migrate()
    holder = SqlAuditStore(postgres_schema_url)
    raised: list[Exception] = []

    def append() -> None:
        try:
            store.append_batch(make_records(0, 1))
        except Exception as exc:
            raised.append(exc)

    try:
        with holder._transaction(write=True) as conn:
            holder._lock_appends(conn)
            appender = threading.Thread(target=append)
            appender.start()
            appender.join(timeout=20)
            hung = appender.is_alive()
        appender.join(timeout=20)
        assert not hung
        assert [type(e) for e in raised] == [StorageError]
        assert store.size() == 0
    finally:
        holder.close()
        store.close()


def test_audit_store_timeouts_must_be_positive() -> None:
    for options in ({"lock_timeout": 0.0}, {"statement_timeout": -1.0}):
        with pytest.raises(ValueError, match="positive"):
            SqlAuditStore("sqlite:///unused.db", **options)
