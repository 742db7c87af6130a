"""Ports of the audit trail: where records and checkpoints are kept.

Adapters: ``adapters.storage.audit_sql.SqlAuditStore`` (SQLite, PostgreSQL) and
``adapters.storage.checkpoint_dir.DirectoryCheckpointSink``; in-memory fakes in
``strongroom.testing.fake_audit``; one contract suite per port in
``strongroom.testing.contracts.audit`` runs against all of them.

Invariants every ``AuditStore`` keeps (the writer's guarantees rest on them):

* ``append_batch`` is atomic and durable: when it returns, every record of the batch is on
  stable storage; when it raises, none is. Its records must have consecutive ``seq`` values
  starting at the store's current ``size()``; a batch that starts anywhere else (another writer
  appended first, or a duplicate) raises ``ConflictError`` and writes nothing. So the stored log
  never has a gap or a repeat made by a writer, whatever the number of writers.
* Appends are serialised by one write lock per log (SQLite's write transaction, a PostgreSQL
  advisory lock), and ``append_rebased`` holds it while the writer catches up and numbers its
  batch, so a writer that lost a race always wins the next attempt: no livelock between the
  worker processes of one server.
* The store keeps the canonical bytes exactly; the other columns (time, action, principal,
  outcome, leaf hash) are query indexes, untrusted by verification.
* A checkpoint is stored once per size: saving the same text again is a no-op, saving a
  different text for a size already stored is a fork and raises ``IntegrityError``.
* An unreachable or failing backend raises ``StorageError``; nothing else is swallowed.

A ``CheckpointSink`` is the *second*, separately configured place for checkpoints (another host,
an object store with object lock, a witness): an insider who can rewrite the primary store should
not be able to rewrite it too. It keeps the same one-text-per-size rule.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from strongroom.core.audit.record import AuditRecord

MAX_READ_LIMIT = 10_000
"""Upper bound on one ``read``/``query`` page, so that no call loads an unbounded log."""
_SIZE_LINE = re.compile(r"0|[1-9][0-9]{0,15}")


class StoredRecord(NamedTuple):
    """One stored row: ``seq`` (the row's key, used for paging) and the canonical bytes.

    Only ``canonical`` is evidence; ``seq`` is where the store keeps it, and verification checks
    that the two agree.
    """

    seq: int
    canonical: bytes


@dataclass(frozen=True, slots=True)
class TreeState:
    """A persisted compact range (``TreeBuilder.size``/``nodes``), saved beside a checkpoint.

    Untrusted: the writer restores it only if its root equals that checkpoint's verified root.
    """

    size: int
    nodes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of the auditor's query: all given ones must match (AND).

    ``since`` is inclusive and ``until`` exclusive (aware datetimes); ``after_seq`` pages through
    results (records with a larger ``seq`` only).
    """

    action: str | None = None
    principal: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = -1
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_READ_LIMIT:
            raise ValueError(f"limit must be in [1, {MAX_READ_LIMIT}]")
        for moment in (self.since, self.until):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("since and until must be aware datetimes")

    def matches(self, record: AuditRecord) -> bool:
        """The same filter on a parsed record: the stores' index columns are not trusted."""
        return (
            (self.action is None or record.action == self.action)
            and (self.principal is None or record.principal == self.principal)
            and (self.since is None or record.time >= self.since)
            and (self.until is None or record.time < self.until)
            and record.seq > self.after_seq
        )


def check_batch(records: Sequence[AuditRecord]) -> None:
    """``ValueError`` unless ``records`` have consecutive ``seq`` values (a writer bug)."""
    for previous, record in itertools.pairwise(records):
        if record.seq != previous.seq + 1:
            raise ValueError("a batch holds consecutive sequence numbers")


def checkpoint_size(text: str) -> int:
    """The tree size a checkpoint text states (its second line), read *without* verifying it.

    Sinks use it only to name and order what they keep; ``ValueError`` if there is no such line.
    """
    lines = text.split("\n", 2)
    if len(lines) < 3 or not _SIZE_LINE.fullmatch(lines[1]):  # noqa: PLR2004 - origin, size, rest
        raise ValueError("not a checkpoint: no tree size on its second line")
    return int(lines[1])


Rebase = Callable[[list[StoredRecord]], Sequence[AuditRecord]]
"""Builds a batch after the rows other writers appended (see ``AuditStore.append_rebased``)."""


class AuditStore(Protocol):
    def size(self) -> int:
        """The next sequence number: 1 + the highest stored ``seq`` (0 for an empty log)."""
        ...

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        """Durably store ``records`` (consecutive, starting at ``size()``) all or none.

        ``ConflictError`` if the first ``seq`` is not ``size()``, ``ValueError`` if the batch is
        not consecutive, ``StorageError`` if the backend fails. An empty batch does nothing.
        """
        ...

    def append_rebased(self, known: int, build: Rebase) -> None:
        """Append a batch built on top of whatever other writers appended, without racing them.

        In one write transaction that holds the log's write lock (so no other append can
        interleave), pass ``build`` the stored rows with ``seq >= known``, then store the batch
        it returns, which must start right after them. What ``build`` raises rolls back and
        propagates. The writer's fallback after a ``ConflictError``: it always makes progress.
        """
        ...

    def read(self, start_seq: int, limit: int) -> list[StoredRecord]:
        """At most ``limit`` stored rows with ``seq >= start_seq``, in ``seq`` order."""
        ...

    def query(self, query: AuditQuery) -> list[StoredRecord]:
        """Rows whose index columns match ``query``, in ``seq`` order, at most ``query.limit``."""
        ...

    def save_checkpoint(self, size: int, text: str, nodes: Sequence[bytes] | None = None) -> None:
        """Store a signed checkpoint of size ``size`` (and, given ``nodes``, the tree state at
        that size, in the same transaction). ``IntegrityError`` if another text has that size."""
        ...

    def last_checkpoint(self) -> str | None:
        """The stored checkpoint of the largest size, or ``None``."""
        ...

    def checkpoints(self) -> list[str]:
        """Every stored checkpoint, smallest size first."""
        ...

    def load_tree_state(self) -> TreeState | None:
        """The saved tree state of the largest size, or ``None``."""
        ...


class CheckpointSink(Protocol):
    def publish(self, text: str) -> None:
        """Durably keep a signed checkpoint. Idempotent for the same text; ``IntegrityError`` if
        a different checkpoint of the same size is already kept (a fork); ``StorageError`` if the
        sink cannot be written."""
        ...

    def checkpoints(self) -> list[str]:
        """Every kept checkpoint, smallest size first."""
        ...

    def latest(self) -> str | None:
        """The kept checkpoint of the largest size, or ``None``."""
        ...
