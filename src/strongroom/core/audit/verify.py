"""Whole-log verification: the check behind ``strongroom audit verify``.

``verify_log`` reads the records once, in order, and proves what can be proven:

1. every record is a canonical audit record v1 and the sequence numbers are 0, 1, 2, ... with no
   gap, repeat or reordering;
2. every checkpoint, from the primary store and from the external sink, carries a valid signature
   by a trusted key and names the expected origin, and each list is in non-decreasing size order;
3. the Merkle root recomputed from the records equals every checkpoint's root at its size, so
   all checkpoints are tree heads of prefixes of this one log (this *is* their consistency: no
   proofs are needed when the verifier holds every leaf);
4. no checkpoint, primary or external, is larger than the log: a log shorter than a signed tree
   head was truncated or rolled back.

Completeness is a separate, deliberately cautious statement. A log can only be proven complete
up to the newest *external* checkpoint (an insider who controls the primary store can truncate
the log and its checkpoints together); records written after it may have been dropped without a
trace. So the result says "proven up to size N" only when an external checkpoint covers the whole
log, and "cannot be proven" otherwise, even when every check passed.

Invariants: streams the records (memory is O(log n) for the tree plus the parsed checkpoints), so
a log of millions of records verifies; pure (no I/O); never raises on bad data, which is reported
in the result, with a stable ``problem`` code and the first bad sequence number where the data
defines one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from strongroom.core.audit.checkpoint import Checkpoint, open_checkpoint
from strongroom.core.audit.merkle import TreeBuilder, hash_leaf
from strongroom.core.audit.record import AuditRecord
from strongroom.core.crypto.notes import NoteVerifier
from strongroom.errors import IntegrityError, SecurityError


class AuditProblem(StrEnum):
    """Stable codes of what failed; scripts may rely on them."""

    RECORD_UNPARSEABLE = "record.unparseable"
    SEQUENCE_GAP = "sequence.gap"
    SEQUENCE_REPEAT = "sequence.repeat"
    CHECKPOINT_SIGNATURE = "checkpoint.signature"
    CHECKPOINT_ORIGIN = "checkpoint.origin"
    CHECKPOINT_ORDER = "checkpoint.order"
    CHECKPOINT_ROOT_MISMATCH = "checkpoint.root_mismatch"
    CHECKPOINT_BEYOND_LOG = "checkpoint.beyond_log"
    EXTERNAL_SIGNATURE = "external.signature"
    EXTERNAL_ORIGIN = "external.origin"
    EXTERNAL_ORDER = "external.order"
    EXTERNAL_ROOT_MISMATCH = "external.root_mismatch"
    EXTERNAL_TRUNCATED = "external.truncated"


UNPROVEN_NO_EXTERNAL: Final = "cannot be proven: no external checkpoint"
UNPROVEN_FAILED: Final = "cannot be proven: the log failed verification"


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What ``verify_log`` found. ``ok`` alone never means "complete": read ``complete``."""

    ok: bool
    records_checked: int
    """Records read and found well-formed and in sequence (all of them when ``ok``)."""
    problem: AuditProblem | None = None
    first_bad_seq: int | None = None
    """The record the failed check points at: the one that is malformed or out of place, the
    first missing one (truncation), of two records that claim one sequence number the earlier one
    no checkpoint vouches for, or, for a root mismatch (which names no record), the first record
    no verified checkpoint vouches for.
    None when the failure is not about records (a checkpoint's signature, origin or order)."""
    suspect_range: tuple[int, int] | None = None
    """``[start, end)``: every record before ``start`` is vouched for by a verified checkpoint,
    and the first tampered record lies in this range (it contains ``first_bad_seq``). Records in
    it are each well-formed, so for a root mismatch the data cannot say which one changed."""
    signed_size: int = 0
    """Records ``[0, signed_size)`` are covered by a verified checkpoint; later ones by none."""
    proven_size: int | None = None
    """Size of the newest external checkpoint, verified against the log (None if there is none)."""
    complete: bool = False
    completeness: str = UNPROVEN_FAILED

    def require_ok(self) -> None:
        """Raise ``IntegrityError`` unless the log verified (completeness is not checked)."""
        if not self.ok:
            raise IntegrityError(f"audit log failed verification: {self.problem}")


@dataclass(frozen=True, slots=True)
class _Head:
    """A verified checkpoint and where it came from."""

    checkpoint: Checkpoint
    external: bool


