"""The guard-override contract on every implementation (fake, SQLite, PostgreSQL), and what only
the SQL store must do besides: refuse a tampered row, fail opaquely on an unmigrated database,
and be created by ``strongroom init`` and reachable from the composition root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from strongroom.adapters.storage.audit_sql import build_audit_tables
from strongroom.adapters.storage.guard_sql import SqlGuardOverrideStore
from strongroom.adapters.storage.schema import (
    build_guard_tables,
    build_identity_tables,
    build_tables,
)
from strongroom.bootstrap import initialise
from strongroom.bootstrap.guard import build_guard_override_store
from strongroom.config import Settings
from strongroom.core.policy.overrides import GuardOverrideStore, GuardPolicy, SubjectKind
from strongroom.errors import IntegrityError, StorageError
from strongroom.testing.contracts.guard import FULL_POLICY, GuardOverrideStoreContract, override
from strongroom.testing.fake_guard import FakeGuardOverrideStore

VERSION_TABLE = "strongroom_registry_version"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlGuardOverrideStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = str(request.getfixturevalue("postgres_schema_url"))
    store = SqlGuardOverrideStore(url)
    store.migrate()
    yield store
    store.close()


# --- the contract ------------------------------------------------------------------------------


class TestFakeGuardOverrideStore(GuardOverrideStoreContract):
    @pytest.fixture
    def guard_store(self) -> GuardOverrideStore:
        return FakeGuardOverrideStore()


class TestSqliteGuardOverrideStore(GuardOverrideStoreContract):
    @pytest.fixture
    def guard_store(self, tmp_path: Path) -> Iterator[GuardOverrideStore]:
        store = SqlGuardOverrideStore(f"sqlite:///{tmp_path / 'registry.db'}")
        store.migrate()
        yield store
        store.close()


@pytest.mark.postgres
class TestPostgresGuardOverrideStore(GuardOverrideStoreContract):
    @pytest.fixture
    def guard_store(self, postgres_schema_url: str) -> Iterator[GuardOverrideStore]:
        store = SqlGuardOverrideStore(postgres_schema_url)
        store.migrate()
        yield store
        store.close()


# --- SQL beyond the contract --------------------------------------------------------------------


def test_the_guard_table_matches_its_migration(sql_store: SqlGuardOverrideStore) -> None:
    """Migration 0004 builds exactly ``build_guard_tables``, and a drift in it is seen."""

    def differences(*, drift: bool) -> list[Any]:
        metadata = build_tables().metadata
        build_audit_tables(metadata)
        build_identity_tables(metadata)
        guard = build_guard_tables(metadata).overrides
        if drift:
            guard.append_column(sa.Column("extra", sa.Integer()))
        with sql_store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return list(compare_metadata(context, metadata))

    assert differences(drift=False) == []
    assert differences(drift=True) != []


TAMPERED = {
    "garbage JSON": ("policy", "{not json"),
    "an unknown key": ("policy", '{"burst":3}'),
    "an out-of-range value": ("policy", '{"max_concurrent":0}'),
    "a wrong type": ("policy", '{"max_concurrent":"5"}'),
    "not an object": ("policy", "[]"),
    "a non-canonical spelling": ("policy", '{"max_concurrent": 4}'),
    "duplicate keys": ("policy", '{"max_concurrent":1,"max_concurrent":4}'),
    "a malformed subject": ("subject", "Fraud Model"),
    "an empty author": ("updated_by", ""),
}


@pytest.mark.parametrize(("column", "value"), TAMPERED.values(), ids=list(TAMPERED))
def test_a_tampered_row_is_an_integrity_error(
    sql_store: SqlGuardOverrideStore, column: str, value: str
) -> None:
    sql_store.put_override(override("fraud"))
    with sql_store._engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE guard_overrides SET {column} = :v"), {"v": value})
    with pytest.raises(IntegrityError):
        sql_store.list_overrides()


def test_an_unreadable_sqlite_time_is_an_integrity_error(tmp_path: Path) -> None:
    store = SqlGuardOverrideStore(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        store.migrate()
        store.put_override(override("fraud"))
        with store._engine.begin() as conn:
            conn.execute(sa.text("UPDATE guard_overrides SET updated_at = 'yesterday'"))
        with pytest.raises(IntegrityError):
            store.list_overrides()
    finally:
        store.close()


def test_the_stored_policy_is_canonical_json(sql_store: SqlGuardOverrideStore) -> None:
    sql_store.put_override(override("svc:batch", SubjectKind.PRINCIPAL, FULL_POLICY))
    with sql_store._engine.connect() as conn:
        row = conn.execute(sa.text("SELECT kind, subject, policy FROM guard_overrides")).one()
    assert tuple(row) == (
        "principal",
        "svc:batch",
        (
            '{"deny_networks":["10.0.0.0/8","192.0.2.0/24","2001:db8::/32"],"max_concurrent":7,'
            '"model_rate":{"burst":1,"per_second":3},"quota":{"limit":100000,"period":"month"},'
            '"rate":{"burst":40,"per_second":12.5}}'
        ),
    )


def test_the_database_refuses_an_unknown_kind(sql_store: SqlGuardOverrideStore) -> None:
    sql_store.put_override(override("fraud"))
    with pytest.raises(sa.exc.IntegrityError), sql_store._engine.begin() as conn:
        conn.execute(sa.text("UPDATE guard_overrides SET kind = 'tenant'"))
    assert sql_store.list_overrides() == [override("fraud")]


def test_an_unmigrated_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    store = SqlGuardOverrideStore(f"sqlite:///{path}")
    try:
        for call in (
            store.list_overrides,
            lambda: store.put_override(override("fraud")),
            lambda: store.delete_override(SubjectKind.MODEL, "fraud"),
        ):
            with pytest.raises(StorageError) as caught:
                call()
            message = str(caught.value)
            assert "SELECT" not in message.upper()
            assert "guard_overrides" not in message
            assert str(path) not in message
    finally:
        store.close()


def test_init_creates_the_table_and_bootstrap_reaches_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", keyring_scrypt_n=2**14)
    initialise(settings)
    store = build_guard_override_store(settings)
    try:
        assert store.list_overrides() == []
        store.put_override(override("fraud", policy=GuardPolicy(max_concurrent=2)))
        assert store.list_overrides() == [override("fraud", policy=GuardPolicy(max_concurrent=2))]
    finally:
        store.close()
