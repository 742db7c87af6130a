"""The audit writer and service against real and fake stores: group commit, no gaps, fail
closed and recover, kill -9, restarts, concurrent writers, and tampering through the database."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.storage.audit_sql import SqlAuditStore
from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.core.audit.ports import AuditQuery
from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome
from strongroom.core.audit.verify import verify_log
from strongroom.core.crypto.notes import NoteSigner
from strongroom.errors import AuditUnavailableError, IntegrityError, StorageError
from strongroom.services.audit import AuditWriter
from strongroom.services.audit_reading import AuditReader, AuditService
from strongroom.testing.fake_audit import InMemoryAuditStore, InMemoryCheckpointSink

ORIGIN = "writer.test/audit"
HERE = Path(__file__).resolve().parent


def now() -> datetime:
    return datetime.now(UTC)


def event(n: int = 0, principal: str = "user:alice", action: str = "model.predict") -> AuditEvent:
    return AuditEvent(
        time=now(),
        principal=principal,
        action=action,
        resource="model:fraud",
        outcome=Outcome.ALLOWED,
        request_id=f"req-{n}",
    )


class Breakable:
    """Any audit store, with a switch that makes it fail like a database that went away, and a
    count of committed batches."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False
        self.transactions = 0

    def _check(self) -> None:
        if self.broken:
            raise StorageError("the database went away (test switch)")

    def append_batch(self, records: Any) -> None:
        self._check()
        self.inner.append_batch(records)
        self.transactions += 1

    def __getattr__(self, name: str) -> Any:
        self._check()
        return getattr(self.inner, name)


@pytest.fixture
def note_signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN, os.urandom)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlAuditStore]:
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'registry.db'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Breakable:
    if request.param == "memory":
        return Breakable(InMemoryAuditStore())
    return Breakable(request.getfixturevalue("sqlite_store"))


def make_writer(store: Any, sink: Any, signer: NoteSigner, **options: Any) -> AuditWriter:
    options.setdefault("retry_interval", 0.02)
    return AuditWriter(store, sink, signer, ORIGIN, now, **options)


def service(store: Any, sink: Any, signer: NoteSigner, writer: AuditWriter) -> AuditService:
    return AuditService(
        store, sink, [signer.verifier], ORIGIN, recorder=writer.record, clock=now, page_size=7
    )


def stored(store: Any) -> list[AuditRecord]:
    rows = store.read(0, 10_000)
    return [AuditRecord.from_canonical(row.canonical) for row in rows]


def assert_contiguous_and_verified(store: Any, sink: Any, signer: NoteSigner) -> None:
    records = stored(store)
    assert [r.seq for r in records] == list(range(len(records)))
    result = verify_log(
        (r.canonical for r in records),
        store.checkpoints(),
        sink.checkpoints(),
        [signer.verifier],
        origin=ORIGIN,
    )
    assert result.ok, result


# --- group commit ---------------------------------------------------------------------------------


def test_group_commit_acknowledges_only_durable_records(
    sqlite_store: SqlAuditStore, tmp_path: Path, note_signer: NoteSigner
) -> None:
    store = Breakable(sqlite_store)
    sink = DirectoryCheckpointSink(tmp_path / "external")
    acked: list[AuditRecord] = []
    lock = threading.Lock()
    with make_writer(store, sink, note_signer, checkpoint_every=500) as writer:

        def load(worker: int) -> None:
            for n in range(500):
                record = writer.record(event(n, principal=f"service:w{worker}"), timeout=30)
                with lock:
                    acked.append(record)

        threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert sorted(r.seq for r in acked) == list(range(4000))
    in_store = {r.seq: r.canonical for r in stored(store)}
    assert all(in_store[r.seq] == r.canonical for r in acked)
    assert store.transactions < 4000 / 4, store.transactions
    result = service(store, sink, note_signer, writer).verify()
    assert result.ok
    assert result.records_checked == 4000
    assert result.complete  # close() published a checkpoint of the whole log


