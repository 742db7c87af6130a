"""In-memory fakes of the registry storage ports, for service tests.

They keep the same semantics as the real adapters, checked by the same contract suites
(``strongroom.testing.contracts.storage``): atomic writes, ``ConflictError`` on duplicates and on
a second production version, ``NotFoundError`` for unknown models, versions and blobs,
``InvalidInputError`` for malformed blob ids, naive times and foreign stage events, and aware
UTC datetimes out. Every public method holds one lock, so they are safe to share between
threads.

``InMemoryBlobStore.raw`` is the stored bytes by blob id, and ``tamper(blob_id, fn)`` replaces a
blob by ``fn(old_bytes)``: tests use them to simulate an attacker with storage access.
"""

from __future__ import annotations

import dataclasses
import io
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import BinaryIO

from strongroom.core.registry.model import (
    ArtifactRecord,
    Stage,
    StageEvent,
    VersionRecord,
    check_model_name,
)
from strongroom.core.registry.ports import BLOB_ID_HEX_LENGTH
from strongroom.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    StrongroomError,
)

_BLOB_ID_RE = re.compile(f"[0-9a-f]{{{BLOB_ID_HEX_LENGTH}}}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_blob_id(blob_id: str) -> str:
    if not isinstance(blob_id, str) or not _BLOB_ID_RE.fullmatch(blob_id):
        raise InvalidInputError("blob ids are 32 lower-case hexadecimal characters")
    return blob_id


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise InvalidInputError("times must be timezone-aware")
    return value.astimezone(UTC)


def _normalised(record: VersionRecord) -> VersionRecord:
    """Validate like the SQL store and keep what it would give back (UTC, artifacts by path)."""
    check_model_name(record.model)
    if record.version < 1:
        raise InvalidInputError("versions start at 1")
    for artifact in record.artifacts:
        _check_blob_id(artifact.blob_id)
        if artifact.size < 0:
            raise InvalidInputError("artifact sizes cannot be negative")
    return dataclasses.replace(
        record,
        created_at=_utc(record.created_at),
        artifacts=tuple(sorted(record.artifacts, key=lambda a: a.path)),
    )


class InMemoryMetadataStore:
    """``MetadataStore`` in dictionaries (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], VersionRecord] = {}
        self._events: list[StageEvent] = []

    def migrate(self) -> None:
        """Nothing to create; idempotent like the real thing."""

    def next_version(self, model: str) -> int:
        with self._lock:
            return 1 + max((v for m, v in self._versions if m == model), default=0)

    def add_version(self, record: VersionRecord) -> None:
        stored = _normalised(record)
        with self._lock:
            key = (stored.model, stored.version)
            blob_ids = [a.blob_id for a in stored.artifacts]
            paths = [a.path for a in stored.artifacts]
            taken = {a.blob_id for r in self._versions.values() for a in r.artifacts}
            if (
                key in self._versions
                or len(set(blob_ids)) != len(blob_ids)
                or len(set(paths)) != len(paths)
                or taken.intersection(blob_ids)
            ):
                raise ConflictError(
                    f"version {stored.version} of model '{stored.model}' already exists,"
                    " or one of its blob ids or paths is already stored"
                )
            candidate = {**self._versions, key: stored}
            self._check_one_production(candidate, stored.model)
            self._versions = candidate

    def get_version(self, model: str, version: int) -> VersionRecord:
        with self._lock:
            try:
                return self._versions[(model, version)]
            except KeyError:
                raise NotFoundError(f"model '{model}' has no version {version}") from None

    def list_models(self) -> list[str]:
        with self._lock:
            return sorted({m for m, _ in self._versions})

    def list_versions(self, model: str) -> list[VersionRecord]:
        with self._lock:
            self._require_model(model)
            return [r for (m, _), r in sorted(self._versions.items()) if m == model]

    def production_version(self, model: str) -> int | None:
        with self._lock:
            for (m, v), record in self._versions.items():
                if m == model and record.stage == Stage.PRODUCTION:
                    return v
            return None

    def change_stage(
        self,
        model: str,
        version: int,
        expected: Stage,
        target: Stage,
        events: Iterable[StageEvent],
        *,
        replace_production: int | None = None,
    ) -> None:
        recorded = tuple(events)
        changed = {version} if replace_production is None else {version, replace_production}
        for event in recorded:
            if event.model != model or event.version not in changed:
                raise InvalidInputError("stage events must concern the versions being changed")
        recorded = tuple(dataclasses.replace(e, at=_utc(e.at)) for e in recorded)
        with self._lock:
            candidate = dict(self._versions)
            if replace_production is not None:
                self._set_stage(candidate, model, replace_production, Stage.PRODUCTION)
                candidate[(model, replace_production)] = dataclasses.replace(
                    candidate[(model, replace_production)], stage=Stage.ARCHIVED
                )
            self._set_stage(candidate, model, version, expected)
            candidate[(model, version)] = dataclasses.replace(
                candidate[(model, version)], stage=target
            )
            self._check_one_production(candidate, model)
            self._versions = candidate
            self._events.extend(recorded)

    @staticmethod
    def _set_stage(
        versions: dict[tuple[str, int], VersionRecord], model: str, version: int, expected: Stage
    ) -> None:
        """Check, like the SQL compare-and-set, that ``version`` exists and is in ``expected``."""
        record = versions.get((model, version))
        if record is None:
            raise NotFoundError(f"model '{model}' has no version {version}")
        if record.stage != expected:
            raise ConflictError(
                f"version {version} of model '{model}' is in stage '{record.stage}',"
                f" not '{expected}'"
            )

    @staticmethod
    def _check_one_production(versions: dict[tuple[str, int], VersionRecord], model: str) -> None:
        in_production = [
            r for (m, _), r in versions.items() if m == model and r.stage == Stage.PRODUCTION
        ]
        if len(in_production) > 1:
            raise ConflictError(f"model '{model}' already has a version in production")

    def stage_history(self, model: str) -> list[StageEvent]:
        with self._lock:
            self._require_model(model)
            return [e for e in self._events if e.model == model]

    def iter_artifacts(self) -> Iterator[tuple[str, int, ArtifactRecord]]:
        """Every artifact in blob-id order, from a snapshot (callers may update as they go)."""
        with self._lock:
            snapshot = [
                (r.model, r.version, a) for r in self._versions.values() for a in r.artifacts
            ]
        yield from sorted(snapshot, key=lambda item: item[2].blob_id)

    def set_artifact_key_version(self, blob_id: str, key_version: int) -> None:
        _check_blob_id(blob_id)
        with self._lock:
            for key, record in self._versions.items():
                for index, artifact in enumerate(record.artifacts):
                    if artifact.blob_id == blob_id:
                        updated = list(record.artifacts)
                        updated[index] = dataclasses.replace(artifact, key_version=key_version)
                        self._versions[key] = dataclasses.replace(record, artifacts=tuple(updated))
                        return
            raise NotFoundError(f"no artifact with blob id {blob_id}")

    def _require_model(self, model: str) -> None:
        if not any(m == model for m, _ in self._versions):
            raise NotFoundError(f"no model named '{model}'")


class InMemoryBlobStore:
    """``BlobStore`` in a dictionary; ``raw`` and ``tamper`` are for tests (module docstring)."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.raw: dict[str, bytes] = {}
        self.modified: dict[str, datetime] = {}

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        _check_blob_id(blob_id)
        buffer = bytearray()
        try:
            for chunk in chunks:
                buffer += chunk
        except StrongroomError:
            raise
        except Exception as exc:
            raise StorageError("writing a blob failed; the stored blob is unchanged") from exc
        with self._lock:
            self.raw[blob_id] = bytes(buffer)
            self.modified[blob_id] = self._clock()
        return len(buffer)

    def open(self, blob_id: str) -> AbstractContextManager[BinaryIO]:
        _check_blob_id(blob_id)
        with self._lock:
            data = self.raw.get(blob_id)
        if data is None:
            raise NotFoundError(f"no blob {blob_id}")
        return io.BytesIO(data)

    def exists(self, blob_id: str) -> bool:
        _check_blob_id(blob_id)
        with self._lock:
            return blob_id in self.raw

    def delete(self, blob_id: str) -> None:
        _check_blob_id(blob_id)
        with self._lock:
            self.raw.pop(blob_id, None)
            self.modified.pop(blob_id, None)

    def list_ids(self) -> list[str]:
        with self._lock:
            return sorted(self.raw)

    def modified_at(self, blob_id: str) -> datetime:
        _check_blob_id(blob_id)
        with self._lock:
            if blob_id not in self.modified:
                raise NotFoundError(f"no blob {blob_id}")
            return self.modified[blob_id]

    def count_temporaries(self) -> int:
        """Writes are atomic in memory: there are never temporaries."""
        return 0

    def remove_stale_temporaries(self, older_than: datetime | None = None) -> int:
        """Writes are atomic in memory: there are never temporaries to remove."""
        del older_than
        return 0

    def tamper(self, blob_id: str, change: Callable[[bytes], bytes]) -> None:
        """Replace a stored blob by ``change(old_bytes)``, as an attacker with disk access would."""
        with self._lock:
            if blob_id not in self.raw:
                raise NotFoundError(f"no blob {blob_id}")
            self.raw[blob_id] = change(self.raw[blob_id])
