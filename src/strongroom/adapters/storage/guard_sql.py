"""``SqlGuardOverrideStore``: guard overrides on SQLite or PostgreSQL (SQLAlchemy Core).

The table is created by migration ``0004_guard_overrides`` in the registry's one migration
stream (so ``strongroom init`` and every ``migrate()`` create it); see
``schema.build_guard_tables``. Every worker and replica reads the same rows.

Invariants (see ``core.policy.overrides.GuardOverrideStore``), and how this module keeps them:

* Every operation is one transaction. ``put_override`` is a single ``INSERT ... ON CONFLICT
  (kind, subject) DO UPDATE``, so two writers of one subject never fail on a duplicate key:
  the last one wins, whole (policy, time and author together).
* The policy is stored as canonical JSON (sorted keys, no spaces). Reading a row builds the
  override again, which validates it; a row that is not exactly what this store writes (bad
  JSON, an unknown key, an out-of-range value, a non-canonical spelling, a bad subject) is an
  ``IntegrityError``, never a half-valid override that would loosen a limit.
* Any database failure (including an unmigrated database) is a ``StorageError`` whose message
  holds no SQL and no URL; the driver's exception stays on ``__cause__`` for server logs.
* ``list_overrides`` is ordered by (kind, subject) in Python, so every backend agrees with the
  in-memory fake.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.adapters.storage.engine import create_engine, transaction
from strongroom.adapters.storage.schema import UPDATED_BY_LENGTH, GuardTables, build_guard_tables
from strongroom.adapters.storage.sql import SqlMetadataStore, resolve_url
from strongroom.core.policy.overrides import (
    GuardOverride,
    GuardPolicy,
    SubjectKind,
    check_subject,
)
from strongroom.errors import IntegrityError, InvalidInputError, NotFoundError

_STORE: Final = "guard override store"
_CONFLICT: Final = "the guard override store refused the change"


class SqlGuardOverrideStore:
    """``GuardOverrideStore`` on ``sqlite:///path``, ``postgresql://`` or
    ``postgresql+psycopg://``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine = create_engine(resolve_url(url), what=_STORE)
        self._t: GuardTables = build_guard_tables()

    def close(self) -> None:
        """Close pooled connections; the store reconnects if used again."""
        self._engine.dispose()

    def migrate(self) -> None:
        """Create or upgrade the schema: the one migration stream shared with the registry."""
        migrator = SqlMetadataStore(self._url)
        try:
            migrator.migrate()
        finally:
            migrator.close()

    def _transaction(self, conflict: str | None = None) -> AbstractContextManager[sa.Connection]:
        return transaction(self._engine, store=_STORE, conflict=conflict)

    def list_overrides(self) -> list[GuardOverride]:
        with self._transaction() as conn:
            result = conn.execute(sa.select(self._t.overrides))
            try:
                found = result.mappings().all()
            except ValueError as exc:  # SQLite keeps times as text; the type decodes on fetch
                raise IntegrityError("a stored guard override is malformed") from exc
        records = [override_record(row) for row in found]
        return sorted(records, key=lambda r: (r.kind.value, r.subject))

    def put_override(self, override: GuardOverride) -> None:
        values = override_row(override)
        table = self._t.overrides
        changed = {name: values[name] for name in ("policy", "updated_at", "updated_by")}
        with self._transaction(_CONFLICT) as conn:
            insert = (
                postgresql.insert(table)
                if conn.dialect.name == "postgresql"
                else sqlite.insert(table)
            )
            conn.execute(
                insert.values(values).on_conflict_do_update(
                    index_elements=[table.c.kind, table.c.subject], set_=changed
                )
            )

    def delete_override(self, kind: SubjectKind, subject: str) -> None:
        kind = _kind(kind)
        check_subject(kind, subject)
        table = self._t.overrides
        where = (table.c.kind == kind.value, table.c.subject == subject)
        with self._transaction(_CONFLICT) as conn:
            if conn.execute(sa.delete(table).where(*where)).rowcount != 1:
                raise NotFoundError(f"no guard override for {kind.value} {subject!r}")


# --- row mapping ---------------------------------------------------------------------------------


def canonical_policy(policy: GuardPolicy) -> str:
    """The stored form of a policy: JSON of ``to_dict`` with sorted keys and no spaces."""
    return json.dumps(
        policy.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def override_row(override: GuardOverride) -> dict[str, Any]:
    """Validate ``override`` as every backend does (the database checks lengths only on some)."""
    if not isinstance(override, GuardOverride):
        raise InvalidInputError("expected a GuardOverride")
    author = override.updated_by
    if not isinstance(author, str) or not 0 < len(author) <= UPDATED_BY_LENGTH:
        raise InvalidInputError(f"updated_by is 1 to {UPDATED_BY_LENGTH} characters")
    return {
        "kind": override.kind.value,
        "subject": override.subject,
        "policy": canonical_policy(override.policy),
        "updated_at": override.updated_at,
        "updated_by": author,
    }


def override_record(row: sa.RowMapping) -> GuardOverride:
    """Build an override from a row; anything malformed is an ``IntegrityError``."""
    try:
        return _build(row)
    except (InvalidInputError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise IntegrityError("a stored guard override is malformed") from exc


def _build(row: sa.RowMapping) -> GuardOverride:
    text = row["policy"]
    policy = GuardPolicy.from_dict(json.loads(text))
    if canonical_policy(policy) != text:
        # Not what this store writes: duplicate keys, extra spaces, another number spelling.
        raise ValueError("the stored policy is not in canonical form")
    author = row["updated_by"]
    if not isinstance(author, str) or not author:
        raise TypeError("updated_by is a non-empty string")
    return GuardOverride(
        kind=SubjectKind(row["kind"]),
        subject=row["subject"],
        policy=policy,
        updated_at=row["updated_at"],
        updated_by=author,
    )


def _kind(kind: SubjectKind | str) -> SubjectKind:
    try:
        return SubjectKind(kind)
    except ValueError:
        raise InvalidInputError("kind must be 'principal' or 'model'") from None
