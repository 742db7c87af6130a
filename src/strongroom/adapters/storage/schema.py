"""Tables of the SQL metadata store as SQLAlchemy Core objects, and how records map onto rows.

The schema itself is created and upgraded by the Alembic migrations next to this module
(``migrations/versions``); these definitions describe the *latest* revision for queries, and a
test compares them with what the migrations build so that the two cannot drift apart.

Invariants the database enforces itself, so that no caller can break them:

* at most one ``production`` version per model (a partial unique index);
* stages are one of the four known values (a CHECK constraint);
* an artifact belongs to an existing version, a version to an existing model (foreign keys), and
  a blob id is stored once (primary key), a path once per version (unique constraint).

Times are kept in UTC. SQLite has no time-zone-aware type, so ``UtcDateTime`` stores naive UTC
there and gives back aware UTC datetimes on every dialect.

Records are validated before they reach the database (``check_record``, ``check_events``) so
that malformed input is an ``InvalidInputError`` on every dialect rather than a driver error
that differs between SQLite and PostgreSQL.

Tables are built per store by ``build_tables`` rather than at import, so that no ``MetaData``
(a mutable registry) lives at module level. The identity tables (``build_identity_tables``,
migration ``0003_identity``) are described at the end; their row mapping is in
``identity_rows``. The guard-override table (``build_guard_tables``, migration
``0004_guard_overrides``) follows them; its row mapping is in ``guard_sql``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from strongroom.core.registry.model import (
    ArtifactRecord,
    Stage,
    StageEvent,
    VersionRecord,
    check_model_name,
)
from strongroom.core.registry.ports import BLOB_ID_HEX_LENGTH
from strongroom.errors import InvalidInputError

MODEL_NAME_LENGTH = 64
BLOB_ID_LENGTH = 32
STAGE_LENGTH = 16
PRODUCTION_INDEX = "uq_model_versions_one_production"
_BLOB_ID_RE = re.compile(f"[0-9a-f]{{{BLOB_ID_HEX_LENGTH}}}")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that refuses naive values and always returns aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            # Callers validate first; this is the last line of defence against silently
            # storing local time as if it were UTC.
            raise ValueError("naive datetimes are not stored")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        del dialect
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RegistryTables:
    metadata: sa.MetaData
    models: sa.Table
    model_versions: sa.Table
    artifacts: sa.Table
    stage_events: sa.Table


def _stage_check(column: str, name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{stage.value}'" for stage in Stage)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def _version_ref(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model", "version"], ["model_versions.model", "model_versions.version"], name=name
    )


def build_tables() -> RegistryTables:
    """Return fresh table objects describing the latest migration (see module docstring)."""
    metadata = sa.MetaData()
    models = sa.Table(
        "models",
        metadata,
        sa.Column("name", sa.String(MODEL_NAME_LENGTH), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    model_versions = sa.Table(
        "model_versions",
        metadata,
        sa.Column("model", sa.String(MODEL_NAME_LENGTH), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("stage", sa.String(STAGE_LENGTH), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("manifest_digest", sa.Text(), nullable=False),
        sa.Column("signature_bundle", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["model"], ["models.name"], name="fk_model_versions_model"),
        _stage_check("stage", "ck_model_versions_stage"),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version"),
    )
    production = model_versions.c.stage == Stage.PRODUCTION.value
    sa.Index(
        PRODUCTION_INDEX,
        model_versions.c.model,
        unique=True,
        sqlite_where=production,
        postgresql_where=production,
    )
    artifacts = sa.Table(
        "artifacts",
        metadata,
        sa.Column("blob_id", sa.String(BLOB_ID_LENGTH), primary_key=True),
        sa.Column("model", sa.String(MODEL_NAME_LENGTH), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        _version_ref("fk_artifacts_version"),
        sa.UniqueConstraint("model", "version", "path", name="uq_artifacts_path"),
        sa.CheckConstraint("size >= 0", name="ck_artifacts_size"),
    )
    stage_events = sa.Table(
        "stage_events",
        metadata,
        # SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("model", sa.String(MODEL_NAME_LENGTH), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(STAGE_LENGTH), nullable=False),
        sa.Column("to_stage", sa.String(STAGE_LENGTH), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        _version_ref("fk_stage_events_version"),
        _stage_check("from_stage", "ck_stage_events_from_stage"),
        _stage_check("to_stage", "ck_stage_events_to_stage"),
        sa.Index("ix_stage_events_model", "model", "id"),
    )
    return RegistryTables(metadata, models, model_versions, artifacts, stage_events)


# --- validation and row mapping ----------------------------------------------------------------


def check_blob_id(blob_id: str) -> str:
    if not isinstance(blob_id, str) or not _BLOB_ID_RE.fullmatch(blob_id):
        raise InvalidInputError("blob ids are 32 lower-case hexadecimal characters")
    return blob_id


def _check_time(value: datetime) -> None:
    if value.utcoffset() is None:
        raise InvalidInputError("times must be timezone-aware")


def check_record(record: VersionRecord) -> None:
    check_model_name(record.model)
    if record.version < 1:
        raise InvalidInputError("versions start at 1")
    _check_time(record.created_at)
    for artifact in record.artifacts:
        check_blob_id(artifact.blob_id)
        if artifact.size < 0:
            raise InvalidInputError("artifact sizes cannot be negative")


def check_events(model: str, versions: set[int], events: tuple[StageEvent, ...]) -> None:
    for event in events:
        if event.model != model or event.version not in versions:
            raise InvalidInputError("stage events must concern the versions being changed")
        _check_time(event.at)


def artifact_row(record: VersionRecord, artifact: ArtifactRecord) -> dict[str, Any]:
    return {
        "blob_id": artifact.blob_id,
        "model": record.model,
        "version": record.version,
        "path": artifact.path,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "key_version": artifact.key_version,
    }


def event_row(event: StageEvent) -> dict[str, Any]:
    return {
        "model": event.model,
        "version": event.version,
        "from_stage": event.from_stage.value,
        "to_stage": event.to_stage.value,
        "reason": event.reason,
        "actor": event.actor,
        "at": event.at,
        "kind": event.kind,
    }


def artifact_record(row: sa.RowMapping) -> ArtifactRecord:
    return ArtifactRecord(
        path=row["path"],
        blob_id=row["blob_id"],
        size=int(row["size"]),
        sha256=row["sha256"],
        key_version=int(row["key_version"]),
    )


def version_record(row: sa.RowMapping, artifacts: Sequence[sa.RowMapping]) -> VersionRecord:
    records = sorted((artifact_record(a) for a in artifacts), key=lambda a: a.path)
    return VersionRecord(
        model=row["model"],
        version=int(row["version"]),
        stage=Stage(row["stage"]),
        manifest_json=row["manifest_json"],
        manifest_digest=row["manifest_digest"],
        signature_bundle=row["signature_bundle"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        artifacts=tuple(records),
    )


# --- identity (migration 0003_identity) --------------------------------------------------------

PRINCIPAL_ID_LENGTH = 136  # "user:" + 128 characters, with room to spare
CREDENTIAL_ID_LENGTH = 12  # API key and session ids (core.identity.api_keys.KEY_ID_LENGTH)
FINGERPRINT_LENGTH = 64
EPOCH_ROW_ID = 1


@dataclass(frozen=True, slots=True)
class IdentityTables:
    metadata: sa.MetaData
    principals: sa.Table
    api_keys: sa.Table
    passwords: sa.Table
    totp: sa.Table
    lockouts: sa.Table
    sessions: sa.Table
    certificates: sa.Table
    epoch: sa.Table


def _principal_ref(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["principal_id"], ["principals.id"], name=name)


def _principal_id_column(*, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "principal_id",
        sa.String(PRINCIPAL_ID_LENGTH),
        primary_key=primary_key,
        nullable=False,
    )


def build_identity_tables(metadata: sa.MetaData | None = None) -> IdentityTables:
    """Table objects of the identity migration (a test compares them with the migrations).

    Roles, grants and networks are JSON text in the principal's row: one read per principal, and
    ``PrincipalRecord`` validates them again on the way out.
    """
    metadata = sa.MetaData() if metadata is None else metadata
    principals = sa.Table(
        "principals",
        metadata,
        sa.Column("id", sa.String(PRINCIPAL_ID_LENGTH), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("grants", sa.Text(), nullable=False),
        sa.Column("networks", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.CheckConstraint("kind IN ('user', 'service')", name="ck_principals_kind"),
    )
    api_keys = sa.Table(
        "api_keys",
        metadata,
        sa.Column("key_id", sa.String(CREDENTIAL_ID_LENGTH), primary_key=True),
        _principal_id_column(),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        _principal_ref("fk_api_keys_principal"),
        sa.Index("ix_api_keys_principal", "principal_id"),
    )
    passwords = sa.Table(
        "password_credentials",
        metadata,
        _principal_id_column(primary_key=True),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("history", sa.Text(), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        _principal_ref("fk_password_credentials_principal"),
    )
    totp = sa.Table(
        "totp_credentials",
        metadata,
        _principal_id_column(primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        _principal_ref("fk_totp_credentials_principal"),
    )
    lockouts = sa.Table(
        "login_lockouts",
        metadata,
        _principal_id_column(primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        _principal_ref("fk_login_lockouts_principal"),
        sa.CheckConstraint("failures >= 0", name="ck_login_lockouts_failures"),
    )
    sessions = sa.Table(
        "sessions",
        metadata,
        sa.Column("id", sa.String(CREDENTIAL_ID_LENGTH), primary_key=True),
        _principal_id_column(),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("mfa_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        _principal_ref("fk_sessions_principal"),
        sa.Index("ix_sessions_principal", "principal_id"),
        sa.Index("ix_sessions_expires_at", "expires_at"),
    )
    certificates = sa.Table(
        "certificate_bindings",
        metadata,
        sa.Column("fingerprint", sa.String(FINGERPRINT_LENGTH), primary_key=True),
        _principal_id_column(),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        _principal_ref("fk_certificate_bindings_principal"),
        sa.Index("ix_certificate_bindings_principal", "principal_id"),
    )
    epoch = sa.Table(
        "credential_epoch",
        metadata,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(f"id = {EPOCH_ROW_ID}", name="ck_credential_epoch_one_row"),
    )
    return IdentityTables(
        metadata, principals, api_keys, passwords, totp, lockouts, sessions, certificates, epoch
    )


# --- guard overrides (migration 0004_guard_overrides) ------------------------------------------

SUBJECT_KIND_LENGTH = 16
GUARD_SUBJECT_LENGTH = 136  # a principal id (``PRINCIPAL_ID_LENGTH``) or a model name
UPDATED_BY_LENGTH = 136


@dataclass(frozen=True, slots=True)
class GuardTables:
    metadata: sa.MetaData
    overrides: sa.Table


def build_guard_tables(metadata: sa.MetaData | None = None) -> GuardTables:
    """Table objects of the guard-override migration (a test compares them with the migrations).

    One row per (kind, subject); the policy is the canonical JSON of ``GuardPolicy.to_dict``
    (sorted keys, no spaces), validated again by ``GuardPolicy.from_dict`` on every read.
    """
    metadata = sa.MetaData() if metadata is None else metadata
    overrides = sa.Table(
        "guard_overrides",
        metadata,
        sa.Column("kind", sa.String(SUBJECT_KIND_LENGTH), primary_key=True),
        sa.Column("subject", sa.String(GUARD_SUBJECT_LENGTH), primary_key=True),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(UPDATED_BY_LENGTH), nullable=False),
        sa.CheckConstraint("kind IN ('principal', 'model')", name="ck_guard_overrides_kind"),
    )
    return GuardTables(metadata, overrides)
