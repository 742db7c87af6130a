"""How identity records map onto rows of the identity tables (``schema.build_identity_tables``).

Roles, grants and networks are kept as compact JSON text (sorted roles, grants in order,
networks as CIDR strings) and password histories as a JSON list. Reading a row builds the
record again, which validates it: a row that was edited into something malformed (an unknown
role, a bad CIDR, a wrong-length digest) is an ``IntegrityError``, never a half-valid record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from ipaddress import ip_network
from typing import Any, TypeVar

import sqlalchemy as sa

from strongroom.core.identity.api_keys import StoredApiKey
from strongroom.core.identity.passwords import LockoutState
from strongroom.core.identity.ports import (
    CertificateBinding,
    PasswordRecord,
    PrincipalRecord,
    SessionRecord,
    TotpRecord,
)
from strongroom.core.identity.principal import Grant, PrincipalKind, Role
from strongroom.errors import IntegrityError, InvalidInputError

_R = TypeVar("_R")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _decoded(build: Callable[[], _R]) -> _R:
    """Run ``build`` over stored values; anything malformed is an ``IntegrityError``."""
    try:
        return build()
    except (InvalidInputError, ValueError, TypeError, KeyError) as exc:
        raise IntegrityError("a stored identity record is malformed") from exc


def principal_row(record: PrincipalRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind.value,
        "roles": _dumps(sorted(role.value for role in record.roles)),
        "grants": _dumps([[g.role.value, g.pattern] for g in record.grants]),
        "networks": _dumps([str(network) for network in record.networks]),
        "disabled": record.disabled,
        "created_at": record.created_at,
        "description": record.description,
    }


def _json_list(text: str) -> list[Any]:
    value = json.loads(text)
    if not isinstance(value, list):
        raise TypeError("a list was expected")
    return value


def principal_record(row: sa.RowMapping) -> PrincipalRecord:
    def build() -> PrincipalRecord:
        grants = []
        for item in _json_list(row["grants"]):
            role, pattern = item
            grants.append(Grant(Role(role), pattern))
        return PrincipalRecord(
            id=row["id"],
            kind=PrincipalKind(row["kind"]),
            roles=frozenset(Role(r) for r in _json_list(row["roles"])),
            grants=tuple(grants),
            networks=tuple(ip_network(n) for n in _json_list(row["networks"])),
            disabled=bool(row["disabled"]),
            created_at=row["created_at"],
            description=row["description"],
        )

    return _decoded(build)


def api_key_row(record: StoredApiKey) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "principal_id": record.principal_id,
        "digest": record.digest,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
    }


def api_key_record(row: sa.RowMapping) -> StoredApiKey:
    return _decoded(
        lambda: StoredApiKey(
            key_id=row["key_id"],
            digest=bytes(row["digest"]),
            principal_id=row["principal_id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
        )
    )


def password_row(record: PasswordRecord) -> dict[str, Any]:
    return {
        "principal_id": record.principal_id,
        "hash": record.hash,
        "history": _dumps(list(record.history)),
        "changed_at": record.changed_at,
    }


def password_record(row: sa.RowMapping) -> PasswordRecord:
    return _decoded(
        lambda: PasswordRecord(
            principal_id=row["principal_id"],
            hash=row["hash"],
            history=tuple(_json_list(row["history"])),
            changed_at=row["changed_at"],
        )
    )


def totp_record(row: sa.RowMapping) -> TotpRecord:
    last_step = row["last_step"]
    return _decoded(
        lambda: TotpRecord(
            principal_id=row["principal_id"],
            sealed=bytes(row["sealed"]),
            last_step=None if last_step is None else int(last_step),
            confirmed=bool(row["confirmed"]),
        )
    )


def lockout_state(row: sa.RowMapping | None) -> LockoutState:
    if row is None:
        return LockoutState()
    return _decoded(
        lambda: LockoutState(failures=int(row["failures"]), locked_until=row["locked_until"])
    )


def session_row(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "principal_id": record.principal_id,
        "digest": record.digest,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "mfa_at": record.mfa_at,
        "revoked_at": record.revoked_at,
    }


def session_record(row: sa.RowMapping) -> SessionRecord:
    return _decoded(
        lambda: SessionRecord(
            id=row["id"],
            principal_id=row["principal_id"],
            digest=bytes(row["digest"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            mfa_at=row["mfa_at"],
            revoked_at=row["revoked_at"],
        )
    )


def certificate_record(row: sa.RowMapping) -> CertificateBinding:
    return _decoded(
        lambda: CertificateBinding(
            fingerprint=row["fingerprint"],
            principal_id=row["principal_id"],
            created_at=row["created_at"],
        )
    )


def earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two optional times, None meaning "never" (so it loses to any time)."""
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)
