"""Registry tables: models, versions, artifacts and stage events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

* ``models(name PK, created_at)``: one row per model, created by its first version.
* ``model_versions(model, version, stage, manifest_json, manifest_digest, signature_bundle,
  created_at, created_by)``, PK ``(model, version)``. ``manifest_json`` is the canonical,
  signed manifest and the only trusted source of a version's content; the other columns are
  indexes. ``stage`` is CHECKed against the four stages, and the partial unique index
  ``uq_model_versions_one_production`` keeps at most one production version per model.
* ``artifacts(blob_id PK, model, version, path, size, sha256, key_version)``: one encrypted file
  of a version, ``UNIQUE(model, version, path)``; ``size`` is a BIGINT (files over 2 GiB).
  ``key_version`` is updated in place by key rotation.
* ``stage_events(id, model, version, from_stage, to_stage, reason, actor, at, kind)``: the
  append-only history of stage changes, read in ``id`` order.

Times are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and naive UTC text on SQLite. Strings that
are validated before storage (model names, blob ids, stages) have a length; the rest are TEXT.
Frozen snapshot: do not import the live schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGES = "'none', 'staging', 'production', 'archived'"


def _version_ref(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model", "version"], ["model_versions.model", "model_versions.version"], name=name
    )


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("manifest_digest", sa.Text(), nullable=False),
        sa.Column("signature_bundle", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["model"], ["models.name"], name="fk_model_versions_model"),
        sa.CheckConstraint(f"stage IN ({_STAGES})", name="ck_model_versions_stage"),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version"),
    )
    op.create_index(
        "uq_model_versions_one_production",
        "model_versions",
        ["model"],
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    )
    op.create_table(
        "artifacts",
        sa.Column("blob_id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        _version_ref("fk_artifacts_version"),
        sa.UniqueConstraint("model", "version", "path", name="uq_artifacts_path"),
        sa.CheckConstraint("size >= 0", name="ck_artifacts_size"),
    )
    op.create_table(
        "stage_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=False),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        _version_ref("fk_stage_events_version"),
        sa.CheckConstraint(f"from_stage IN ({_STAGES})", name="ck_stage_events_from_stage"),
        sa.CheckConstraint(f"to_stage IN ({_STAGES})", name="ck_stage_events_to_stage"),
    )
    op.create_index("ix_stage_events_model", "stage_events", ["model", "id"])


def downgrade() -> None:
    op.drop_index("ix_stage_events_model", table_name="stage_events")
    op.drop_table("stage_events")
    op.drop_table("artifacts")
    op.drop_index("uq_model_versions_one_production", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
