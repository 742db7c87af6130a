"""Reading the stored audit log: rebuilding the writer's tree, and the auditor's service.

``resume``/``catch_up`` turn stored rows back into a verified ``TreeBuilder`` for the writer
(``services.audit``): at start-up, and after another writer appended to the same log. They trust
nothing they read: every row must sit at its own ``seq``, the tree must reach the root of the
newest stored and the newest external checkpoint (verified) at their sizes, and rows no
checkpoint vouches for must parse as records; otherwise ``IntegrityError``.

``AuditService`` is the auditor's view: ``verify`` (the whole-log check, streamed in pages),
``tail``, ``export`` and ``query``. Every read first writes an ``audit.read`` record (who, which
operation, which filter) through the writer, and fails closed if it cannot. ``verify`` shows no
record content and must work exactly when the log cannot be written (tampered, store read-only),
so it is not recorded. Who may read is the caller's ``authorize()`` decision (auditors only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from strongroom.core.audit.checkpoint import Checkpoint, open_checkpoint
from strongroom.core.audit.merkle import TreeBuilder, hash_leaf
from strongroom.core.audit.ports import (
    MAX_READ_LIMIT,
    AuditQuery,
    AuditStore,
    CheckpointSink,
    StoredRecord,
    TreeState,
)
from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome, bounded_text, format_time
from strongroom.core.audit.verify import AuditVerification, verify_log
from strongroom.core.crypto.notes import NoteVerifier
from strongroom.core.types import Clock
from strongroom.errors import IntegrityError, SecurityError

READ_PAGE: Final = 1000
LOG_RESOURCE: Final = "audit:log"
"""The ``resource`` of records about the log itself (reads, outages)."""


# --- rebuilding the tree from the store -----------------------------------------------------------


def open_trusted(text: str, verifiers: Sequence[NoteVerifier], origin: str) -> Checkpoint:
    """A stored checkpoint, verified and of this log; ``IntegrityError`` otherwise."""
    try:
        checkpoint = open_checkpoint(text, verifiers)
    except SecurityError as exc:
        raise IntegrityError("an audit checkpoint does not verify") from exc
    if checkpoint.origin != origin:
        raise IntegrityError("an audit checkpoint names another log")
    return checkpoint


def catch_up(
    store: AuditStore,
    tree: TreeBuilder,
    end: int,
    heads: Sequence[Checkpoint] = (),
    *,
    parse_from: int = 0,
) -> None:
    """Append to ``tree`` the leaf hashes of the stored records ``[tree.size, end)``.

    Each row must sit at its own ``seq``; from ``parse_from`` on, each must also parse as a
    record of that ``seq`` (earlier ones are vouched for by a ``head`` instead). ``heads`` are
    verified checkpoints: the tree must have each one's root when it reaches its size, and none
    may lie beyond ``end``. Any failure is an ``IntegrityError``.
    """
    due = sorted((h for h in heads if h.size >= tree.size), key=lambda h: h.size, reverse=True)

    def check_heads() -> None:
        while due and due[-1].size == tree.size:
            if tree.root() != due.pop().root:
                raise IntegrityError("the audit log does not match its checkpoint")

    check_heads()
    while tree.size < end:
        rows = store.read(tree.size, min(READ_PAGE, end - tree.size))
        if not rows:
            raise IntegrityError("the audit log has a gap")
        for row in rows:
            if row.seq != tree.size:
                raise IntegrityError("the audit log has a gap")
            if row.seq >= parse_from and AuditRecord.from_canonical(row.canonical).seq != row.seq:
                raise IntegrityError("an audit record is out of place")
            tree.append(hash_leaf(row.canonical))
            check_heads()
    if due:
        raise IntegrityError("the audit log is shorter than one of its checkpoints")


def catch_up_rows(tree: TreeBuilder, rows: Sequence[StoredRecord]) -> None:
    """Append rows another writer stored right after ``tree``, each parsed and in place."""
    for row in rows:
        if row.seq != tree.size or AuditRecord.from_canonical(row.canonical).seq != row.seq:
            raise IntegrityError("an audit record is out of place")
        tree.append(hash_leaf(row.canonical))


def _restore(state: TreeState | None, head: Checkpoint | None) -> TreeBuilder:
    if state is None or head is None or state.size != head.size:
        return TreeBuilder()
    try:
        tree = TreeBuilder.restore(state.size, state.nodes)
    except ValueError:
        return TreeBuilder()
    return tree if tree.root() == head.root else TreeBuilder()


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a writer starts from: the verified tree and the newest checkpoints it knows."""

    tree: TreeBuilder
    stored: Checkpoint | None
    stored_text: str | None
    external: Checkpoint | None


