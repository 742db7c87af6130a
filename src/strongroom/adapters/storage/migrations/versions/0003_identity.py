"""Identity tables: principals, API keys, passwords, TOTP, lockouts, sessions, certificates.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

* ``principals(id PK, kind, roles, grants, networks, disabled, created_at, description)``:
  ``kind`` is CHECKed (``user``/``service``); roles, grants and networks are JSON text,
  validated by the application on every read.
* ``api_keys(key_id PK, principal_id FK, digest, created_at, expires_at, revoked_at)``: only the
  keyed digest of a key is stored, never the key.
* ``password_credentials(principal_id PK FK, hash, history, changed_at)``: Argon2id hashes;
  ``history`` is a JSON list of earlier hashes (newest first).
* ``totp_credentials(principal_id PK FK, sealed, last_step, confirmed)``: the sealed secret and
  the last time step used (replay protection).
* ``login_lockouts(principal_id PK FK, failures, locked_until)``.
* ``sessions(id PK, principal_id FK, digest, created_at, expires_at, mfa_at, revoked_at)``.
* ``certificate_bindings(fingerprint PK, principal_id FK, created_at)``: SHA-256 of the DER.
* ``credential_epoch(id PK CHECK id = 1, value)``: one row, bumped after every credential
  change so that every server process drops its credential cache; created with value 0.

Frozen snapshot: do not import the live schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _principal_id(*, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column("principal_id", sa.String(136), primary_key=primary_key, nullable=False)


def _principal_ref(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["principal_id"], ["principals.id"], name=name)


def _credential_tables() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(12), primary_key=True),
        _principal_id(),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        _principal_ref("fk_api_keys_principal"),
    )
    op.create_index("ix_api_keys_principal", "api_keys", ["principal_id"])
    op.create_table(
        "password_credentials",
        _principal_id(primary_key=True),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("history", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        _principal_ref("fk_password_credentials_principal"),
    )
    op.create_table(
        "totp_credentials",
        _principal_id(primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        _principal_ref("fk_totp_credentials_principal"),
    )
    op.create_table(
        "login_lockouts",
        _principal_id(primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        _principal_ref("fk_login_lockouts_principal"),
        sa.CheckConstraint("failures >= 0", name="ck_login_lockouts_failures"),
    )


def _session_tables() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(12), primary_key=True),
        _principal_id(),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mfa_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        _principal_ref("fk_sessions_principal"),
    )
    op.create_index("ix_sessions_principal", "sessions", ["principal_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "certificate_bindings",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        _principal_id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _principal_ref("fk_certificate_bindings_principal"),
    )
    op.create_index("ix_certificate_bindings_principal", "certificate_bindings", ["principal_id"])


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(136), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("grants", sa.Text(), nullable=False),
        sa.Column("networks", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.CheckConstraint("kind IN ('user', 'service')", name="ck_principals_kind"),
    )
    _credential_tables()
    _session_tables()
    epoch = op.create_table(
        "credential_epoch",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_credential_epoch_one_row"),
    )
    op.bulk_insert(epoch, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("credential_epoch")
    op.drop_index("ix_certificate_bindings_principal", table_name="certificate_bindings")
    op.drop_table("certificate_bindings")
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    op.drop_index("ix_sessions_principal", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("login_lockouts")
    op.drop_table("totp_credentials")
    op.drop_table("password_credentials")
    op.drop_index("ix_api_keys_principal", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("principals")
