"""Audit trail tables: records, signed checkpoints and the writer's tree state.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

* ``audit_records(seq PK, canonical, leaf_hash, time, action, principal, outcome)``: one row per
  audit record. ``canonical`` (BLOB/BYTEA) holds the record's canonical bytes exactly and is the
  only column verification trusts; ``seq`` is assigned by the writer (never by a database
  sequence, whose rolled-back values would leave gaps); the rest are indexes for queries.
* ``audit_checkpoints(size PK, text)``: signed checkpoints (C2SP signed notes), one per size.
* ``audit_tree_state(size PK, nodes)``: the writer's compact range at its newest checkpoint, the
  32-byte nodes concatenated; untrusted until its root matches a verified checkpoint.

Frozen snapshot: do not import the live schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.CheckConstraint("seq >= 0", name="ck_audit_records_seq"),
    )
    op.create_index("ix_audit_records_time", "audit_records", ["time"])
    op.create_index("ix_audit_records_action", "audit_records", ["action", "seq"])
    op.create_index("ix_audit_records_principal", "audit_records", ["principal", "seq"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_table(
        "audit_tree_state",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("nodes", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_tree_state")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_records_principal", table_name="audit_records")
    op.drop_index("ix_audit_records_action", table_name="audit_records")
    op.drop_index("ix_audit_records_time", table_name="audit_records")
    op.drop_table("audit_records")