def resume(
    store: AuditStore,
    verifiers: Sequence[NoteVerifier],
    origin: str,
    *,
    external_text: str | None = None,
    trust_saved_tree: bool = False,
) -> Resumed:
    """Rebuild the tree of the stored log and check it against the newest stored checkpoint and
    the newest external one (``external_text``), both verified.

    By default every stored record is re-hashed (about 6 us each on SQLite), so any change to
    the log fails start-up; only records after the newest checkpoint are also re-parsed. With
    ``trust_saved_tree`` the tree state saved with the newest stored checkpoint is used when its
    root matches: start-up no longer reads the whole log, and a change to records before that
    checkpoint is left for ``audit verify`` to find.
    """
    text = store.last_checkpoint()
    stored = None if text is None else open_trusted(text, verifiers, origin)
    external = None if external_text is None else open_trusted(external_text, verifiers, origin)
    heads = [h for h in (stored, external) if h is not None]
    tree = _restore(store.load_tree_state(), stored) if trust_saved_tree else TreeBuilder()
    parse_from = max((h.size for h in heads), default=0)
    end = store.size()
    if end < max(tree.size, parse_from):  # a restored tree would not notice a truncation
        raise IntegrityError("the audit log is shorter than one of its checkpoints")
    catch_up(store, tree, end, heads, parse_from=parse_from)
    return Resumed(tree, stored, text, external)


def catch_up_after_conflict(store: AuditStore, tree: TreeBuilder) -> None:
    """Read what another writer appended; a log shorter than ``tree`` was truncated."""
    end = store.size()
    if end < tree.size:
        raise IntegrityError("the audit log is shorter than what this writer wrote")
    catch_up(store, tree, end, parse_from=tree.size)


def check_external(
    store: AuditStore,
    tree: TreeBuilder,
    external_text: str | None,
    verifiers: Sequence[NoteVerifier],
    origin: str,
) -> None:
    """Check the log behind ``tree`` against the newest external checkpoint, read late.

    For a writer that could not read the sink at start-up. It first reads what other writers
    appended (into ``tree``); the checkpoint must verify, lie within the log and have the root
    of its first ``size`` records (re-read from the store unless that is ``tree`` itself).
    """
    if external_text is None:
        return
    head = open_trusted(external_text, verifiers, origin)
    catch_up_after_conflict(store, tree)
    if head.size > tree.size:
        raise IntegrityError("the audit log is shorter than its external checkpoint")
    if head.size == tree.size:
        if tree.root() != head.root:
            raise IntegrityError("the audit log does not match its external checkpoint")
        return
    catch_up(store, TreeBuilder(), head.size, [head], parse_from=head.size)


# --- the auditor's service ------------------------------------------------------------------------


Recorder = Callable[[AuditEvent], object]
"""How a read gets recorded: ``AuditWriter.record`` (or anything that makes a record durable),
or, for a read made inside a request that gets its own audit record (the HTTP API), a recorder
that puts the read's details into that record instead of writing a second one."""


@dataclass(frozen=True, slots=True)
class AuditReader:
    """Who reads the log: what the ``audit.read`` record of the read says."""

    principal: str | None
    request_id: str
    client_address: str | None = None


def parse_stored(row: StoredRecord) -> AuditRecord:
    """A stored row as a record; ``IntegrityError`` (naming the row) if it is not one."""
    try:
        record = AuditRecord.from_canonical(row.canonical)
    except IntegrityError:
        record = None
    if record is None or record.seq != row.seq:
        raise IntegrityError(
            f"the audit record stored at seq {row.seq} does not verify"
            " (run: strongroom audit verify)"
        )
    return record