def test_a_lone_caller_is_not_held_back(note_signer: NoteSigner) -> None:
    store = Breakable(InMemoryAuditStore())
    with make_writer(store, InMemoryCheckpointSink(), note_signer, max_delay=5.0) as writer:
        started = time.monotonic()
        for n in range(20):
            assert writer.record(event(n)).seq == n
        assert time.monotonic() - started < 5.0  # no 5 s linger for a sequential caller
    assert store.transactions == 20


def test_submit_gives_an_uncancellable_future_for_asyncio(note_signer: NoteSigner) -> None:
    store = InMemoryAuditStore()
    with make_writer(store, InMemoryCheckpointSink(), note_signer) as writer:
        future = writer.submit(event())
        assert not future.cancel()

        async def wait() -> AuditRecord:
            return await asyncio.wrap_future(writer.submit(event(1)))

        second = asyncio.run(wait())
        assert future.result(10).seq == 0
        assert second.seq == 1
    assert [r.seq for r in stored(store)] == [0, 1]


# --- fail closed ----------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Eight callers recording in a loop, classifying every call by the phase it ran in."""

    writer: AuditWriter
    phase: str = "running"
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: list[AuditRecord] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    changed: threading.Event = field(default_factory=threading.Event)

    def run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            before = self.phase
            try:
                record = self.writer.record(event(n, principal=f"service:w{worker}"), timeout=30)
                outcome = "ok"
            except AuditUnavailableError:
                record, outcome = None, "refused"
            key = (before if self.phase == before else "transition", outcome)
            with self.lock:
                if record is not None:
                    self.acked.append(record)
                self.counts[key] = self.counts.get(key, 0) + 1
            self.changed.set()

    def count(self, phase: str, outcome: str) -> int:
        with self.lock:
            return self.counts.get((phase, outcome), 0)

    def wait_for(self, phase: str, outcome: str, at_least: int) -> None:
        deadline = time.monotonic() + 30
        while self.count(phase, outcome) < at_least:
            assert time.monotonic() < deadline, (phase, outcome, self.counts)
            self.changed.wait(0.05)
            self.changed.clear()


