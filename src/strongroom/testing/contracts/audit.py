"""Contract suites of the audit ports (``core.audit.ports``).

Every ``AuditStore`` (SQLite, PostgreSQL, the in-memory fake, any future backend) and every
``CheckpointSink`` (a directory, the fake, a future object store or witness) must pass the same
tests. An adapter's test module subclasses the suite and provides the port as a fixture:

    class TestSqliteAuditStore(AuditStoreContract):
        @pytest.fixture
        def audit_store(self, tmp_path): ...  # a migrated, empty store; close it afterwards

    class TestDirectoryCheckpointSink(CheckpointSinkContract):
        @pytest.fixture
        def checkpoint_sink(self, tmp_path): ...  # an empty sink

Beyond the port docstrings, the suites pin what the writer relies on: canonical bytes come back
byte for byte; a batch that does not start at ``size()`` writes nothing; of two writers racing for
one sequence number exactly one wins; checkpoints are one text per size, listed by size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.core.audit.checkpoint import sign_checkpoint
from strongroom.core.audit.merkle import TreeBuilder
from strongroom.core.audit.ports import AuditQuery, AuditStore, CheckpointSink, StoredRecord
from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome
from strongroom.core.crypto.notes import NoteSigner
from strongroom.errors import ConflictError, IntegrityError

ORIGIN = "contract.test/audit"
BASE_TIME = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def make_event(index: int, **overrides: object) -> AuditEvent:
    """A valid event, different for each ``index`` (principals and actions rotate)."""
    fields: dict[str, object] = {
        "time": BASE_TIME + timedelta(seconds=index),
        "principal": f"user:p{index % 3}",
        "action": ("model.predict", "model.promote")[index % 2],
        "resource": f"model:fraud-{index}",
        "outcome": Outcome.ALLOWED,
        "request_id": f"req-{index}",
        "details": {"note": "Grüße ✓ \u2028", "n": index},
    }
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def make_records(start: int, count: int) -> list[AuditRecord]:
    return [make_event(seq).sequenced(seq) for seq in range(start, start + count)]


def checkpoint_text(size: int, signer: NoteSigner, salt: bytes = b"") -> str:
    """A real signed checkpoint; ``salt`` changes its root (to make a fork)."""
    tree = TreeBuilder()
    for index in range(size):
        tree.append(make_event(index).sequenced(index).leaf_hash())
    root = bytes(a ^ b for a, b in zip(tree.root(), (salt or b"\x00") * 32, strict=True))
    return sign_checkpoint(ORIGIN, size, root, signer)


def race_saves(
    stores: AuditStore | Sequence[AuditStore],
    size: int,
    texts: Sequence[str],
    nodes: Sequence[bytes] | None = None,
) -> list[Exception]:
    """Save ``texts[i]`` at ``size`` from one thread each, released together (through
    ``stores[i]``, or all through one store); what the saves raised."""
    many = stores if isinstance(stores, Sequence) else [stores] * len(texts)
    barrier = threading.Barrier(len(texts))
    raised: list[Exception] = []

    def save(store: AuditStore, text: str) -> None:
        barrier.wait()
        try:
            store.save_checkpoint(size, text, nodes)
        except Exception as exc:  # noqa: BLE001 - collected for the test to inspect
            raised.append(exc)

    threads = [threading.Thread(target=save, args=pair) for pair in zip(many, texts, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return raised


def _seqs(rows: Sequence[StoredRecord]) -> list[int]:
    return [row.seq for row in rows]


class _Signing:
    @pytest.fixture
    def note_signer(self) -> NoteSigner:
        """A checkpoint key made for this test (stores and sinks do not verify signatures)."""
        return NoteSigner.generate(ORIGIN, os.urandom)


class AuditStoreContract(_Signing):
    """Subclass and provide an ``audit_store`` fixture: an empty, ready store."""

    def test_a_new_store_is_empty(self, audit_store: AuditStore) -> None:
        assert audit_store.size() == 0
        assert audit_store.read(0, 10) == []
        assert audit_store.last_checkpoint() is None
        assert audit_store.checkpoints() == []
        assert audit_store.load_tree_state() is None
        assert audit_store.query(AuditQuery()) == []

    def test_records_come_back_byte_for_byte_in_order(self, audit_store: AuditStore) -> None:
        records = make_records(0, 5)
        audit_store.append_batch(records[:2])
        audit_store.append_batch(records[2:])
        assert audit_store.size() == 5
        assert audit_store.read(0, 100) == [StoredRecord(r.seq, r.canonical) for r in records]
        for row in audit_store.read(0, 100):
            assert isinstance(row.canonical, bytes)
            assert AuditRecord.from_canonical(row.canonical).seq == row.seq

    def test_read_pages_by_sequence_number(self, audit_store: AuditStore) -> None:
        audit_store.append_batch(make_records(0, 25))
        assert _seqs(audit_store.read(10, 5)) == [10, 11, 12, 13, 14]
        assert _seqs(audit_store.read(23, 10)) == [23, 24]
        assert audit_store.read(25, 10) == []
        with pytest.raises(ValueError, match="limit"):
            audit_store.read(0, 0)

    def test_a_batch_must_start_at_the_end_and_writes_nothing_otherwise(
        self, audit_store: AuditStore
    ) -> None:
        audit_store.append_batch(make_records(0, 3))
        for start in (0, 2, 4):
            with pytest.raises(ConflictError):
                audit_store.append_batch(make_records(start, 3))
        assert audit_store.size() == 3
        assert _seqs(audit_store.read(0, 100)) == [0, 1, 2]
        assert audit_store.read(0, 100) == [
            StoredRecord(r.seq, r.canonical) for r in make_records(0, 3)
        ]

    def test_a_batch_with_a_hole_is_refused(self, audit_store: AuditStore) -> None:
        records = make_records(0, 4)
        with pytest.raises(ValueError, match="consecutive"):
            audit_store.append_batch([records[0], records[1], records[3]])
        assert audit_store.size() == 0

    def test_an_empty_batch_does_nothing(self, audit_store: AuditStore) -> None:
        audit_store.append_batch([])
        assert audit_store.size() == 0

    def test_of_two_racing_writers_exactly_one_wins(self, audit_store: AuditStore) -> None:
        audit_store.append_batch(make_records(0, 1))
        barrier = threading.Barrier(2, timeout=10)
        outcomes: list[str] = []
        lock = threading.Lock()

        def append(principal: str) -> None:
            batch = [make_event(i, principal=principal).sequenced(i) for i in (1, 2)]
            barrier.wait()
            try:
                audit_store.append_batch(batch)
                result = principal
            except ConflictError:
                result = "conflict"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=append, args=(p,)) for p in ("user:a", "user:b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(outcomes) == 2
        assert outcomes.count("conflict") == 1
        winner = next(o for o in outcomes if o != "conflict")
        stored = [AuditRecord.from_canonical(r.canonical) for r in audit_store.read(1, 10)]
        assert [(r.seq, r.principal) for r in stored] == [(1, winner), (2, winner)]

    def test_a_rebased_append_builds_on_what_others_appended(self, audit_store: AuditStore) -> None:
        audit_store.append_batch(make_records(0, 3))
        seen: list[list[StoredRecord]] = []

        def build(missed: list[StoredRecord]) -> list[AuditRecord]:
            seen.append(missed)
            return make_records(3, 2)

        audit_store.append_rebased(1, build)
        assert seen == [[StoredRecord(r.seq, r.canonical) for r in make_records(1, 2)]]
        assert _seqs(audit_store.read(0, 100)) == [0, 1, 2, 3, 4]
        with pytest.raises(ConflictError):
            audit_store.append_rebased(5, lambda _: make_records(4, 1))
        with pytest.raises(ValueError, match="consecutive"):
            audit_store.append_rebased(5, lambda _: [*make_records(5, 1), *make_records(7, 1)])

        def fail(_: list[StoredRecord]) -> list[AuditRecord]:
            raise RuntimeError("the writer found a bad row")

        with pytest.raises(RuntimeError):
            audit_store.append_rebased(5, fail)
        assert audit_store.size() == 5

    def test_a_rebased_append_holds_the_write_lock(self, audit_store: AuditStore) -> None:
        inside, release = threading.Event(), threading.Event()
        raced: list[BaseException | None] = []

        def slow_build(missed: list[StoredRecord]) -> list[AuditRecord]:
            assert missed == []
            inside.set()
            release.wait(timeout=10)
            return make_records(0, 2)

        def racer() -> None:
            try:
                audit_store.append_batch(make_records(0, 1))
                raced.append(None)
            except ConflictError as exc:
                raced.append(exc)

        builder = threading.Thread(target=audit_store.append_rebased, args=(0, slow_build))
        builder.start()
        assert inside.wait(timeout=10)
        other = threading.Thread(target=racer)
        other.start()  # it starts while the lock is held, so it must come second
        release.set()
        builder.join(timeout=30)
        other.join(timeout=30)
        assert len(raced) == 1
        assert isinstance(raced[0], ConflictError)
        assert _seqs(audit_store.read(0, 10)) == [0, 1]

    def test_checkpoints_are_one_text_per_size_listed_by_size(
        self, audit_store: AuditStore, note_signer: NoteSigner
    ) -> None:
        audit_store.append_batch(make_records(0, 8))
        texts = {size: checkpoint_text(size, note_signer) for size in (2, 5, 8)}
        for size in (5, 8, 2):
            audit_store.save_checkpoint(size, texts[size])
        audit_store.save_checkpoint(5, texts[5])  # the same again: a no-op
        assert audit_store.checkpoints() == [texts[2], texts[5], texts[8]]
        assert audit_store.last_checkpoint() == texts[8]
        with pytest.raises(IntegrityError):
            audit_store.save_checkpoint(5, checkpoint_text(5, note_signer, salt=b"\x01"))
        assert audit_store.checkpoints() == [texts[2], texts[5], texts[8]]

    def test_racing_saves_of_one_checkpoint_both_succeed(
        self, audit_store: AuditStore, note_signer: NoteSigner
    ) -> None:
        """Two processes checkpointing the same log save the same text: neither may fail (a
        ``ConflictError`` here reads as an outage to the writer). Different texts: a fork."""
        audit_store.append_batch(make_records(0, 12))
        tree = TreeBuilder()
        states = {}
        for record in make_records(0, 12):
            tree.append(record.leaf_hash())
            states[tree.size] = tree.nodes
        for size in range(1, 13):
            same = checkpoint_text(size, note_signer)
            assert race_saves(audit_store, size, [same, same], states[size]) == []
        fork = checkpoint_text(12, note_signer, salt=b"\x02")
        assert [type(e) for e in race_saves(audit_store, 12, [fork])] == [IntegrityError]
        assert audit_store.last_checkpoint() == checkpoint_text(12, note_signer)

    def test_tree_state_is_saved_with_its_checkpoint(
        self, audit_store: AuditStore, note_signer: NoteSigner
    ) -> None:
        records = make_records(0, 7)
        audit_store.append_batch(records)
        tree = TreeBuilder()
        states = {}
        for record in records:
            tree.append(record.leaf_hash())
            states[tree.size] = tree.nodes
        audit_store.save_checkpoint(3, checkpoint_text(3, note_signer), states[3])
        audit_store.save_checkpoint(7, checkpoint_text(7, note_signer), states[7])
        audit_store.save_checkpoint(5, checkpoint_text(5, note_signer))  # without a state
        state = audit_store.load_tree_state()
        assert state is not None
        assert (state.size, state.nodes) == (7, states[7])
        assert TreeBuilder.restore(state.size, state.nodes).root() == tree.root()

    def test_query_filters_on_action_principal_and_time(self, audit_store: AuditStore) -> None:
        records = make_records(0, 12)
        audit_store.append_batch(records)
        expected = {r.canonical for r in records}

        def found(**filters: object) -> list[int]:
            rows = audit_store.query(AuditQuery(**filters))  # type: ignore[arg-type]
            assert all(row.canonical in expected for row in rows)
            return _seqs(rows)

        assert found(action="model.promote") == [1, 3, 5, 7, 9, 11]
        assert found(principal="user:p1", action="model.predict") == [4, 10]
        window = {
            "since": BASE_TIME + timedelta(seconds=3),
            "until": BASE_TIME + timedelta(seconds=6),
        }
        assert found(**window) == [3, 4, 5]
        assert found(action="model.promote", after_seq=5, limit=2) == [7, 9]
        assert found(principal="user:nobody") == []


class CheckpointSinkContract(_Signing):
    """Subclass and provide a ``checkpoint_sink`` fixture: an empty sink."""

    def test_a_new_sink_is_empty(self, checkpoint_sink: CheckpointSink) -> None:
        assert checkpoint_sink.checkpoints() == []
        assert checkpoint_sink.latest() is None

    def test_checkpoints_come_back_exactly_by_size(
        self, checkpoint_sink: CheckpointSink, note_signer: NoteSigner
    ) -> None:
        texts = {size: checkpoint_text(size, note_signer) for size in (0, 3, 12, 100)}
        for size in (12, 0, 100, 3):
            checkpoint_sink.publish(texts[size])
        assert checkpoint_sink.checkpoints() == [texts[0], texts[3], texts[12], texts[100]]
        assert checkpoint_sink.latest() == texts[100]

    def test_publishing_again_is_a_no_op_and_a_fork_is_refused(
        self, checkpoint_sink: CheckpointSink, note_signer: NoteSigner
    ) -> None:
        text = checkpoint_text(4, note_signer)
        checkpoint_sink.publish(text)
        checkpoint_sink.publish(text)
        with pytest.raises(IntegrityError):
            checkpoint_sink.publish(checkpoint_text(4, note_signer, salt=b"\x80"))
        assert checkpoint_sink.checkpoints() == [text]

    def test_text_that_is_not_a_checkpoint_is_refused(
        self, checkpoint_sink: CheckpointSink
    ) -> None:
        for text in ("", "origin only\n", "origin\n012\nroot\n", "origin\n-1\nroot\n"):
            with pytest.raises(ValueError, match="checkpoint"):
                checkpoint_sink.publish(text)
        assert checkpoint_sink.checkpoints() == []
