"""``SqlMetadataStore``: the registry's ``MetadataStore`` on SQLite or PostgreSQL (SQLAlchemy Core).

Invariants (see ``core.registry.ports``), and how this module keeps them:

* Every operation is one transaction. Writes change rows *before* they read them (``UPDATE ...
  WHERE stage = :expected`` then check the row count), so that a concurrent change is detected
  by the database rather than by a read that may be stale; on SQLite, write transactions start
  with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing on a
  lock upgrade.
* At most one production version per model is enforced by a partial unique index; a violation,
  like a duplicate version or blob id, is a ``ConflictError``. Any other database failure is a
  ``StorageError``. Messages never carry SQL text or the database URL (which may hold a
  password); the driver's exception stays on ``__cause__`` for server logs.
* Times are stored in UTC and returned as aware UTC datetimes; naive datetimes are refused.
* Orderings that users see (model names, artifact paths) are computed in Python, not by the
  database collation, so that every backend agrees with the in-memory fake.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.adapters.storage.engine import create_engine, transaction
from strongroom.adapters.storage.schema import (
    RegistryTables,
    artifact_record,
    artifact_row,
    build_tables,
    check_blob_id,
    check_events,
    check_record,
    event_row,
    version_record,
)
from strongroom.core.registry.model import ArtifactRecord, Stage, StageEvent, VersionRecord
from strongroom.core.types import Clock
from strongroom.errors import (
    ConfigurationError,
    ConflictError,
    MissingExtraError,
    NotFoundError,
    StorageError,
)

_MIGRATIONS = "strongroom.adapters.storage:migrations"
ITER_PAGE_SIZE = 500
# pg_advisory_xact_lock key serialising concurrent migrations of one database ("srreg" in ASCII).
_MIGRATION_LOCK = 0x7372726567


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _require_psycopg() -> None:
    try:
        importlib.import_module("psycopg")
    except ImportError:
        raise MissingExtraError("PostgreSQL metadata store", "postgres") from None


def resolve_url(url: str) -> sa.URL:
    """Map a settings URL to the one driver per backend that Strongroom supports."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        # from None: the parser's message repeats the URL, which may hold a password.
        raise ConfigurationError("the metadata store URL is malformed") from None
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        if parsed.database in {None, "", ":memory:"}:
            # Each pooled connection would get its own empty database.
            raise ConfigurationError(
                "an in-memory SQLite metadata store is not supported",
                hint="give a file path, or use strongroom.testing.fake_storage in tests",
            )
        return parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername in {"postgresql", "postgresql+psycopg"}:
        _require_psycopg()
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigurationError(
        f"unsupported metadata store URL scheme {parsed.drivername!r}",
        hint="use sqlite:///path/to/registry.db or postgresql://user@host/db",
    )


