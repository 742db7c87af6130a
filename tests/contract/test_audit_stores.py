"""The audit port contracts on every implementation, and what only the SQL store has to show:
its tables match the migrations, SQLite is durable, failures are ``StorageError``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from strongroom.adapters.storage.audit_sql import SqlAuditStore, build_audit_tables
from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.adapters.storage.schema import build_tables
from strongroom.core.audit.ports import AuditStore, CheckpointSink
from strongroom.errors import ConfigurationError, StorageError
from strongroom.testing.contracts.audit import (
    AuditStoreContract,
    CheckpointSinkContract,
    make_records,
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
    assert differences(combined) == []
    drifted = build_tables().metadata
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
