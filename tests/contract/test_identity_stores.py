"""The identity contracts on every implementation (fake, SQLite, PostgreSQL; file and SQL epochs;
Argon2id and the fake hasher), and what only the SQL store and the file epoch must do besides:
tables match the migrations, a tampered row is refused, the epoch is shared across processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from strongroom.adapters.identity.passwords import Argon2PasswordHasher
from strongroom.adapters.storage.audit_sql import build_audit_tables
from strongroom.adapters.storage.epoch_file import FileCredentialEpoch
from strongroom.adapters.storage.epoch_sql import SqlCredentialEpoch
from strongroom.adapters.storage.identity_sql import SqlIdentityStore
from strongroom.adapters.storage.schema import (
    build_guard_tables,
    build_identity_tables,
    build_tables,
)
from strongroom.core.identity.ports import CredentialEpoch, IdentityStore, PasswordHasher
from strongroom.errors import ConfigurationError, IntegrityError, StorageError
from strongroom.testing.contracts.identity import (
    CredentialEpochContract,
    IdentityStoreContract,
    PasswordHasherContract,
    api_key,
    key_id_for,
    principal,
)
from strongroom.testing.fake_identity import (
    FakePasswordHasher,
    InMemoryCredentialEpoch,
    InMemoryIdentityStore,
)

VERSION_TABLE = "strongroom_registry_version"
BUMPS_PER_PROCESS = 200


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def sql_store(sql_url: str) -> Iterator[SqlIdentityStore]:
    store = SqlIdentityStore(sql_url)
    store.migrate()
    yield store
    store.close()


# --- the contracts -----------------------------------------------------------------------------


class TestInMemoryIdentityStore(IdentityStoreContract):
    @pytest.fixture
    def identity_store(self) -> IdentityStore:
        return InMemoryIdentityStore()


class TestSqliteIdentityStore(IdentityStoreContract):
    @pytest.fixture
    def identity_store(self, tmp_path: Path) -> Iterator[IdentityStore]:
        store = SqlIdentityStore(f"sqlite:///{tmp_path / 'registry.db'}")
        store.migrate()
        yield store
        store.close()


@pytest.mark.postgres
class TestPostgresIdentityStore(IdentityStoreContract):
    @pytest.fixture
    def identity_store(self, postgres_schema_url: str) -> Iterator[IdentityStore]:
        store = SqlIdentityStore(postgres_schema_url)
        store.migrate()
        yield store
        store.close()


class TestInMemoryEpoch(CredentialEpochContract):
    @pytest.fixture
    def epochs(self) -> tuple[CredentialEpoch, CredentialEpoch]:
        epoch = InMemoryCredentialEpoch()
        return epoch, epoch


class TestFileEpoch(CredentialEpochContract):
    @pytest.fixture
    def epochs(self, tmp_path: Path) -> Iterator[tuple[CredentialEpoch, CredentialEpoch]]:
        path = tmp_path / "run" / "credential-epoch"
        first, second = FileCredentialEpoch(path), FileCredentialEpoch(path)
        yield first, second
        first.close()
        second.close()


class TestSqlEpoch(CredentialEpochContract):
    @pytest.fixture
    def epochs(self, sql_url: str) -> Iterator[tuple[CredentialEpoch, CredentialEpoch]]:
        SqlIdentityStore(sql_url).migrate()
        first, second = SqlCredentialEpoch(sql_url), SqlCredentialEpoch(sql_url)
        yield first, second
        first.close()
        second.close()


class TestFakeHasher(PasswordHasherContract):
    @pytest.fixture
    def password_hasher(self) -> PasswordHasher:
        return FakePasswordHasher()


class TestArgon2Hasher(PasswordHasherContract):
    @pytest.fixture
    def password_hasher(self) -> PasswordHasher:
        return Argon2PasswordHasher(time_cost=1, memory_cost_kib=64, unsafe_test_profile=True)


# --- SQL beyond the contract --------------------------------------------------------------------


def test_identity_tables_match_the_migrations(sql_store: SqlIdentityStore) -> None:
    """Registry, audit, identity and guard tables together are exactly what the migrations
    build."""

    def differences(metadata: sa.MetaData) -> list[Any]:
        with sql_store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return list(compare_metadata(context, metadata))

    combined = build_tables().metadata
    build_audit_tables(combined)
    build_identity_tables(combined)
    build_guard_tables(combined)  # migration 0004 is in the same stream
    assert differences(combined) == []
    drifted = build_tables().metadata
    build_audit_tables(drifted)
    build_guard_tables(drifted)
    build_identity_tables(drifted).sessions.append_column(sa.Column("extra", sa.Integer()))
    assert differences(drifted) != []
    with sql_store._engine.connect() as conn:
        version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
        epoch = conn.execute(sa.text("SELECT id, value FROM credential_epoch")).all()
    assert version == "0004"
    assert [tuple(row) for row in epoch] == [(1, 0)]


def test_a_tampered_row_is_an_integrity_error(sql_store: SqlIdentityStore) -> None:
    sql_store.create_principal(principal("svc:scoring"))
    sql_store.put_api_keys([api_key(1)])
    with sql_store._engine.begin() as conn:
        conn.execute(sa.text("UPDATE principals SET roles = '[\"root\"]'"))
        conn.execute(sa.text("UPDATE api_keys SET digest = :d"), {"d": b"short"})
    with pytest.raises(IntegrityError):
        sql_store.get_principal("svc:scoring")
    with pytest.raises(IntegrityError):
        sql_store.get_api_key(key_id_for(1))


def test_an_unmigrated_database_is_a_storage_error(tmp_path: Path) -> None:
    store = SqlIdentityStore(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StorageError) as caught:
            store.list_principals()
        assert "SELECT" not in str(caught.value).upper()
    finally:
        store.close()


def test_sql_epoch_may_trade_staleness_for_round_trips(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    SqlIdentityStore(url).migrate()
    now = [0.0]
    writer = SqlCredentialEpoch(url)
    reader = SqlCredentialEpoch(url, max_staleness=1.0, monotonic=lambda: now[0])
    try:
        seen = reader.current()
        writer.bump()
        assert reader.current() == seen  # within max_staleness: the last value read
        now[0] = 1.0
        assert reader.current() == seen + 1
    finally:
        writer.close()
        reader.close()
    with pytest.raises(ConfigurationError):
        SqlCredentialEpoch(url, max_staleness=60)


@pytest.mark.postgres
def test_sql_epoch_reconnects_after_the_server_dropped_it(postgres_schema_url: str) -> None:
    import psycopg

    SqlIdentityStore(postgres_schema_url).migrate()
    epoch = SqlCredentialEpoch(postgres_schema_url)
    try:
        before = epoch.current()
        backend = epoch._reader().driver_connection.info.backend_pid
        server = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
        epoch.bump()
        assert epoch.current() == before + 1
        assert epoch._reader().driver_connection.info.backend_pid != backend
    finally:
        epoch.close()


# --- the file epoch across processes ------------------------------------------------------------


def _bump_many(path: str, count: int) -> None:
    epoch = FileCredentialEpoch(Path(path))
    for _ in range(count):
        epoch.bump()
    epoch.close()


def test_file_epoch_counts_bumps_of_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "run" / "credential-epoch"
    reader = FileCredentialEpoch(path)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_bump_many, args=(str(path), BUMPS_PER_PROCESS)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    try:
        assert [w.exitcode for w in workers] == [0, 0, 0]
        assert reader.current() == 3 * BUMPS_PER_PROCESS  # seen through the shared mapping
    finally:
        reader.close()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_file_epoch_refuses_a_file_others_may_write(tmp_path: Path) -> None:
    path = tmp_path / "run" / "credential-epoch"
    FileCredentialEpoch(path).close()
    path.chmod(0o666)
    with pytest.raises(ConfigurationError):
        FileCredentialEpoch(path)
    path.chmod(0o600)
    (tmp_path / "run" / "link").symlink_to(path)
    with pytest.raises(StorageError):
        FileCredentialEpoch(tmp_path / "run" / "link")


def test_file_epoch_refuses_to_bump_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "credential-epoch"
    epoch = FileCredentialEpoch(path)
    try:
        epoch.bump()
        path.unlink()  # the mapping keeps the old inode: bumping a new file would go unseen
        with pytest.raises(StorageError):
            epoch.bump()
        assert epoch.current() == 1
    finally:
        epoch.close()


def test_times_come_back_in_utc_from_sql(sql_store: SqlIdentityStore) -> None:
    sql_store.create_principal(principal("svc:scoring"))
    assert sql_store.get_principal("svc:scoring").created_at.tzinfo == UTC
    assert datetime.now(UTC) > sql_store.get_principal("svc:scoring").created_at
