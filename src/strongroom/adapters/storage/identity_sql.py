"""``SqlIdentityStore``: principals and credentials on SQLite or PostgreSQL (SQLAlchemy Core).

Tables are created by migration ``0003_identity`` in the registry's one migration stream (so
``strongroom init`` and every ``migrate()`` create them); see ``schema.build_identity_tables``.

Invariants (see ``core.identity.ports``), and how this module keeps them:

* Every operation is one transaction. Read-modify-write operations lock what they change first:
  on SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, the
  others queue on the busy timeout); on PostgreSQL they ``SELECT ... FOR UPDATE`` the row (a
  lockout row is created first with ``ON CONFLICT DO NOTHING``, so two workers recording the
  first failure of an account both count). Single-row compare-and-set updates (TOTP step,
  password hash, session MFA) put the condition in the ``WHERE`` clause and check the row count.
* A duplicate key is a ``ConflictError``, an unknown principal a ``NotFoundError`` (checked in the
  same transaction before the insert), any other database failure a ``StorageError`` whose message
  holds no SQL and no URL. A malformed stored row is an ``IntegrityError`` (``identity_rows``).
* Orderings users see are computed in Python, so every backend agrees with the in-memory fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.adapters.storage import identity_rows as rows
from strongroom.adapters.storage.engine import create_engine, transaction
from strongroom.adapters.storage.schema import IdentityTables, build_identity_tables
from strongroom.adapters.storage.sql import SqlMetadataStore, resolve_url
from strongroom.core.identity.api_keys import StoredApiKey
from strongroom.core.identity.passwords import LockoutState
from strongroom.core.identity.ports import (
    CertificateBinding,
    PasswordRecord,
    PrincipalRecord,
    SessionRecord,
    TotpRecord,
    check_fingerprint,
)
from strongroom.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)

_CONFLICT: Final = "the identity store changed concurrently, or the record exists"


class SqlIdentityStore:
    """``IdentityStore`` on ``sqlite:///path``, ``postgresql://`` or ``postgresql+psycopg://``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine = create_engine(resolve_url(url), what="identity store")
        self._t: IdentityTables = build_identity_tables()

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
        return transaction(self._engine, store="identity store", conflict=conflict)

    def _require_principal(self, conn: sa.Connection, principal_id: str) -> None:
        p = self._t.principals
        if conn.execute(sa.select(p.c.id).where(p.c.id == principal_id)).first() is None:
            raise NotFoundError(f"no principal {principal_id!r}")

    def _insert_ignore(self, conn: sa.Connection, table: sa.Table) -> sa.Insert:
        if conn.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    # --- principals -----------------------------------------------------------------------

    def create_principal(self, record: PrincipalRecord) -> None:
        _check_type(record, PrincipalRecord)
        with self._transaction(f"principal {record.id!r} already exists") as conn:
            conn.execute(self._t.principals.insert().values(rows.principal_row(record)))

    def get_principal(self, principal_id: str) -> PrincipalRecord:
        p = self._t.principals
        with self._transaction() as conn:
            row = conn.execute(sa.select(p).where(p.c.id == principal_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no principal {principal_id!r}")
        return rows.principal_record(row)

    def list_principals(self) -> list[PrincipalRecord]:
        with self._transaction() as conn:
            found = conn.execute(sa.select(self._t.principals)).mappings().all()
        return sorted((rows.principal_record(r) for r in found), key=lambda r: r.id)

    def update_principal(self, record: PrincipalRecord, *, expected: PrincipalRecord) -> None:
        _check_type(record, PrincipalRecord)
        p = self._t.principals
        values = rows.principal_row(record)
        for immutable in ("id", "kind", "created_at"):
            del values[immutable]
        with self._transaction(_CONFLICT) as conn:
            query = sa.select(p).where(p.c.id == record.id).with_for_update()
            row = conn.execute(query).mappings().first()
            if row is None or row["kind"] != record.kind.value:
                raise NotFoundError(f"no {record.kind} principal {record.id!r}")
            if rows.principal_record(row) != expected:
                raise ConflictError(f"principal {record.id!r} changed concurrently")
            conn.execute(sa.update(p).where(p.c.id == record.id).values(values))

    # --- API keys -------------------------------------------------------------------------

    def put_api_keys(self, records: Sequence[StoredApiKey]) -> None:
        for record in records:
            _check_type(record, StoredApiKey)
        if len({r.key_id for r in records}) != len(records):
            raise InvalidInputError("the same API key id twice in one change")
        with self._transaction(_CONFLICT) as conn:
            for record in records:
                self._put_api_key(conn, record)

    def _put_api_key(self, conn: sa.Connection, record: StoredApiKey) -> None:
        k = self._t.api_keys
        query = sa.select(k).where(k.c.key_id == record.key_id).with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            self._require_principal(conn, record.principal_id)
            conn.execute(k.insert().values(rows.api_key_row(record)))
            return
        stored = rows.api_key_record(row)
        if (stored.digest, stored.principal_id, stored.created_at) != (
            record.digest,
            record.principal_id,
            record.created_at,
        ):
            raise ConflictError(f"API key id {record.key_id} is taken by another key")
        conn.execute(
            sa.update(k)
            .where(k.c.key_id == record.key_id)
            .values(
                expires_at=rows.earliest(stored.expires_at, record.expires_at),
                revoked_at=rows.earliest(stored.revoked_at, record.revoked_at),
            )
        )

    def get_api_key(self, key_id: str) -> StoredApiKey:
        k = self._t.api_keys
        with self._transaction() as conn:
            row = conn.execute(sa.select(k).where(k.c.key_id == key_id)).mappings().first()
        if row is None:
            raise NotFoundError("no such API key")
        return rows.api_key_record(row)

    def list_api_keys(self, principal_id: str) -> list[StoredApiKey]:
        k = self._t.api_keys
        with self._transaction() as conn:
            self._require_principal(conn, principal_id)
            found = conn.execute(sa.select(k).where(k.c.principal_id == principal_id))
            records = [rows.api_key_record(r) for r in found.mappings()]
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    # --- passwords and TOTP ---------------------------------------------------------------

    def get_password(self, principal_id: str) -> PasswordRecord | None:
        pw = self._t.passwords
        with self._transaction() as conn:
            row = conn.execute(sa.select(pw).where(pw.c.principal_id == principal_id)).mappings()
            found = row.first()
        return None if found is None else rows.password_record(found)

    def put_password(self, record: PasswordRecord, *, expected_hash: str | None) -> None:
        _check_type(record, PasswordRecord)
        pw = self._t.passwords
        with self._transaction("the password changed concurrently") as conn:
            self._require_principal(conn, record.principal_id)
            if expected_hash is None:
                conn.execute(pw.insert().values(rows.password_row(record)))
                return
            result = conn.execute(
                sa.update(pw)
                .where(pw.c.principal_id == record.principal_id, pw.c.hash == expected_hash)
                .values(rows.password_row(record))
            )
            if result.rowcount != 1:
                raise ConflictError("the password changed concurrently")

    def get_totp(self, principal_id: str) -> TotpRecord | None:
        t = self._t.totp
        with self._transaction() as conn:
            found = conn.execute(sa.select(t).where(t.c.principal_id == principal_id))
            row = found.mappings().first()
        return None if row is None else rows.totp_record(row)

    def put_totp(self, record: TotpRecord) -> None:
        _check_type(record, TotpRecord)
        t = self._t.totp
        with self._transaction(_CONFLICT) as conn:
            self._require_principal(conn, record.principal_id)
            conn.execute(sa.delete(t).where(t.c.principal_id == record.principal_id))
            conn.execute(
                t.insert().values(
                    principal_id=record.principal_id,
                    sealed=record.sealed,
                    last_step=record.last_step,
                    confirmed=record.confirmed,
                )
            )

    def record_totp_step(
        self, principal_id: str, step: int, *, sealed: bytes, confirm: bool = False
    ) -> bool:
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidInputError("a TOTP step is a non-negative integer")
        t = self._t.totp
        fresh = sa.or_(t.c.last_step.is_(None), t.c.last_step < step)
        values: dict[str, object] = {"last_step": step}
        if confirm:
            values["confirmed"] = True
        with self._transaction(_CONFLICT) as conn:
            result = conn.execute(
                sa.update(t)
                .where(t.c.principal_id == principal_id, t.c.sealed == sealed, fresh)
                .values(values)
            )
            return result.rowcount == 1

    # --- lockout --------------------------------------------------------------------------

    def get_lockout(self, principal_id: str) -> LockoutState:
        lo = self._t.lockouts
        with self._transaction() as conn:
            found = conn.execute(sa.select(lo).where(lo.c.principal_id == principal_id))
            return rows.lockout_state(found.mappings().first())

    def update_lockout(
        self, principal_id: str, change: Callable[[LockoutState], LockoutState]
    ) -> LockoutState:
        lo = self._t.lockouts
        where = lo.c.principal_id == principal_id
        with self._transaction(_CONFLICT) as conn:
            self._require_principal(conn, principal_id)
            conn.execute(
                self._insert_ignore(conn, lo).values(
                    principal_id=principal_id, failures=0, locked_until=None
                )
            )
            row = conn.execute(sa.select(lo).where(where).with_for_update()).mappings().one()
            before = rows.lockout_state(row)
            after = change(before)
            _check_type(after, LockoutState)
            if after != before:
                conn.execute(
                    sa.update(lo)
                    .where(where)
                    .values(failures=after.failures, locked_until=after.locked_until)
                )
        return after

    # --- sessions -------------------------------------------------------------------------

    def add_session(self, record: SessionRecord) -> None:
        _check_type(record, SessionRecord)
        with self._transaction(f"session {record.id} already exists") as conn:
            self._require_principal(conn, record.principal_id)
            conn.execute(self._t.sessions.insert().values(rows.session_row(record)))

    def _session(self, conn: sa.Connection, session_id: str) -> SessionRecord:
        s = self._t.sessions
        row = conn.execute(sa.select(s).where(s.c.id == session_id)).mappings().first()
        if row is None:
            raise NotFoundError("no such session")
        return rows.session_record(row)

    def get_session(self, session_id: str) -> SessionRecord:
        with self._transaction() as conn:
            return self._session(conn, session_id)

    def set_session_mfa(self, session_id: str, mfa_at: datetime) -> SessionRecord:
        _check_aware(mfa_at)
        s = self._t.sessions
        later = sa.or_(s.c.mfa_at.is_(None), s.c.mfa_at < mfa_at)
        with self._transaction(_CONFLICT) as conn:
            conn.execute(
                sa.update(s)
                .where(s.c.id == session_id, s.c.revoked_at.is_(None), later)
                .values(mfa_at=mfa_at)
            )
            return self._session(conn, session_id)

    def revoke_session(self, session_id: str, at: datetime) -> SessionRecord:
        _check_aware(at)
        s = self._t.sessions
        with self._transaction(_CONFLICT) as conn:
            conn.execute(
                sa.update(s)
                .where(s.c.id == session_id, s.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            return self._session(conn, session_id)

    def revoke_sessions(self, principal_id: str, at: datetime) -> int:
        _check_aware(at)
        s = self._t.sessions
        live = (s.c.principal_id == principal_id, s.c.revoked_at.is_(None), s.c.expires_at > at)
        with self._transaction(_CONFLICT) as conn:
            return int(conn.execute(sa.update(s).where(*live).values(revoked_at=at)).rowcount)

    def purge_sessions(self, expired_before: datetime) -> int:
        _check_aware(expired_before)
        s = self._t.sessions
        with self._transaction(_CONFLICT) as conn:
            return int(conn.execute(sa.delete(s).where(s.c.expires_at < expired_before)).rowcount)

    # --- client certificates --------------------------------------------------------------

    def bind_certificate(self, binding: CertificateBinding) -> None:
        _check_type(binding, CertificateBinding)
        with self._transaction("this certificate is already bound to a principal") as conn:
            self._require_principal(conn, binding.principal_id)
            conn.execute(
                self._t.certificates.insert().values(
                    fingerprint=binding.fingerprint,
                    principal_id=binding.principal_id,
                    created_at=binding.created_at,
                )
            )

    def unbind_certificate(self, fingerprint: str) -> None:
        check_fingerprint(fingerprint)
        c = self._t.certificates
        with self._transaction(_CONFLICT) as conn:
            if conn.execute(sa.delete(c).where(c.c.fingerprint == fingerprint)).rowcount != 1:
                raise NotFoundError("this certificate is not bound")

    def get_certificate(self, fingerprint: str) -> CertificateBinding:
        c = self._t.certificates
        with self._transaction() as conn:
            found = conn.execute(sa.select(c).where(c.c.fingerprint == fingerprint))
            row = found.mappings().first()
        if row is None:
            raise NotFoundError("this certificate is not bound")
        return rows.certificate_record(row)

    def list_certificates(self, principal_id: str) -> list[CertificateBinding]:
        c = self._t.certificates
        with self._transaction() as conn:
            self._require_principal(conn, principal_id)
            found = conn.execute(sa.select(c).where(c.c.principal_id == principal_id))
            records = [rows.certificate_record(r) for r in found.mappings()]
        return sorted(records, key=lambda r: r.fingerprint)


def _check_type(value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise InvalidInputError(f"expected a {kind.__name__}")


def _check_aware(value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError("times must be timezone-aware")
