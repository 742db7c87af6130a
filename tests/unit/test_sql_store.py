"""SqlMetadataStore beyond the contract: URLs, SQLite settings, migrations, the database's own
constraints, error mapping and concurrency."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from strongroom.adapters.storage.audit_sql import build_audit_tables
from strongroom.adapters.storage.engine import PG_CONNECT_TIMEOUT_S
from strongroom.adapters.storage.schema import (
    build_guard_tables,
    build_identity_tables,
    build_tables,
)
from strongroom.adapters.storage.sql import SqlMetadataStore, resolve_url
from strongroom.core.registry.model import Stage
from strongroom.errors import (
    ConfigurationError,
    ConflictError,
    MissingExtraError,
    StorageError,
    StrongroomError,
)
from strongroom.testing.contracts.storage import make_record, stage_event

VERSION_TABLE = "strongroom_registry_version"
AUDIT_TABLES = {"audit_records", "audit_checkpoints", "audit_tree_state"}  # migration 0002
IDENTITY_TABLES = {  # migration 0003
    "principals",
    "api_keys",
    "password_credentials",
    "totp_credentials",
    "login_lockouts",
    "sessions",
    "certificate_bindings",
    "credential_epoch",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(url: str) -> Iterator[SqlMetadataStore]:
    store = SqlMetadataStore(url)
    store.migrate()
    yield store
    store.close()


def scalar(store: SqlMetadataStore, sql: str, **params: Any) -> Any:
    with store._engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def assert_no_sql_leak(error: StrongroomError) -> None:
    text = str(error).upper()
    for word in ("SELECT", "INSERT", "UPDATE", "MODEL_VERSIONS", "S3CRET", "PSYCOPG", "SQLITE"):
        assert word not in text


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///relative.db", "sqlite+pysqlite"),
        ("sqlite:////abs/registry.db", "sqlite+pysqlite"),
        ("postgresql://u:s3cret@db/registry", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/registry?sslmode=require", "postgresql+psycopg"),
    ],
)
def test_urls_map_to_the_supported_drivers(given: str, driver: str) -> None:
    resolved = resolve_url(given)
    assert resolved.drivername == driver
    assert resolved.database == sa.make_url(given).database


@pytest.mark.parametrize(
    "given",
    [
        "mysql://u:s3cret@db/registry",
        "postgresql+psycopg2://u:s3cret@db/registry",
        "sqlite+aiosqlite:///registry.db",
        "not a url s3cret",
        "",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
def test_other_urls_are_refused_without_echoing_them(given: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SqlMetadataStore(given)
    assert "s3cret" not in str(caught.value)


class _StopConnectingError(Exception):
    pass


def test_postgres_connections_time_out_unless_the_url_says_otherwise() -> None:
    seen: list[object] = []

    def capture(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        seen.append(params.get("connect_timeout"))
        raise _StopConnectingError

    for url in ("postgresql://u@db/registry", "postgresql://u@db/registry?connect_timeout=3"):
        store = SqlMetadataStore(url)
        sa.event.listen(store._engine, "do_connect", capture)
        with pytest.raises(_StopConnectingError):
            store.list_models()
        store.close()
    assert seen == [PG_CONNECT_TIMEOUT_S, "3"]


def test_postgres_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(MissingExtraError) as caught:
        SqlMetadataStore("postgresql://u@db/registry")
    assert caught.value.extra == "postgres"
    assert "postgres" in str(caught.value)


# --- SQLite settings and migrations ----------------------------------------------------------


def test_sqlite_connections_are_durable_and_checked(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert scalar(store, "PRAGMA journal_mode") == "wal"
        assert scalar(store, "PRAGMA synchronous") == 2  # FULL
        assert scalar(store, "PRAGMA foreign_keys") == 1
        assert scalar(store, "PRAGMA busy_timeout") >= 1000
    finally:
        store.close()


def test_migrate_builds_the_schema_on_a_fresh_database(store: SqlMetadataStore) -> None:
    tables = set(sa.inspect(store._engine).get_table_names())
    registry = {"models", "model_versions", "artifacts", "stage_events", VERSION_TABLE}
    assert tables == registry | AUDIT_TABLES | IDENTITY_TABLES | {"guard_overrides"}  # 0004
    assert scalar(store, f"SELECT version_num FROM {VERSION_TABLE}") == "0004"
    store.migrate()
    assert scalar(store, f"SELECT count(*) FROM {VERSION_TABLE}") == 1


def test_table_definitions_match_the_migrations(store: SqlMetadataStore) -> None:
    def differences(metadata: sa.MetaData) -> list[Any]:
        with store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return list(compare_metadata(context, metadata))

    # One migration stream builds the registry, audit (0002), identity (0003) and guard (0004)
    # tables.
    build_identity_tables(store._tables.metadata)
    build_guard_tables(store._tables.metadata)
    assert differences(build_audit_tables(store._tables.metadata).metadata) == []
    drifted = build_tables()
    build_audit_tables(drifted.metadata)
    build_identity_tables(drifted.metadata)
    build_guard_tables(drifted.metadata)
    drifted.artifacts.append_column(sa.Column("extra", sa.Integer()))
    assert differences(drifted.metadata) != []  # the comparison does see drift


@pytest.mark.postgres
def test_postgres_tables_land_in_the_connection_schema(postgres_schema_url: str) -> None:
    store = SqlMetadataStore(postgres_schema_url)
    try:
        store.migrate()
        schema = scalar(store, "SELECT current_schema()")
        assert schema.startswith("sr_test_")
        count = scalar(
            store,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s",
            s=schema,
        )
        assert count == 5 + len(AUDIT_TABLES) + len(IDENTITY_TABLES) + 1  # guard_overrides
    finally:
        store.close()


def test_concurrent_migrations_both_succeed(url: str) -> None:
    stores = [SqlMetadataStore(url) for _ in range(2)]
    barrier = threading.Barrier(len(stores), timeout=10)

    def migrate(store: SqlMetadataStore) -> None:
        barrier.wait()
        store.migrate()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(migrate, stores))
        assert scalar(stores[0], f"SELECT count(*) FROM {VERSION_TABLE}") == 1
    finally:
        for store in stores:
            store.close()


def test_schema_from_a_newer_release_is_refused(store: SqlMetadataStore) -> None:
    with store._engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(StorageError) as caught:
        store.migrate()
    assert "newer" in str(caught.value)


# --- the database keeps the invariants itself ------------------------------------------------


def test_database_enforces_one_production_and_known_stages(store: SqlMetadataStore) -> None:
    store.add_version(make_record(version=1, stage=Stage.PRODUCTION))
    store.add_version(make_record(version=2))
    for stage in ("production", "retired"):
        with pytest.raises(sa.exc.IntegrityError), store._engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE model_versions SET stage = :s WHERE version = 2"), {"s": stage}
            )
    assert store.get_version("fraud", 2).stage == Stage.NONE


def test_database_enforces_foreign_keys(store: SqlMetadataStore) -> None:
    row = {"b": "0" * 32, "m": "ghost", "v": 1}
    with pytest.raises(sa.exc.IntegrityError), store._engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO artifacts (blob_id, model, version, path, size, sha256, key_version)"
                " VALUES (:b, :m, :v, 'p', 1, 'x', 1)"
            ),
            row,
        )
    assert list(store.iter_artifacts()) == []


def test_times_are_stored_in_utc(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        store.migrate()
        india = timezone(timedelta(hours=5, minutes=30))
        store.add_version(make_record(created_at=datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=india)))
        raw = scalar(store, "SELECT created_at FROM model_versions")
        assert raw == "2025-06-01 06:30:00.000001"
    finally:
        store.close()


def test_clock_dates_the_model_row(url: str) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    store = SqlMetadataStore(url, clock=lambda: when)
    try:
        store.migrate()
        store.add_version(make_record())
        store.add_version(make_record(version=2))
        with store._engine.connect() as conn:
            models = store._tables.models
            assert conn.execute(sa.select(models.c.created_at)).scalars().all() == [when]
    finally:
        store.close()


# --- errors ----------------------------------------------------------------------------------


def test_conflicts_keep_sql_out_of_the_message(store: SqlMetadataStore) -> None:
    store.add_version(make_record())
    with pytest.raises(ConflictError) as caught:
        store.add_version(make_record())
    assert_no_sql_leak(caught.value)
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError)


def test_unmigrated_database_is_a_storage_error(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StorageError) as caught:
            store.list_models()
        assert_no_sql_leak(caught.value)
    finally:
        store.close()


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'absent' / 'r.db'}")
    try:
        with pytest.raises(StorageError):
            store.migrate()
    finally:
        store.close()


def test_unreachable_postgres_is_a_storage_error() -> None:
    store = SqlMetadataStore("postgresql://u:s3cret@127.0.0.1:1/registry?connect_timeout=3")
    try:
        with pytest.raises(StorageError) as caught:
            store.next_version("fraud")
        assert_no_sql_leak(caught.value)
        assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    finally:
        store.close()


def test_closed_store_reconnects_on_use(store: SqlMetadataStore) -> None:
    store.add_version(make_record())
    store.close()
    assert store.list_models() == ["fraud"]


# --- concurrency and paging ------------------------------------------------------------------


def race(store: SqlMetadataStore, jobs: list[Callable[[], None]]) -> list[str]:
    """Run ``jobs`` at once; return each outcome as "ok" or the error class name."""
    barrier = threading.Barrier(len(jobs), timeout=10)

    def run(job: Callable[[], None]) -> str:
        barrier.wait()
        try:
            job()
        except StrongroomError as exc:
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(len(jobs)) as pool:
        return sorted(pool.map(run, jobs))


def test_concurrent_promotions_leave_one_production(store: SqlMetadataStore) -> None:
    versions = [1, 2, 3, 4]
    for version in versions:
        store.add_version(make_record(version=version))

    def promote(version: int) -> Callable[[], None]:
        event = stage_event(version, Stage.NONE, Stage.PRODUCTION)
        return lambda: store.change_stage("fraud", version, Stage.NONE, Stage.PRODUCTION, [event])

    outcomes = race(store, [promote(v) for v in versions])
    assert outcomes == ["ConflictError"] * 3 + ["ok"]
    winner = store.production_version("fraud")
    assert [e.version for e in store.stage_history("fraud")] == [winner]


def test_concurrent_pushes_of_one_version_conflict(store: SqlMetadataStore) -> None:
    records = [make_record(paths=(f"file-{i}.onnx",)) for i in range(4)]
    outcomes = race(store, [functools.partial(store.add_version, r) for r in records])
    assert outcomes == ["ConflictError"] * 3 + ["ok"]
    assert len(list(store.iter_artifacts())) == 1


def test_iter_artifacts_reads_in_short_pages(store: SqlMetadataStore) -> None:
    record = make_record(paths=tuple(f"part-{i}" for i in range(5)))
    store.add_version(record)
    store._page_size = 2
    statements: list[str] = []

    def count(*args: Any) -> None:
        if "FROM artifacts" in args[2]:
            statements.append(args[2])

    sa.event.listen(store._engine, "before_cursor_execute", count)
    listed = [artifact.blob_id for _, _, artifact in store.iter_artifacts()]
    assert listed == sorted(a.blob_id for a in record.artifacts)
    assert len(statements) == 3