def test_fail_closed_while_broken_and_recover_by_itself(
    store: Breakable, note_signer: NoteSigner, caplog: pytest.LogCaptureFixture
) -> None:
    sink = InMemoryCheckpointSink()
    writer = make_writer(store, sink, note_signer, checkpoint_every=100)
    writer.start()
    traffic = Traffic(writer)
    threads = [threading.Thread(target=traffic.run, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    try:
        traffic.wait_for("running", "ok", 200)
        store.broken = True
        traffic.phase = "broken"  # set after breaking: calls that saw it ran on a broken store
        traffic.wait_for("broken", "refused", 200)
        assert not writer.healthy
        traffic.phase = "repaired"  # set before repairing, for the same reason
        store.broken = False
        assert writer.wait_until_healthy(30)
        traffic.wait_for("repaired", "ok", 200)
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        writer.close()
    assert traffic.count("broken", "ok") == 0
    records = stored(store)
    assert {r.seq: r.canonical for r in records} | {r.seq: r.canonical for r in traffic.acked} == {
        r.seq: r.canonical for r in records
    }  # every acknowledged record is stored as is
    outages = [r for r in records if r.action == "audit.outage"]
    assert len(outages) == 1
    assert outages[0].reason == "audit.store_unavailable"
    assert isinstance(outages[0].details["refused"], int)
    assert outages[0].details["refused"] > 0
    assert all(r.seq > outages[0].seq for r in traffic.acked if r.time > outages[0].time)
    assert_contiguous_and_verified(store, sink, note_signer)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1  # once per outage
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_a_failed_batch_leaves_no_gap(note_signer: NoteSigner) -> None:
    store = Breakable(InMemoryAuditStore())
    with make_writer(store, InMemoryCheckpointSink(), note_signer) as writer:
        assert [writer.record(event(n)).seq for n in range(3)] == [0, 1, 2]
        store.broken = True
        with pytest.raises(AuditUnavailableError):
            writer.record(event(3))
        with pytest.raises(AuditUnavailableError):  # refused at once now: fail closed
            writer.record(event(4))
        store.broken = False
        assert writer.wait_until_healthy(30)
        after = writer.record(event(5))
    records = stored(store)
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert records[3].action == "audit.outage"
    assert after.seq == 4
    assert after.request_id == "req-5"


def test_the_external_sink_may_lag_only_so_far(note_signer: NoteSigner) -> None:
    store, sink = Breakable(InMemoryAuditStore()), InMemoryCheckpointSink()
    options = {"checkpoint_every": 5, "max_unpublished": 10}
    with make_writer(store, sink, note_signer, **options) as writer:
        sink.broken = True
        for n in range(11):  # requests go on while the lag is within the bound
            writer.record(event(n))
        with pytest.raises(AuditUnavailableError):
            writer.record(event(11))
        assert not writer.healthy
        sink.broken = False
        assert writer.wait_until_healthy(30)
        writer.record(event(12))
    records = stored(store)
    assert [r.action for r in records].count("audit.outage") == 1
    assert next(r for r in records if r.action == "audit.outage").reason == (
        "audit.sink_unavailable"
    )
    assert_contiguous_and_verified(store, sink, note_signer)


# --- kill -9 --------------------------------------------------------------------------------------


def _lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    signer = NoteSigner.generate("kill9.test/audit", os.urandom)
    key_file = tmp_path / "checkpoint.key"
    key_file.write_text(signer.to_skey(), encoding="utf-8")
    database, external = tmp_path / "audit.db", tmp_path / "external"
    SqlAuditStore(f"sqlite:///{database}").migrate()
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "audit_load_child.py"),
            *map(str, (database, external)),
            str(key_file),
            "6",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(child.stdout, lines), daemon=True).start()
    acked: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 2000:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "the child died"
            acked.add(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    store = SqlAuditStore(f"sqlite:///{database}")
    try:
        rows = store.read(0, 10_000)
        assert acked <= {row.seq for row in rows}
        sink = DirectoryCheckpointSink(external)
        result = verify_log(
            (row.canonical for row in rows),
            store.checkpoints(),
            sink.checkpoints(),
            [signer.verifier],
            origin="kill9.test/audit",
        )
        assert result.ok, result
        assert result.records_checked == len(rows) >= 2000
        # A new writer resumes after the crash: the next record follows the last stored one.
        with AuditWriter(store, sink, signer, "kill9.test/audit", now) as writer:
            assert writer.record(event()).seq == len(rows)
    finally:
        store.close()


# --- restarts and concurrent writers --------------------------------------------------------------


class ReadCounting(InMemoryAuditStore):
    def __init__(self) -> None:
        super().__init__()
        self.read_starts: list[int] = []

    def read(self, start_seq: int, limit: int) -> Any:
        self.read_starts.append(start_seq)
        return super().read(start_seq, limit)


def test_restart_rehashes_the_log_or_trusts_a_matching_saved_tree(
    note_signer: NoteSigner,
) -> None:
    store, sink = ReadCounting(), InMemoryCheckpointSink()
    with make_writer(store, sink, note_signer, checkpoint_every=5) as writer:
        for n in range(7):
            writer.record(event(n))
    store.read_starts.clear()
    with make_writer(store, sink, note_signer) as writer:
        assert writer.record(event(7)).seq == 7
    assert store.read_starts[0] == 0  # by default every record is re-hashed at start
    store.read_starts.clear()
    with make_writer(store, sink, note_signer, trust_saved_tree=True) as writer:
        assert writer.record(event(8)).seq == 8
    assert store.read_starts == []  # resumed from the tree state saved at close (size 8)
    state = store.load_tree_state()
    assert state is not None
    assert state.size == 9
    store._states[9] = tuple(bytes(32) for _ in state.nodes)  # a forged state is not trusted
    with make_writer(store, sink, note_signer, trust_saved_tree=True) as writer:
        assert writer.record(event(9)).seq == 9
    assert store.read_starts[0] == 0  # rebuilt from the records instead
    assert_contiguous_and_verified(store, sink, note_signer)


def test_two_writers_on_one_log_interleave_without_gaps(
    sqlite_store: SqlAuditStore, tmp_path: Path, note_signer: NoteSigner
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "external")
    other = SqlAuditStore(sqlite_store._url)
    try:
        with (
            make_writer(sqlite_store, sink, note_signer, checkpoint_every=10) as first,
            make_writer(other, sink, note_signer, checkpoint_every=10) as second,
        ):
            seqs = [w.record(event(n)).seq for n in range(30) for w in (first, second)]
        assert sorted(seqs) == list(range(60))
    finally:
        other.close()
    assert_contiguous_and_verified(sqlite_store, sink, note_signer)


@pytest.fixture
def closed_log(note_signer: NoteSigner) -> tuple[InMemoryAuditStore, InMemoryCheckpointSink]:
    """12 records, checkpoints at 5, 10 and 12 (at close) in the store and the sink."""
    store, sink = InMemoryAuditStore(), InMemoryCheckpointSink()
    with make_writer(store, sink, note_signer, checkpoint_every=5) as writer:
        for n in range(12):
            writer.record(event(n))
    assert sorted(sink.kept) == [5, 10, 12]
    return store, sink


def test_a_writer_refuses_checkpoints_it_cannot_verify(closed_log: Any) -> None:
    store, sink = closed_log
    stranger = NoteSigner.generate(ORIGIN, os.urandom)
    with pytest.raises(IntegrityError):
        make_writer(store, sink, stranger).start()


def test_a_writer_refuses_a_log_truncated_with_its_checkpoints(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    store, sink = closed_log
    for seq in (10, 11):
        del store.rows[seq]
    with pytest.raises(IntegrityError):  # shorter than its own newest checkpoint
        make_writer(store, sink, note_signer).start()
    del store._checkpoints[12]  # an insider covers the tracks in the database...
    store._states.clear()
    with pytest.raises(IntegrityError):  # ...but the external checkpoint of size 12 remains
        make_writer(store, sink, note_signer).start()


def test_a_writer_refuses_an_edited_record_before_the_last_checkpoint(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    store, sink = closed_log
    store.rows[3] = event(3, principal="user:mallory").sequenced(3).canonical
    with pytest.raises(IntegrityError):
        make_writer(store, sink, note_signer).start()
    with make_writer(store, sink, note_signer, trust_saved_tree=True) as writer:
        assert writer.record(event(12)).seq == 12  # fast start: left to audit verify


def test_a_writer_refuses_a_forged_record_after_the_last_checkpoint(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    store, sink = closed_log
    store.rows[12] = event(12).sequenced(13).canonical  # well-formed, at the wrong place
    with pytest.raises(IntegrityError):
        make_writer(store, sink, note_signer).start()
    store.rows[12] = b'{"not": "a record"}'
    with pytest.raises(IntegrityError):
        make_writer(store, sink, note_signer).start()


# --- the auditor's service ------------------------------------------------------------------------


def test_every_read_is_recorded_first(note_signer: NoteSigner) -> None:
    store, sink = InMemoryAuditStore(), InMemoryCheckpointSink()
    reader = AuditReader(principal="user:auditor", request_id="read-1", client_address="10.0.0.9")
    with make_writer(store, sink, note_signer) as writer:
        for n in range(10):
            writer.record(event(n, principal=f"user:p{n % 2}", action="model.predict"))
        audit = service(store, sink, note_signer, writer)
        tail = audit.tail(3, reader)
        assert [r["seq"] for r in tail] == [8, 9, 10]
        assert tail[-1]["action"] == "audit.read"
        assert tail[-1]["principal"] == "user:auditor"
        assert tail[-1]["details"] == {"operation": "tail", "n": 3}
        exported = list(audit.export(reader, start=2, end=20))
        assert [r["seq"] for r in exported] == list(range(2, 12))  # to the end as it was
        found = audit.query(AuditQuery(principal="user:p1", limit=3), reader)
        assert [r["seq"] for r in found] == [1, 3, 5]
        reads = [r for r in stored(store) if r.action == "audit.read"]
        assert [r.details["operation"] for r in reads] == ["tail", "export", "query"]
        assert reads[2].details["principal"] == "user:p1"
        assert reads[0].client_address == "10.0.0.9"
        store.broken = True
        with pytest.raises(StorageError):  # no audit record, no read (fail closed)
            audit.tail(3, reader)
        store.broken = False
        assert writer.wait_until_healthy(30)


def test_query_rechecks_the_untrusted_index_columns(note_signer: NoteSigner) -> None:
    store, sink = InMemoryAuditStore(), InMemoryCheckpointSink()
    reader = AuditReader(principal="user:auditor", request_id="read-1")
    with make_writer(store, sink, note_signer) as writer:
        for n in range(4):
            writer.record(event(n, principal="user:alice"))
        store._index[2] = ("model.predict", "user:mallory", store._index[2][2])
        found = service(store, sink, note_signer, writer).query(
            AuditQuery(principal="user:mallory"), reader
        )
    assert found == []  # the index says mallory; the record itself says alice


# --- tampering through the database ---------------------------------------------------------------


def edit(row: bytes) -> bytes:
    return row.replace(b'"principal":"service:w1"', b'"principal":"service:w9"')


TAMPERING: dict[str, tuple[str, Callable[[sqlite3.Connection], None], str, int]] = {
    "edit": (
        "a well-formed record changed: located to its checkpoint interval",
        lambda db: db.execute(
            "UPDATE audit_records SET canonical = ? WHERE seq = 7", (edit(_row(db, 7)),)
        ),
        "checkpoint.root_mismatch",
        5,
    ),
    "garble": (
        "a record that no longer parses",
        lambda db: db.execute(
            "UPDATE audit_records SET canonical = ? WHERE seq = 7", (_row(db, 7) + b" ",)
        ),
        "record.unparseable",
        7,
    ),
    "delete": (
        "a record removed",
        lambda db: db.execute("DELETE FROM audit_records WHERE seq = 7"),
        "sequence.gap",
        7,
    ),
    "reorder": (
        "two records swapped",
        lambda db: (
            db.execute("UPDATE audit_records SET seq = 1000000 WHERE seq = 7"),
            db.execute("UPDATE audit_records SET seq = 7 WHERE seq = 8"),
            db.execute("UPDATE audit_records SET seq = 8 WHERE seq = 1000000"),
        ),
        "sequence.gap",
        7,
    ),
    "insert": (
        "a forged record slipped in: later rows renumbered",
        lambda db: (
            db.execute("UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 7"),
            db.execute("UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1000"),
            db.execute(
                "INSERT INTO audit_records (seq, canonical, leaf_hash, time, action, outcome)"
                " VALUES (7, ?, x'00', '2026-01-01 00:00:00', 'model.predict', 'allowed')",
                (event(99).sequenced(7).canonical,),
            ),
        ),
        "sequence.repeat",
        7,
    ),
    "truncate": (
        "the tail and the database's own checkpoints of it removed",
        lambda db: (
            db.execute("DELETE FROM audit_records WHERE seq >= 12"),
            db.execute("DELETE FROM audit_checkpoints WHERE size > 12"),
        ),
        "external.truncated",
        12,
    ),
}


def _row(db: sqlite3.Connection, seq: int) -> bytes:
    return bytes(
        db.execute("SELECT canonical FROM audit_records WHERE seq = ?", (seq,)).fetchone()[0]
    )


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_in_the_database_is_found_at_the_right_record(
    case: str, sqlite_store: SqlAuditStore, tmp_path: Path, note_signer: NoteSigner
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "external")
    with make_writer(sqlite_store, sink, note_signer, checkpoint_every=5) as writer:
        for n in range(20):
            writer.record(event(n, principal=f"service:w{n % 2}"))
    audit = service(sqlite_store, sink, note_signer, writer)
    before = audit.verify()  # after close: its final checkpoint covers the whole log
    assert before.ok
    assert before.complete
    _, tamper, problem, first_bad = TAMPERING[case]
    database = sqlite_store._url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        tamper(db)
    result = audit.verify()
    assert not result.ok
    assert (str(result.problem), result.first_bad_seq) == (problem, first_bad)


# --- regressions: start-up, outages, close, external re-check -------------------------------------


def test_a_trusted_saved_tree_does_not_hide_a_truncated_log(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    """With ``trust_saved_tree`` the tree is restored at the checkpoint's size (12): the store
    holding fewer rows must still fail start-up, even without any external checkpoint."""
    store, _ = closed_log
    for seq in range(4, 12):
        del store.rows[seq]
    assert store.load_tree_state() is not None
    for trust in (False, True):
        writer = make_writer(store, InMemoryCheckpointSink(), note_signer, trust_saved_tree=trust)
        with pytest.raises(IntegrityError):
            writer.start()
        assert not writer.healthy


def truncate_behind(writer: AuditWriter, store: InMemoryAuditStore) -> None:
    """Drop the newest record behind the writer's back: its next batch finds the log shorter
    than what it wrote, which is evidence of tampering (an integrity outage)."""
    for n in range(3):
        writer.record(event(n))
    del store.rows[2]
    with pytest.raises(AuditUnavailableError):
        writer.record(event(9))


def test_an_integrity_outage_waits_for_close_instead_of_spinning(note_signer: NoteSigner) -> None:
    store = InMemoryAuditStore()
    writer = make_writer(store, InMemoryCheckpointSink(), note_signer)
    waits: queue.Queue[tuple[bool, float | None]] = queue.Queue()
    take = writer._take

    def recording_take(timeout: float | None) -> Any:
        waits.put((writer._healthy, timeout))
        return take(timeout)

    writer._take = recording_take  # type: ignore[method-assign]
    writer.start()
    try:
        truncate_behind(writer, store)
        healthy, timeout = waits.get(timeout=10)
        while healthy:
            healthy, timeout = waits.get(timeout=10)
        assert timeout is None  # blocks until close; a 0 here is a busy loop
        assert not writer.healthy
    finally:
        writer.close()
    assert waits.qsize() <= 1  # woken only by close


class CriticalLog(logging.Handler):
    """Hands CRITICAL records of the audit logger to the test as they are emitted."""

    def __init__(self) -> None:
        super().__init__(logging.CRITICAL)
        self.records: queue.Queue[logging.LogRecord] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.put(record)


@pytest.fixture
def critical_log() -> Iterator[CriticalLog]:
    handler = CriticalLog()
    logger = logging.getLogger("strongroom.audit")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_tampering_found_by_a_probe_is_an_integrity_outage(
    note_signer: NoteSigner, critical_log: CriticalLog
) -> None:
    inner = InMemoryAuditStore()
    store = Breakable(inner)
    writer = make_writer(store, InMemoryCheckpointSink(), note_signer)
    with writer:
        for n in range(3):
            writer.record(event(n))
        store.broken = True
        with pytest.raises(AuditUnavailableError):
            writer.record(event(3))
        assert critical_log.records.empty()  # a store outage is not tampering
        del inner.rows[2]  # truncated while the store was "down"
        store.broken = False
        found = critical_log.records.get(timeout=10)  # the next probe finds it
        assert "integrity" in found.getMessage()
        assert found.exc_info is not None
        assert isinstance(found.exc_info[1], IntegrityError)
        assert not writer.healthy
        assert writer._outage is not None
        assert writer._outage.cause == "integrity"
        with pytest.raises(AuditUnavailableError):
            writer.record(event(4))
    assert sorted(inner.rows) == [0, 1]  # no outage record, no recovery


class HungStore(InMemoryAuditStore):
    """A store whose appends hang until released, as a database that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def append_batch(self, records: Any) -> None:
        self.entered.set()
        self.release.wait()
        super().append_batch(records)


def test_close_fails_queued_events_when_the_writer_hangs(note_signer: NoteSigner) -> None:
    store = HungStore()
    writer = make_writer(store, InMemoryCheckpointSink(), note_signer)
    writer.start()
    try:
        in_flight = writer.submit(event(1))
        assert store.entered.wait(10)
        queued = writer.submit(event(2))
        writer.close(timeout=0.05)
        assert queued.done()  # failed by close, not left to its caller's timeout
        with pytest.raises(AuditUnavailableError):
            queued.result(0)
        assert not in_flight.done()
    finally:
        store.release.set()
        assert writer._thread is not None
        writer._thread.join(30)
    assert in_flight.result(0).seq == 0
    assert not writer._thread.is_alive()


class FirstLatestBlocks(InMemoryCheckpointSink):
    """A sink whose first ``latest`` call blocks until released (a slow start-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self._first = True

    def latest(self) -> str | None:
        if self._first:
            self._first = False
            self.entered.set()
            self.release.wait()
        return super().latest()


def test_two_concurrent_starts_start_one_thread(note_signer: NoteSigner) -> None:
    sink = FirstLatestBlocks()
    writer = make_writer(InMemoryAuditStore(), sink, note_signer)
    first = threading.Thread(target=writer.start)
    first.start()
    try:
        assert sink.entered.wait(10)
        with pytest.raises(RuntimeError):
            writer.start()  # the first start is still resuming
        assert writer._thread is None
    finally:
        sink.release.set()
        first.join(30)
    try:
        assert writer.record(event(1)).seq == 0
    finally:
        writer.close()


def test_a_failed_start_may_be_retried(note_signer: NoteSigner) -> None:
    store = Breakable(InMemoryAuditStore())
    writer = make_writer(store, InMemoryCheckpointSink(), note_signer)
    store.broken = True
    with pytest.raises(StorageError):
        writer.start()
    store.broken = False
    with writer:
        assert writer.record(event(1)).seq == 0


def test_an_unreadable_sink_at_start_up_is_checked_once_readable(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    """The log was truncated to 10 and its newer checkpoints removed; only the external one of
    size 12 shows it. The sink is down at start-up, so the first successful read must check."""
    store, sink = closed_log
    for seq in (10, 11):
        del store.rows[seq]
    del store._checkpoints[12]
    store._states.clear()
    sink.broken = True
    writer = make_writer(store, sink, note_signer, checkpoint_every=3, max_unpublished=None)
    with writer:
        sink.broken = False
        for n in range(3):  # 13 records: a checkpoint that must not be published
            writer.record(event(n))
        with pytest.raises(AuditUnavailableError):
            writer.record(event(3))
        assert writer._outage is not None
        assert writer._outage.cause == "integrity"
    assert sorted(sink.kept) == [5, 10, 12]


def test_a_late_external_check_passes_on_an_intact_log(
    closed_log: Any, note_signer: NoteSigner
) -> None:
    store, sink = closed_log
    sink.broken = True
    with make_writer(store, sink, note_signer, checkpoint_every=3) as writer:
        sink.broken = False
        for n in range(3):
            writer.record(event(n))
        assert writer.record(event(3)).seq == 15
        assert writer.healthy
    assert sorted(sink.kept) == [5, 10, 12, 15, 16]
    assert_contiguous_and_verified(store, sink, note_signer)