class _Failed(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(
        self, problem: AuditProblem, first_bad: int | None = None, span: range | None = None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.first_bad = first_bad
        self.span = span


def _open_heads(
    texts: Sequence[str], verifiers: Sequence[NoteVerifier], origin: str, *, external: bool
) -> list[_Head]:
    kind = "external" if external else "checkpoint"
    heads: list[_Head] = []
    for text in texts:
        try:
            checkpoint = open_checkpoint(text, verifiers)
        except SecurityError:
            raise _Failed(AuditProblem(f"{kind}.signature")) from None
        if checkpoint.origin != origin:
            raise _Failed(AuditProblem(f"{kind}.origin"))
        if heads and checkpoint.size < heads[-1].checkpoint.size:
            raise _Failed(AuditProblem(f"{kind}.order"))
        heads.append(_Head(checkpoint, external))
    return heads


class _Run:
    """State of one streaming pass: the tree so far and the checkpoints still to meet."""

    def __init__(self, heads: list[_Head]) -> None:
        self.tree = TreeBuilder()
        self.heads = sorted(heads, key=lambda h: (h.checkpoint.size, h.external))
        self.next_head = 0
        self.signed_size = 0

    def check_heads_at_current_size(self) -> None:
        """Compare every checkpoint of exactly the current size with the recomputed root."""
        size = self.tree.size
        root: bytes | None = None
        while self.next_head < len(self.heads):
            head = self.heads[self.next_head]
            if head.checkpoint.size != size:
                return
            root = self.tree.root() if root is None else root
            if head.checkpoint.root != root:
                problem = (
                    AuditProblem.EXTERNAL_ROOT_MISMATCH
                    if head.external
                    else AuditProblem.CHECKPOINT_ROOT_MISMATCH
                )
                if self.signed_size == size:  # a fork: another checkpoint of this size verified
                    raise _Failed(problem)
                raise _Failed(problem, self.signed_size, self.unvouched(size))
            self.signed_size = size
            self.next_head += 1

    def unvouched(self, end: int) -> range:
        """Records from the last verified checkpoint to ``end``: where a first tampering hides."""
        return range(self.signed_size, end)

    def add(self, data: bytes) -> None:
        position = self.tree.size
        span = self.unvouched(position + 1)
        try:
            record = AuditRecord.from_canonical(data)
        except IntegrityError:
            raise _Failed(AuditProblem.RECORD_UNPARSEABLE, position, span) from None
        if record.seq > position:
            raise _Failed(AuditProblem.SEQUENCE_GAP, position, span)
        if record.seq < position:
            # Two records claim ``seq``; either may be the forgery, unless a verified checkpoint
            # already vouches for the first one.
            first = position if record.seq < self.signed_size else record.seq
            raise _Failed(AuditProblem.SEQUENCE_REPEAT, first, span)
        self.tree.append(hash_leaf(data))

    def check_nothing_beyond_end(self) -> None:
        if self.next_head < len(self.heads):
            head = self.heads[self.next_head]
            problem = (
                AuditProblem.EXTERNAL_TRUNCATED
                if head.external
                else AuditProblem.CHECKPOINT_BEYOND_LOG
            )
            raise _Failed(problem, self.tree.size, self.unvouched(head.checkpoint.size))


def verify_log(
    records: Iterable[bytes],
    checkpoints: Sequence[str],
    external: Sequence[str],
    verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
) -> AuditVerification:
    """Verify a whole audit log.

    ``records`` are the stored canonical records in sequence order (an iterator is fine: it is
    read once); ``checkpoints`` the primary store's signed checkpoints and ``external`` the second
    sink's, each oldest first; ``verifiers`` the trusted checkpoint keys; ``origin`` the log's
    name, which every checkpoint must carry. Signatures are checked before any record is read.
    """
    run: _Run | None = None
    try:
        heads = _open_heads(checkpoints, verifiers, origin, external=False)
        heads += _open_heads(external, verifiers, origin, external=True)
        run = _Run(heads)
        for data in records:
            run.check_heads_at_current_size()
            run.add(data)
        run.check_heads_at_current_size()
        run.check_nothing_beyond_end()
    except _Failed as failure:
        return _failed(failure, run)
    return _passed(run, [h for h in heads if h.external])


def _failed(failure: _Failed, run: _Run | None) -> AuditVerification:
    span = failure.span
    return AuditVerification(
        ok=False,
        records_checked=0 if run is None else run.tree.size,
        problem=failure.problem,
        first_bad_seq=failure.first_bad,
        suspect_range=None if span is None else (span.start, span.stop),
        signed_size=0 if run is None else run.signed_size,
    )


def _passed(run: _Run, external: list[_Head]) -> AuditVerification:
    size = run.tree.size
    proven = max((h.checkpoint.size for h in external), default=None)
    if proven is None:
        completeness = UNPROVEN_NO_EXTERNAL
    elif proven < size:
        completeness = (
            "cannot be proven: no external checkpoint newer than the log's end "
            f"(proven up to size {proven} of {size})"
        )
    else:
        completeness = f"proven up to size {size} by external checkpoint"
    return AuditVerification(
        ok=True,
        records_checked=size,
        signed_size=run.signed_size,
        proven_size=proven,
        complete=proven == size,
        completeness=completeness,
    )