class AuditService:
    """The auditor's view of the log. Every read is recorded first, and fails closed."""

    def __init__(
        self,
        store: AuditStore,
        sink: CheckpointSink,
        verifiers: Sequence[NoteVerifier],
        origin: str,
        *,
        recorder: Recorder,
        clock: Clock,
        page_size: int = READ_PAGE,
    ) -> None:
        if not verifiers:
            raise ValueError("verification needs at least one trusted checkpoint key")
        if not 1 <= page_size <= MAX_READ_LIMIT:
            raise ValueError(f"page_size must be in [1, {MAX_READ_LIMIT}]")
        self._store, self._sink = store, sink
        self._verifiers, self._origin = tuple(verifiers), origin
        self._recorder, self._clock, self._page = recorder, clock, page_size

    def with_recorder(self, recorder: Recorder) -> AuditService:
        """The same view of the same log, recording its reads through ``recorder``.

        For a caller whose every request already writes exactly one audit record (the HTTP
        server's guard): its recorder adds the read's details to that record, so a read is
        still recorded once, and still before any record is returned.
        """
        return AuditService(
            self._store,
            self._sink,
            self._verifiers,
            self._origin,
            recorder=recorder,
            clock=self._clock,
            page_size=self._page,
        )

    def verify(self) -> AuditVerification:
        """``verify_log`` over the whole stored log and both checkpoint lists (see ``verify``)."""
        checkpoints = self._store.checkpoints()
        external = self._sink.checkpoints()
        return verify_log(
            self._canonical(0, None),
            checkpoints,
            external,
            self._verifiers,
            origin=self._origin,
        )

    def _rows(self, start: int, end: int | None) -> Iterator[StoredRecord]:
        """Stored rows with ``start <= seq < end``, in short pages (keyset on ``seq``)."""
        while end is None or start < end:
            limit = self._page if end is None else min(self._page, end - start)
            rows = self._store.read(start, limit)
            for row in rows:
                if end is not None and row.seq >= end:
                    return
                yield row
            if len(rows) < limit:
                return
            start = rows[-1].seq + 1

    def _canonical(self, start: int, end: int | None) -> Iterator[bytes]:
        return (row.canonical for row in self._rows(start, end))

    def _record_read(self, reader: AuditReader, details: dict[str, str | int | None]) -> None:
        self._recorder(
            AuditEvent(
                time=self._clock(),
                principal=reader.principal,
                action="audit.read",
                resource=LOG_RESOURCE,
                outcome=Outcome.ALLOWED,
                request_id=reader.request_id,
                client_address=reader.client_address,
                details=details,
            )
        )

    def tail(self, n: int, reader: AuditReader) -> list[dict[str, Any]]:
        """The last ``n`` records (this read's own ``audit.read`` record included), oldest first."""
        if not 1 <= n <= MAX_READ_LIMIT:
            raise ValueError(f"n must be in [1, {MAX_READ_LIMIT}]")
        self._record_read(reader, {"operation": "tail", "n": n})
        size = self._store.size()
        rows = self._store.read(max(0, size - n), n)
        return [parse_stored(row).to_json_dict() for row in rows]

    def export(
        self, reader: AuditReader, start: int = 0, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Records ``[start, end)`` (to the current end by default) as JSON objects, whose
        compact, sorted JSON is each record's canonical bytes. Recorded before it returns."""
        if start < 0 or (end is not None and end < start):
            raise ValueError("export needs 0 <= start <= end")
        self._record_read(reader, {"operation": "export", "start": start, "end": end})
        stop = self._store.size() if end is None else end
        return (parse_stored(row).to_json_dict() for row in self._rows(start, stop))

    def query(self, query: AuditQuery, reader: AuditReader) -> list[dict[str, Any]]:
        """Records matching ``query``. The store selects by its index columns; each record is
        then checked against the filter again, since those columns are not evidence."""
        self._record_read(reader, _query_details(query))
        records = (parse_stored(row) for row in self._store.query(query))
        return [record.to_json_dict() for record in records if query.matches(record)]


def _query_details(query: AuditQuery) -> dict[str, str | int | None]:
    def text(value: str | None) -> str | None:
        return None if value is None else bounded_text(value) or None

    return {
        "operation": "query",
        "action": text(query.action),
        "principal": text(query.principal),
        "since": None if query.since is None else format_time(query.since),
        "until": None if query.until is None else format_time(query.until),
        "after_seq": query.after_seq,
        "limit": query.limit,
    }
