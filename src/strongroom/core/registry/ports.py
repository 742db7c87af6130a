"""Ports of the registry: where metadata and encrypted blobs are kept.

Adapters: ``adapters.storage.sql`` (SQLite, PostgreSQL) and ``adapters.storage.local_fs``;
in-memory fakes in ``strongroom.testing.fake_storage``. One contract suite per port
(``strongroom.testing.contracts``) runs against every adapter.

Invariants:

* ``MetadataStore.add_version`` is atomic: the version and all its artifact rows appear together
  or not at all; a duplicate ``(model, version)`` raises ``ConflictError``.
* ``MetadataStore.change_stage`` is atomic and keeps at most one ``production`` version per model
  (enforced by the store itself, e.g. a partial unique index, not only by the caller).
* ``BlobStore.put`` is atomic: a reader sees the old blob or the new one, never a partial one,
  and a crash mid-write leaves at most an orphan temporary that ``gc`` removes.
* Blob ids are opaque lower-case hex strings of 32 characters; stores refuse anything else, so
  a blob id can never name a path outside the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO, Protocol

from strongroom.core.registry.model import ArtifactRecord, Stage, StageEvent, VersionRecord

BLOB_ID_HEX_LENGTH = 32


class MetadataStore(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema to the latest version (idempotent)."""
        ...

    def next_version(self, model: str) -> int:
        """1 + the highest version ever recorded for ``model`` (1 for a new model)."""
        ...

    def add_version(self, record: VersionRecord) -> None:
        """Insert a version with its artifacts. ``ConflictError`` if it exists."""
        ...

    def get_version(self, model: str, version: int) -> VersionRecord:
        """``NotFoundError`` if absent."""
        ...

    def list_models(self) -> list[str]: ...

    def list_versions(self, model: str) -> list[VersionRecord]:
        """Versions of ``model`` in ascending order; ``NotFoundError`` for an unknown model."""
        ...

    def production_version(self, model: str) -> int | None: ...

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
        """Atomically move ``version`` from ``expected`` to ``target`` and record ``events``.

        When ``replace_production`` is given, that version must currently be in production and
        is archived in the same transaction. ``ConflictError`` if the current stages differ from
        what the caller expected (a concurrent change won).
        """
        ...

    def stage_history(self, model: str) -> list[StageEvent]:
        """Every stage event of ``model``, oldest first."""
        ...

    def iter_artifacts(self) -> Iterator[tuple[str, int, ArtifactRecord]]:
        """Every stored artifact as ``(model, version, artifact)``."""
        ...

    def set_artifact_key_version(self, blob_id: str, key_version: int) -> None: ...


class BlobStore(Protocol):
    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        """Atomically store the concatenation of ``chunks``; return the bytes written.

        Replaces an existing blob with the same id atomically (used by key rotation).
        """
        ...

    def open(self, blob_id: str) -> AbstractContextManager[BinaryIO]:
        """Open a stored blob for reading. ``NotFoundError`` if absent."""
        ...

    def exists(self, blob_id: str) -> bool: ...

    def delete(self, blob_id: str) -> None:
        """Remove a blob; no error if it is already gone."""
        ...

    def list_ids(self) -> list[str]: ...

    def modified_at(self, blob_id: str) -> datetime:
        """When the blob was last written (aware UTC). ``NotFoundError`` if absent."""
        ...

    def count_temporaries(self) -> int:
        """Temporaries of writes in flight or interrupted (0 for stores with atomic puts)."""
        ...

    def remove_stale_temporaries(self, older_than: datetime | None = None) -> int:
        """Remove temporaries last written before ``older_than`` (all when None); return how
        many."""
        ...
