"""``verify_log`` on an honest log, and a tamper suite that must detect every variant.

The honest log has 300 records, a checkpoint every 50 records in the primary store and every 100
in the external sink (so the newest external checkpoint covers the whole log). Each tamper kind is
applied at many positions; for every variant the result must not be ``ok`` (or, for truncation
that no external checkpoint covers, must not claim completeness), and ``first_bad_seq`` must name
the tampered record where the data defines it: exactly for record and sequence failures, and as
the start of ``suspect_range`` (which must contain the record) for a root mismatch, because
well-formed records that were re-signed by no one can only be located between checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strongroom.core.audit.checkpoint import sign_checkpoint
from strongroom.core.audit.merkle import TreeBuilder
from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome
from strongroom.core.audit.verify import AuditProblem, AuditVerification, verify_log
from strongroom.core.crypto.notes import NoteSigner
from strongroom.errors import IntegrityError

ORIGIN = "strongroom.test/audit"
SIZE = 300
PRIMARY_EVERY = 50
EXTERNAL_EVERY = 100
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def event(i: int, salt: str = "") -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(milliseconds=i),
        principal=f"apikey:{salt}{i % 7}",
        action="model.predict" if i % 5 else "model.promote",
        resource="model:fraud",
        outcome=Outcome.ALLOWED if i % 3 else Outcome.DENIED,
        reason=None if i % 3 else "auth.forbidden",
        request_id=f"req-{salt}{i}",
        latency_us=100 + i,
    )


def records_of(events: list[AuditEvent]) -> list[bytes]:
    return [e.sequenced(seq).canonical for seq, e in enumerate(events)]


def checkpoints_of(
    records: list[bytes], sizes: list[int], signer: NoteSigner, origin: str = ORIGIN
) -> list[str]:
    builder, out, wanted = TreeBuilder(), [], set(sizes)
    for data in records:
        builder.append(AuditRecord.from_canonical(data).leaf_hash())
        if builder.size in wanted:
            out.append(sign_checkpoint(origin, builder.size, builder.root(), signer))
    return out


@dataclass
class Log:
    records: list[bytes]
    primary: list[str]
    external: list[str]
    signer: NoteSigner

    def verify(self, **changes: Any) -> AuditVerification:
        log = dataclasses.replace(self, **changes)
        return verify_log(
            iter(log.records), log.primary, log.external, [self.signer.verifier], origin=ORIGIN
        )


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN, os.urandom)


@pytest.fixture(scope="module")
def log(signer: NoteSigner) -> Log:
    records = records_of([event(i) for i in range(SIZE)])
    primary = checkpoints_of(records, list(range(PRIMARY_EVERY, SIZE + 1, PRIMARY_EVERY)), signer)
    external = checkpoints_of(
        records, list(range(EXTERNAL_EVERY, SIZE + 1, EXTERNAL_EVERY)), signer
    )
    return Log(records, primary, external, signer)


def reseq(data: bytes, seq: int) -> bytes:
    return dataclasses.replace(AuditRecord.from_canonical(data), seq=seq).canonical


def assert_detected(result: AuditVerification, seq: int | None, *, exact: bool = False) -> None:
    """Not ok, not complete; ``seq`` (the tampered record) inside the suspect range, and named
    by ``first_bad_seq`` itself when the tampering leaves evidence at that very record."""
    assert not result.ok
    assert not result.complete
    assert result.problem is not None
    if seq is None:
        return
    assert result.suspect_range is not None
    assert result.first_bad_seq is not None
    start, end = result.suspect_range
    assert start <= seq < end
    assert start <= result.first_bad_seq < end
    assert start == result.signed_size
    if exact:
        assert result.first_bad_seq == seq
    if result.problem is AuditProblem.CHECKPOINT_ROOT_MISMATCH:
        assert result.first_bad_seq == start


def positions(seed: int, count: int, high: int = SIZE) -> list[int]:
    edges = {0, 1, 49, 50, 51, 99, 100, 149, 199, 250, high - 2, high - 1}
    rng = random.Random(seed)
    return sorted(edges | set(rng.sample(range(high), count)))


# --- honest logs ----------------------------------------------------------------------------------


def test_honest_log_verifies_and_is_complete(log: Log) -> None:
    result = log.verify()
    assert result == AuditVerification(
        ok=True,
        records_checked=SIZE,
        signed_size=SIZE,
        proven_size=SIZE,
        complete=True,
        completeness=f"proven up to size {SIZE} by external checkpoint",
    )
    result.require_ok()


def test_unsigned_tail_is_ok_but_not_proven(log: Log) -> None:
    extra = [event(i).sequenced(i).canonical for i in range(SIZE, SIZE + 7)]
    result = log.verify(records=log.records + extra)
    assert result.ok
    assert result.records_checked == SIZE + 7
    assert result.signed_size == SIZE
    assert result.proven_size == SIZE
    assert not result.complete
    assert result.completeness.startswith("cannot be proven: no external checkpoint newer")


def test_without_external_checkpoints_completeness_cannot_be_proven(log: Log) -> None:
    result = log.verify(external=[])
    assert result.ok
    assert not result.complete
    assert result.proven_size is None
    assert result.completeness == "cannot be proven: no external checkpoint"


def test_empty_log(signer: NoteSigner) -> None:
    empty = Log([], [], [], signer)
    assert empty.verify().ok
    assert not empty.verify().complete
    at_zero = [sign_checkpoint(ORIGIN, 0, TreeBuilder().root(), signer)]
    result = empty.verify(primary=at_zero, external=at_zero)
    assert result.ok
    assert result.complete
    longer = empty.verify(records=[event(0).sequenced(0).canonical], external=at_zero)
    assert longer.ok
    assert not longer.complete
    assert longer.signed_size == 0


def test_require_ok_raises_on_failure(log: Log) -> None:
    result = log.verify(records=log.records[1:])
    with pytest.raises(IntegrityError):
        result.require_ok()


# --- tamper suite ---------------------------------------------------------------------------------

EDITS: dict[str, Any] = {
    "principal": "apikey:attacker",
    "outcome": Outcome.ALLOWED,
    "reason": "auth.ok",
    "latency_us": 1,
    "request_id": "req-forged",
    "details": {"forged": True},
}


def test_edit_one_field_recanonicalised(log: Log) -> None:
    rng, count = random.Random(1), 0
    for k in positions(1, 50):
        record = AuditRecord.from_canonical(log.records[k])
        field = rng.choice(sorted(EDITS))
        changes: dict[str, Any] = {field: EDITS[field]}
        if field == "outcome" and record.outcome is Outcome.ALLOWED:
            changes = {"outcome": Outcome.DENIED}
        forged = dataclasses.replace(record, **changes).canonical
        assert forged != log.records[k]
        records = [*log.records[:k], forged, *log.records[k + 1 :]]
        result = log.verify(records=records)
        assert_detected(result, k)
        assert result.problem is AuditProblem.CHECKPOINT_ROOT_MISMATCH
        count += 1
    assert count >= 50


def test_raw_byte_edits(log: Log) -> None:
    rng, count = random.Random(2), 0
    for k in positions(2, 25):
        data = bytearray(log.records[k])
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        records = [*log.records[:k], bytes(data), *log.records[k + 1 :]]
        result = log.verify(records=records)
        assert_detected(result, k, exact=result.problem is AuditProblem.RECORD_UNPARSEABLE)
        count += 1
    assert count >= 25


def test_delete_one_record(log: Log) -> None:
    count = 0
    for k in positions(3, 25):
        kept = [*log.records[:k], *log.records[k + 1 :]]
        assert_detected(log.verify(records=kept), k, exact=True)
        renumbered = [
            *log.records[:k],
            *(reseq(d, i + k) for i, d in enumerate(log.records[k + 1 :])),
        ]
        assert_detected(log.verify(records=renumbered), k)
        count += 2
    assert count >= 50


def test_reorder_two_records(log: Log) -> None:
    rng, count = random.Random(4), 0
    for i in positions(4, 25, SIZE - 1):
        j = rng.randrange(i + 1, SIZE)
        swapped = list(log.records)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        result = log.verify(records=swapped)
        assert_detected(result, i, exact=True)
        assert result.problem is AuditProblem.SEQUENCE_GAP
        swapped[i], swapped[j] = reseq(swapped[i], i), reseq(swapped[j], j)
        assert_detected(log.verify(records=swapped), i)
        count += 2
    assert count >= 60


def test_insert_a_forged_record(log: Log) -> None:
    count = 0
    for k in positions(5, 25):
        forged = event(k, salt="forged-").sequenced(k).canonical
        inserted = [*log.records[:k], forged, *log.records[k:]]
        result = log.verify(records=inserted)
        assert_detected(result, k, exact=result.problem is AuditProblem.SEQUENCE_REPEAT)
        tail = [reseq(d, k + 1 + i) for i, d in enumerate(log.records[k:])]
        assert_detected(log.verify(records=[*log.records[:k], forged, *tail]), k)
        elsewhere = event(k, salt="forged-").sequenced(10_000 + k).canonical
        moved = [*log.records[:k], elsewhere, *log.records[k:]]
        assert_detected(log.verify(records=moved), k, exact=True)
        count += 3
    assert count >= 75


def test_truncate_the_tail(log: Log) -> None:
    count = 0
    for t in positions(6, 25):
        records = log.records[:t]
        naive = log.verify(records=records)
        assert_detected(naive, t, exact=True)
        assert naive.problem is AuditProblem.CHECKPOINT_BEYOND_LOG
        primary = [c for c in log.primary if int(c.split("\n")[1]) <= t]
        aware = log.verify(records=records, primary=primary)
        assert_detected(aware, t, exact=True)
        assert aware.problem is AuditProblem.EXTERNAL_TRUNCATED
        # No external checkpoint newer than the truncation: ok for the prefix, never complete.
        external = [c for c in log.external if int(c.split("\n")[1]) <= t]
        blind = log.verify(records=records, primary=primary, external=external)
        assert blind.ok
        newest = max((int(c.split("\n")[1]) for c in external), default=None)
        assert blind.proven_size == newest
        assert blind.complete == (newest == t)
        if newest != t:
            assert blind.completeness.startswith("cannot be proven")
        count += 3
    assert count >= 90


def test_rewrite_the_tail_and_resign_with_an_attacker_key(log: Log) -> None:
    count = 0
    for k in positions(7, 12):
        forged = log.records[:k] + records_of([event(i, "x") for i in range(SIZE)])[k:]
        for name in (ORIGIN, "attacker.example/log"):
            attacker = NoteSigner.generate(name, os.urandom)
            sizes = list(range(PRIMARY_EVERY, SIZE + 1, PRIMARY_EVERY))
            resigned = checkpoints_of(forged, sizes, attacker)
            primary = [c for c in log.primary if int(c.split("\n")[1]) <= k]
            primary += [c for c in resigned if int(c.split("\n")[1]) > k]
            result = log.verify(records=forged, primary=primary)
            assert_detected(result, None)
            assert result.problem is AuditProblem.CHECKPOINT_SIGNATURE
            external = [c for c in log.external if int(c.split("\n")[1]) <= k]
            external += [c for c in resigned if int(c.split("\n")[1]) > k]
            assert_detected(log.verify(records=forged, primary=primary, external=external), None)
            count += 2
        # Without re-signing, the attacker must drop the checkpoints: the external sink catches it.
        dropped = [c for c in log.primary if int(c.split("\n")[1]) <= k]
        assert_detected(log.verify(records=forged, primary=dropped), k)
        count += 1
    assert count >= 80


def test_swap_a_checkpoint_for_one_from_another_log(log: Log) -> None:
    other_records = records_of([event(i, "other") for i in range(SIZE)])
    other_key = NoteSigner.generate(ORIGIN, os.urandom)
    sizes = list(range(PRIMARY_EVERY, SIZE + 1, PRIMARY_EVERY))
    foreign = {
        AuditProblem.CHECKPOINT_ROOT_MISMATCH: checkpoints_of(other_records, sizes, log.signer),
        AuditProblem.CHECKPOINT_ORIGIN: checkpoints_of(
            log.records, sizes, log.signer, origin="strongroom.test/other"
        ),
        AuditProblem.CHECKPOINT_SIGNATURE: checkpoints_of(log.records, sizes, other_key),
    }
    count = 0
    for problem, replacements in foreign.items():
        for n, replacement in enumerate(replacements):
            primary = [*log.primary[:n], replacement, *log.primary[n + 1 :]]
            result = log.verify(primary=primary)
            assert_detected(result, None)
            assert result.problem is problem
            if n % 2 == 1:
                external = [*log.external[: n // 2], replacement, *log.external[n // 2 + 1 :]]
                assert_detected(log.verify(external=external), None)
                count += 1
            count += 1
    assert count >= 27


def test_checkpoints_out_of_order(log: Log) -> None:
    result = log.verify(primary=list(reversed(log.primary)))
    assert result.problem is AuditProblem.CHECKPOINT_ORDER
    result = log.verify(external=list(reversed(log.external)))
    assert result.problem is AuditProblem.EXTERNAL_ORDER


# --- streaming ------------------------------------------------------------------------------------


def test_verification_streams_the_records(signer: NoteSigner) -> None:
    """Memory does not grow with the log: the records come from a generator and are dropped."""
    size = 3_000
    template = event(1)

    def generate() -> Iterator[bytes]:
        for seq in range(size):
            yield template.sequenced(seq).canonical

    builder = TreeBuilder()
    for data in generate():
        builder.append(AuditRecord.from_canonical(data).leaf_hash())
    head = [sign_checkpoint(ORIGIN, size, builder.root(), signer)]
    tracemalloc.start()
    try:
        result = verify_log(generate(), head, head, [signer.verifier], origin=ORIGIN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.complete
    assert result.records_checked == size
    assert peak < 128 * 1024  # the records alone are about 1 MB
