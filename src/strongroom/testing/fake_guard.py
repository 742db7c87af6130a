"""In-memory fake of the guard-override store port, for service and HTTP tests.

``FakeGuardOverrideStore`` keeps the semantics of ``SqlGuardOverrideStore`` (checked by the same
contract suite, ``strongroom.testing.contracts.guard``): ``put_override`` inserts or replaces
the override of (kind, subject) whole; ``delete_override`` raises ``NotFoundError`` when there is
none; malformed input is an ``InvalidInputError``; ``list_overrides`` is ordered by (kind,
subject) and gives times back as aware UTC. One lock guards every method, so it is safe to
share between threads.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC
from typing import Final

from strongroom.core.policy.overrides import GuardOverride, SubjectKind, check_subject
from strongroom.errors import InvalidInputError, NotFoundError

UPDATED_BY_LENGTH: Final = 136
"""Longest ``updated_by`` the SQL store keeps (its column width), enforced here too."""


class FakeGuardOverrideStore:
    """``GuardOverrideStore`` in a dictionary keyed by (kind, subject)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[tuple[SubjectKind, str], GuardOverride] = {}

    def list_overrides(self) -> list[GuardOverride]:
        with self._lock:
            found = list(self._overrides.values())
        return sorted(found, key=lambda r: (r.kind.value, r.subject))

    def put_override(self, override: GuardOverride) -> None:
        if not isinstance(override, GuardOverride):
            raise InvalidInputError("expected a GuardOverride")
        author = override.updated_by
        if not isinstance(author, str) or not 0 < len(author) <= UPDATED_BY_LENGTH:
            raise InvalidInputError(f"updated_by is 1 to {UPDATED_BY_LENGTH} characters")
        # Stored as the database would give it back: the same instant, in UTC.
        stored = dataclasses.replace(override, updated_at=override.updated_at.astimezone(UTC))
        with self._lock:
            self._overrides[(override.kind, override.subject)] = stored

    def delete_override(self, kind: SubjectKind, subject: str) -> None:
        try:
            kind = SubjectKind(kind)
        except ValueError:
            raise InvalidInputError("kind must be 'principal' or 'model'") from None
        check_subject(kind, subject)
        with self._lock:
            if self._overrides.pop((kind, subject), None) is None:
                raise NotFoundError(f"no guard override for {kind.value} {subject!r}")
