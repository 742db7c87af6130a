"""In-memory fakes of the audit ports (``core.audit.ports``), for writer and service tests.

They keep the semantics of the real adapters, checked by the same contract suites
(``strongroom.testing.contracts.audit``): all-or-nothing batches that must start at ``size()``
(``ConflictError`` otherwise), one checkpoint text per size (``IntegrityError`` for a fork),
``StorageError`` when unavailable. Every public method holds one lock, so they are safe to share
between threads.

Test switches, which real stores do not have:

* ``broken = True`` makes every call raise ``StorageError``, as a database that went away does;
  ``broken = False`` repairs it.
* ``transactions`` counts committed batches (to check that the writer groups records);
  ``rows`` is the stored ``seq -> canonical`` mapping, which tests may edit to play an attacker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from strongroom.core.audit.merkle import HASH_BYTES
from strongroom.core.audit.ports import (
    MAX_READ_LIMIT,
    AuditQuery,
    Rebase,
    StoredRecord,
    TreeState,
    check_batch,
    checkpoint_size,
)
from strongroom.core.audit.record import AuditRecord
from strongroom.errors import ConflictError, IntegrityError, StorageError

_NEVER = datetime.min.replace(tzinfo=UTC)
"""Index time of a row a test added by hand (``rows``): matches no ``since`` filter."""


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_READ_LIMIT:
        raise ValueError(f"limit must be in [1, {MAX_READ_LIMIT}]")


class InMemoryAuditStore:
    """``AuditStore`` in dictionaries; see the module docstring for the test switches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[int, bytes] = {}
        self._index: dict[int, tuple[str, str | None, datetime]] = {}
        self._checkpoints: dict[int, str] = {}
        self._states: dict[int, tuple[bytes, ...]] = {}
        self.broken = False
        self.transactions = 0

    def _check_available(self) -> None:
        if self.broken:
            raise StorageError("the audit store is unavailable (test switch)")

    def size(self) -> int:
        with self._lock:
            self._check_available()
            return max(self.rows, default=-1) + 1

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        check_batch(records)
        with self._lock:
            self._check_available()
            self._append(records)

    def append_rebased(self, known: int, build: Rebase) -> None:
        with self._lock:
            self._check_available()
            missed = [
                StoredRecord(seq, self.rows[seq]) for seq in sorted(self.rows) if seq >= known
            ]
            records = build(missed)
            check_batch(records)
            self._append(records)

    def _append(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        if records[0].seq != max(self.rows, default=-1) + 1:
            raise ConflictError("the audit log moved on: another writer appended first")
        for record in records:
            self.rows[record.seq] = record.canonical
            self._index[record.seq] = (record.action, record.principal, record.time)
        self.transactions += 1

    def read(self, start_seq: int, limit: int) -> list[StoredRecord]:
        _check_limit(limit)
        with self._lock:
            self._check_available()
            found = sorted(seq for seq in self.rows if seq >= start_seq)[:limit]
            return [StoredRecord(seq, self.rows[seq]) for seq in found]

    def query(self, query: AuditQuery) -> list[StoredRecord]:
        with self._lock:
            self._check_available()
            found: list[StoredRecord] = []
            for seq in sorted(self.rows):
                if len(found) == query.limit:
                    break
                if seq > query.after_seq and self._index_matches(seq, query):
                    found.append(StoredRecord(seq, self.rows[seq]))
            return found

    def _index_matches(self, seq: int, query: AuditQuery) -> bool:
        action, principal, time = self._index.get(seq, ("", None, _NEVER))
        return (
            (query.action is None or action == query.action)
            and (query.principal is None or principal == query.principal)
            and (query.since is None or time >= query.since)
            and (query.until is None or time < query.until)
        )

    def save_checkpoint(self, size: int, text: str, nodes: Sequence[bytes] | None = None) -> None:
        if nodes is not None and any(len(node) != HASH_BYTES for node in nodes):
            raise ValueError("tree nodes are 32-byte hashes")
        with self._lock:
            self._check_available()
            known = self._checkpoints.get(size)
            if known is not None and known != text:
                raise IntegrityError("a different checkpoint of this size is stored: a fork")
            if nodes is not None:
                known_nodes = self._states.get(size)
                if known_nodes is not None and known_nodes != tuple(nodes):
                    raise IntegrityError("a different tree state of this size is stored")
                self._states[size] = tuple(nodes)
            self._checkpoints[size] = text

    def last_checkpoint(self) -> str | None:
        with self._lock:
            self._check_available()
            return self._checkpoints[max(self._checkpoints)] if self._checkpoints else None

    def checkpoints(self) -> list[str]:
        with self._lock:
            self._check_available()
            return [self._checkpoints[size] for size in sorted(self._checkpoints)]

    def load_tree_state(self) -> TreeState | None:
        with self._lock:
            self._check_available()
            if not self._states:
                return None
            size = max(self._states)
            return TreeState(size, self._states[size])


class InMemoryCheckpointSink:
    """``CheckpointSink`` in a dictionary; ``broken`` as for the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kept: dict[int, str] = {}
        self.broken = False

    def _check_available(self) -> None:
        if self.broken:
            raise StorageError("the checkpoint sink is unavailable (test switch)")

    def publish(self, text: str) -> None:
        size = checkpoint_size(text)
        with self._lock:
            self._check_available()
            known = self.kept.get(size)
            if known is not None and known != text:
                raise IntegrityError("a different checkpoint of this size is kept: a fork")
            self.kept[size] = text

    def checkpoints(self) -> list[str]:
        with self._lock:
            self._check_available()
            return [self.kept[size] for size in sorted(self.kept)]

    def latest(self) -> str | None:
        with self._lock:
            self._check_available()
            return self.kept[max(self.kept)] if self.kept else None
