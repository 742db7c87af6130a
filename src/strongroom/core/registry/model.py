"""Model versions and their lifecycle.

Stages move ``none -> staging -> production -> archived``. At most one version of a model is in
``production`` at a time: promoting a version to production archives the one it replaces, in the
same transaction. A rollback re-promotes the version that was in production before the current
one. Every change carries an actor and a non-empty reason, and is kept as a ``StageEvent``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from strongroom.errors import InvalidInputError, InvalidTransitionError

MODEL_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
"""Lower-case DNS-label-like names: safe in URLs, file names and metric labels."""

MAX_REASON_LENGTH = 500


class Stage(StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


_ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.NONE: frozenset({Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.ARCHIVED}),
    # production leaves only by being replaced (-> archived) or by an explicit archive.
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    # an archived version can come back only through rollback or an explicit re-stage.
    Stage.ARCHIVED: frozenset({Stage.STAGING, Stage.PRODUCTION}),
}


def check_model_name(name: str) -> str:
    if not MODEL_NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"invalid model name {name!r}",
            hint="use 1-64 characters: lower-case letters, digits, '.', '_' or '-',"
            " starting and ending with a letter or digit",
        )
    return name


def check_reason(reason: str) -> str:
    cleaned = reason.strip()
    if not cleaned:
        raise InvalidInputError("a reason is required for stage changes")
    if len(cleaned) > MAX_REASON_LENGTH or any(ord(c) < 0x20 for c in cleaned):  # noqa: PLR2004
        raise InvalidInputError(
            f"reason must be at most {MAX_REASON_LENGTH} printable characters on one line"
        )
    return cleaned


def check_transition(current: Stage, target: Stage) -> None:
    if target == current:
        raise InvalidTransitionError(f"version is already in stage '{current}'")
    if target not in _ALLOWED[current]:
        raise InvalidTransitionError(f"cannot move a version from '{current}' to '{target}'")


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One stored file of a version: where its envelope lives and which KEK version wraps it."""

    path: str
    blob_id: str
    size: int
    sha256: str
    key_version: int


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A model version as the metadata store keeps it.

    ``manifest_json`` is the canonical manifest text; it is the *only* trusted source of the
    version's format, files, schema, card and signer. The other columns are indexes and may be
    tampered with by someone with database access: ``open_verified`` never trusts them.
    """

    model: str
    version: int
    stage: Stage
    manifest_json: str
    manifest_digest: str
    signature_bundle: str | None
    created_at: datetime
    created_by: str
    artifacts: tuple[ArtifactRecord, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class StageEvent:
    model: str
    version: int
    from_stage: Stage
    to_stage: Stage
    reason: str
    actor: str
    at: datetime
    kind: str
    """``promote``, ``rollback``, ``archive`` or ``replaced`` (archived by a newer promotion)."""
