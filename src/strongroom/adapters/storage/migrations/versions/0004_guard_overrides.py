"""Guard overrides: per-principal and per-model changes to the request guard's defaults.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01

* ``guard_overrides(kind, subject, policy, updated_at, updated_by; PK (kind, subject))``:
  ``kind`` is CHECKed (``principal``/``model``), so a principal and a model of the same name
  are two rows; ``policy`` is the canonical JSON of ``GuardPolicy.to_dict`` (sorted keys, no
  spaces), validated by the application on every read.

Frozen snapshot: do not import the live schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guard_overrides",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("subject", sa.String(136), primary_key=True),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(136), nullable=False),
        sa.CheckConstraint("kind IN ('principal', 'model')", name="ck_guard_overrides_kind"),
    )


def downgrade() -> None:
    op.drop_table("guard_overrides")