class SqlMetadataStore:
    """``MetadataStore`` on ``sqlite:///path``, ``postgresql://`` or ``postgresql+psycopg://``."""

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self._engine = create_engine(resolve_url(url), what="metadata store")
        self._clock: Clock = clock or _utc_now
        self._tables: RegistryTables = build_tables()
        self._page_size = ITER_PAGE_SIZE

    def close(self) -> None:
        """Close pooled connections; the store reconnects if used again."""
        self._engine.dispose()

    # --- transactions -------------------------------------------------------------------------

    def _transaction(self, *, conflict: str | None = None) -> AbstractContextManager[sa.Connection]:
        return transaction(self._engine, store="metadata store", conflict=conflict)

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", _MIGRATIONS)
        try:
            with self._transaction(conflict="another process is migrating") as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except CommandError as exc:
            raise StorageError(
                "the metadata store schema is unknown to this Strongroom version",
                hint="was it created by a newer release?",
            ) from exc

    # --- versions -----------------------------------------------------------------------------

    def next_version(self, model: str) -> int:
        mv = self._tables.model_versions
        with self._transaction() as conn:
            highest = conn.execute(
                sa.select(sa.func.max(mv.c.version)).where(mv.c.model == model)
            ).scalar_one()
        return 1 if highest is None else int(highest) + 1

    def add_version(self, record: VersionRecord) -> None:
        check_record(record)
        t = self._tables
        conflict = (
            f"version {record.version} of model '{record.model}' already exists,"
            " or one of its blob ids or paths is already stored"
        )
        with self._transaction(conflict=conflict) as conn:
            conn.execute(self._insert_model_if_absent(conn, record.model))
            conn.execute(
                t.model_versions.insert().values(
                    model=record.model,
                    version=record.version,
                    stage=record.stage.value,
                    manifest_json=record.manifest_json,
                    manifest_digest=record.manifest_digest,
                    signature_bundle=record.signature_bundle,
                    created_at=record.created_at,
                    created_by=record.created_by,
                )
            )
            if record.artifacts:
                rows = [artifact_row(record, artifact) for artifact in record.artifacts]
                conn.execute(t.artifacts.insert(), rows)

    def _insert_model_if_absent(self, conn: sa.Connection, name: str) -> sa.Insert:
        """Race-safe "create the model row unless it exists" in the dialect's own words."""
        values = {"name": name, "created_at": self._clock()}
        models = self._tables.models
        if conn.dialect.name == "postgresql":
            pg = postgresql.insert(models).values(values)
            return pg.on_conflict_do_nothing(index_elements=[models.c.name])
        lite = sqlite.insert(models).values(values)
        return lite.on_conflict_do_nothing(index_elements=[models.c.name])

    def get_version(self, model: str, version: int) -> VersionRecord:
        mv, art = self._tables.model_versions, self._tables.artifacts
        with self._transaction() as conn:
            row = (
                conn.execute(sa.select(mv).where(mv.c.model == model, mv.c.version == version))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFoundError(f"model '{model}' has no version {version}")
            artifacts = (
                conn.execute(sa.select(art).where(art.c.model == model, art.c.version == version))
                .mappings()
                .all()
            )
        return version_record(row, artifacts)

    def list_models(self) -> list[str]:
        with self._transaction() as conn:
            names = conn.execute(sa.select(self._tables.models.c.name)).scalars().all()
        return sorted(names)

    def list_versions(self, model: str) -> list[VersionRecord]:
        t = self._tables
        mv, art = t.model_versions, t.artifacts
        with self._transaction() as conn:
            self._require_model(conn, model)
            rows = (
                conn.execute(sa.select(mv).where(mv.c.model == model).order_by(mv.c.version))
                .mappings()
                .all()
            )
            artifacts = conn.execute(sa.select(art).where(art.c.model == model)).mappings().all()
        by_version: dict[int, list[sa.RowMapping]] = {}
        for artifact in artifacts:
            by_version.setdefault(artifact["version"], []).append(artifact)
        return [version_record(r, by_version.get(r["version"], [])) for r in rows]

    def production_version(self, model: str) -> int | None:
        """The version of ``model`` in production; ``None`` also for an unknown model."""
        mv = self._tables.model_versions
        with self._transaction() as conn:
            found = conn.execute(
                sa.select(mv.c.version).where(
                    mv.c.model == model, mv.c.stage == Stage.PRODUCTION.value
                )
            ).scalar_one_or_none()
        return None if found is None else int(found)

    def _require_model(self, conn: sa.Connection, model: str) -> None:
        models = self._tables.models
        if conn.execute(sa.select(models.c.name).where(models.c.name == model)).first() is None:
            raise NotFoundError(f"no model named '{model}'")

    # --- stages -------------------------------------------------------------------------------

    def change_stage(
        self,
        model: str,
        version: int,
        expected: Stage,
        target: Stage,
        events: Iterable[StageEvent],
        *,
        replace_production: int | None = None,
    ) -> None:
        recorded = tuple(events)
        changed = {version} if replace_production is None else {version, replace_production}
        check_events(model, changed, recorded)
        conflict = f"model '{model}' already has a version in production"
        with self._transaction(conflict=conflict) as conn:
            if replace_production is not None:
                # Archive the old one first so that the partial unique index holds throughout.
                self._set_stage(conn, model, replace_production, Stage.PRODUCTION, Stage.ARCHIVED)
            self._set_stage(conn, model, version, expected, target)
            if recorded:
                conn.execute(self._tables.stage_events.insert(), [event_row(e) for e in recorded])

    def _set_stage(
        self, conn: sa.Connection, model: str, version: int, expected: Stage, target: Stage
    ) -> None:
        """Compare-and-set one version's stage; explain a miss as not-found or conflict."""
        mv = self._tables.model_versions
        where = (mv.c.model == model, mv.c.version == version)
        result = conn.execute(
            sa.update(mv).where(*where, mv.c.stage == expected.value).values(stage=target.value)
        )
        if result.rowcount == 1:
            return
        current = conn.execute(sa.select(mv.c.stage).where(*where)).scalar_one_or_none()
        if current is None:
            raise NotFoundError(f"model '{model}' has no version {version}")
        raise ConflictError(
            f"version {version} of model '{model}' is in stage '{current}', not '{expected}'"
        )

    def stage_history(self, model: str) -> list[StageEvent]:
        events = self._tables.stage_events
        with self._transaction() as conn:
            self._require_model(conn, model)
            rows = conn.execute(
                sa.select(events).where(events.c.model == model).order_by(events.c.id)
            ).all()
        return [
            StageEvent(
                model=r.model,
                version=r.version,
                from_stage=Stage(r.from_stage),
                to_stage=Stage(r.to_stage),
                reason=r.reason,
                actor=r.actor,
                at=r.at,
                kind=r.kind,
            )
            for r in rows
        ]

    # --- artifacts ----------------------------------------------------------------------------

    def iter_artifacts(self) -> Iterator[tuple[str, int, ArtifactRecord]]:
        """Every artifact in blob-id order, read in short pages.

        Pages (keyset pagination) rather than one long cursor: no connection or snapshot is held
        while the caller works, and the caller may update rows (key rotation) as it goes.
        """
        art = self._tables.artifacts
        after = ""
        while True:
            with self._transaction() as conn:
                query = (
                    sa.select(art)
                    .where(art.c.blob_id > after)
                    .order_by(art.c.blob_id)
                    .limit(self._page_size)
                )
                rows = conn.execute(query).mappings().all()
            for row in rows:
                yield row["model"], int(row["version"]), artifact_record(row)
            if len(rows) < self._page_size:
                return
            after = rows[-1]["blob_id"]

    def set_artifact_key_version(self, blob_id: str, key_version: int) -> None:
        check_blob_id(blob_id)
        art = self._tables.artifacts
        with self._transaction(conflict="the artifact changed concurrently") as conn:
            result = conn.execute(
                sa.update(art).where(art.c.blob_id == blob_id).values(key_version=key_version)
            )
            if result.rowcount != 1:
                raise NotFoundError(f"no artifact with blob id {blob_id}")
