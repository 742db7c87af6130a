"""The audit log's writer: durable group commit, no gaps, fail closed, signed checkpoints.

``AuditWriter`` is what every request and admin action goes through (``record`` or ``submit``);
the auditor's side is ``services.audit_reading``. Guarantees the HTTP server and the CLI rely on:

* **Durable before acknowledged.** ``record`` returns only after the record's batch committed in
  the store; ``submit`` returns a ``Future`` that resolves then. One background thread does
  group commit: it takes up to ``max_batch`` queued events, numbers them, and appends them in one
  transaction; events that arrive meanwhile form the next batch. When the previous batch held
  ``k > 1`` events, it lingers up to ``max_delay`` for ``k`` to be queued (the callers of the
  last batch coming back), so a lone caller never waits and a steady crowd waits only for itself.
  Thread-safe; ``submit`` never blocks.
* **No gaps, no lies.** Only the writer thread assigns ``seq`` (``tree.size``). A failed batch
  rolls the ``TreeBuilder`` back to its copy from before the batch and fails every waiter of it;
  nothing is acknowledged that is not committed. A batch that lost a race to another writer of
  the same log (another worker process, the CLI: ``ConflictError``) is renumbered after reading
  the other writer's records and appended again under the store's write lock, so it cannot lose
  twice (``AuditStore.append_rebased``).
* **Fail closed.** After any failure the writer is unhealthy: every new event fails at once with
  ``AuditUnavailableError`` (the server answers 503), queued ones too, and one error is logged
  per outage. Every ``retry_interval`` the thread probes by appending an ``audit.outage`` record
  (when it began, why, how many actions were refused); once that commits the writer is healthy
  again by itself and logs the recovery. So every outage is itself on the record. The exception
  is evidence of tampering (``IntegrityError``: a fork, a record that does not parse, a log
  shorter than what was written), also when a probe finds it: then the writer logs it at
  CRITICAL, stops probing (its thread sleeps until ``close``) and stays closed until restarted,
  since start-up re-verifies the log.
* **Close.** ``close`` writes what is queued and a last checkpoint. If the thread does not stop
  within its timeout (a hung store), every still-queued event fails with
  ``AuditUnavailableError`` at once rather than at its caller's own timeout.
* **Checkpoints.** Every ``checkpoint_every`` records or ``checkpoint_interval`` seconds, and on
  ``close``, the writer signs a checkpoint, saves it with the tree state in the store, then
  publishes it to the external sink. A sink failure is logged and retried every
  ``retry_interval`` without stopping requests *until* more than ``max_unpublished`` records
  are covered by no published checkpoint; from then on the writer fails closed, because those
  are the records an insider could drop without a trace (``None`` disables the bound). If the
  sink could not be read at start-up, the window counts from then, and the log is compared with
  ``sink.latest()`` before the first publication (``audit_reading.check_external``): nothing is
  published, and the window not moved, until that comparison has passed.
* **Start-up.** ``start`` rebuilds the tree (``audit_reading.resume``: by re-hashing every
  stored record, or from the saved tree state with ``trust_saved_tree``) and refuses to start
  with ``IntegrityError`` if a checkpoint does not verify, a record sits at the wrong place or
  (after the newest checkpoint) does not parse, a root disagrees with the newest stored or
  external checkpoint, or the log is shorter than either (or than a trusted saved tree).
  ``start`` is atomic: a concurrent second call raises ``RuntimeError``; a failed one may be
  retried.

A ``record`` that times out may still be committed later: the caller answered 503 for an action
whose record says otherwise. The log may hold a record too many, never one too few.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple, Protocol, Self

from strongroom.core.audit.checkpoint import sign_checkpoint
from strongroom.core.audit.merkle import TreeBuilder
from strongroom.core.audit.ports import (
    AuditStore,
    CheckpointSink,
    StoredRecord,
    checkpoint_size,
)
from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome, format_time
from strongroom.core.crypto.notes import NoteSigner, NoteVerifier
from strongroom.core.types import Clock
from strongroom.errors import AuditUnavailableError, ConflictError, SecurityError
from strongroom.services.audit_reading import (
    LOG_RESOURCE,
    catch_up_after_conflict,
    catch_up_rows,
    check_external,
    resume,
)

DEFAULT_TIMEOUT_S: Final = 5.0
_LOGGER: Final = "strongroom.audit"


# --- the writer ---------------------------------------------------------------------------------


class Completion(Protocol):
    """Told the fate of one queued event, once, by the writer: its durable record, or the
    ``AuditUnavailableError`` that fails it. ``concurrent.futures.Future`` is one (``submit``);
    the HTTP server passes its own, which resolves asyncio futures in batches (``enqueue``).
    ``set_result`` and ``set_exception`` are called on the writer's thread, or on the caller's
    when the event is refused at once; ``done`` tells whether either was called."""

    def done(self) -> bool: ...

    def set_result(self, result: AuditRecord, /) -> None: ...

    def set_exception(self, exception: BaseException | None, /) -> None: ...


class _Item(NamedTuple):
    event: AuditEvent
    future: Completion


@dataclass(frozen=True, slots=True)
class _Outage:
    cause: str
    since: datetime


def _fail(futures: Iterable[Completion], message: str) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(AuditUnavailableError(message))


class AuditWriter:
    """Group-commit, fail-closed writer of one audit log; see the module docstring."""

    def __init__(
        self,
        store: AuditStore,
        sink: CheckpointSink,
        signer: NoteSigner,
        origin: str,
        clock: Clock,
        *,
        verifiers: Sequence[NoteVerifier] = (),
        max_batch: int = 64,
        max_delay: float = 0.002,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        retry_interval: float = 1.0,
        max_pending: int = 10_000,
        max_unpublished: int | None = 10_000,
        trust_saved_tree: bool = False,
    ) -> None:
        self._verifiers = tuple(verifiers) or (signer.verifier,)
        if signer.verifier not in self._verifiers:
            raise ValueError("the writer's own checkpoint key must be among the trusted keys")
        if min(max_batch, checkpoint_every, max_pending) < 1 or max_delay < 0:
            raise ValueError("batch, checkpoint and queue sizes are positive")
        if max_unpublished is not None and max_unpublished < checkpoint_every:
            raise ValueError("max_unpublished cannot be below checkpoint_every")
        if min(checkpoint_interval, retry_interval) <= 0:
            raise ValueError("intervals are positive")
        self._store, self._sink, self._signer = store, sink, signer
        self._origin, self._clock = origin, clock
        self._max_batch, self._max_delay, self._max_pending = max_batch, max_delay, max_pending
        self._every, self._interval = checkpoint_every, checkpoint_interval
        self._retry, self._max_unpublished = retry_interval, max_unpublished
        self._trust_saved_tree = trust_saved_tree
        self._log = logging.getLogger(_LOGGER)
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._state = "new"  # -> starting -> running -> closing -> closed; guarded by _cond
        self._healthy = False  # written by the writer thread under _cond
        self._refused = 0
        self._linger_target = 0  # guarded by _cond: the queue length that ends a linger
        self._thread: threading.Thread | None = None
        # Below: touched only by the writer thread once it runs.
        self._tree = TreeBuilder()
        self._last_batch = 0
        self._checkpointed = self._published = 0
        self._checkpoint_at = self._next_publish = self._next_probe = 0.0
        self._unpublished: str | None = None
        self._sink_failing = False
        self._external_checked = False
        self._outage: _Outage | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Resume from the store (``IntegrityError`` if it was tampered with) and start.

        The state is ``starting`` meanwhile, so a concurrent second ``start`` fails at once
        instead of starting a second writer thread; a failed start may be retried.
        """
        with self._cond:
            if self._state != "new":
                raise RuntimeError("an audit writer starts once")
            self._state = "starting"
        try:
            self._resume()
        except BaseException:
            with self._cond:
                if self._state == "starting":
                    self._state = "new"
            raise
        with self._cond:
            if self._state != "starting":  # closed while starting
                return
            self._state, self._healthy = "running", True
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _resume(self) -> None:
        try:
            external, readable = self._sink.latest(), True
        except Exception:  # noqa: BLE001 - an unreachable sink must not stop start-up
            self._log.warning("cannot read the external audit checkpoints", exc_info=True)
            external, readable = None, False
        resumed = resume(
            self._store,
            self._verifiers,
            self._origin,
            external_text=external,
            trust_saved_tree=self._trust_saved_tree,
        )
        # Not compared with the external checkpoints yet: done before the first publication.
        self._external_checked = readable
        self._tree = resumed.tree
        self._checkpointed = 0 if resumed.stored is None else resumed.stored.size
        # An unreadable sink: the window of unpublished records counts from now.
        self._published = resumed.external.size if resumed.external else 0
        self._published = self._published if readable else self._tree.size
        if self._published < self._checkpointed:  # stored, but never published
            self._unpublished = resumed.stored_text
        self._checkpoint_at = time.monotonic()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, a last checkpoint, and stop. Later events are refused."""
        with self._cond:
            if self._state in {"new", "starting"}:
                self._state = "closed"
            if self._state != "running":
                return
            self._state = "closing"
            self._cond.notify_all()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():  # a hung store: nobody may wait on it any longer
            with self._cond:
                left = list(self._queue)
                self._queue.clear()
            _fail((item.future for item in left), "the audit writer did not stop in time")
            self._log.error("the audit writer did not stop within %.1f s", timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def healthy(self) -> bool:
        """True while events are accepted; False when failing closed, or not running."""
        with self._cond:
            return self._healthy and self._state == "running"

    def wait_until_healthy(self, timeout: float) -> bool:
        """Block until healthy (True) or ``timeout`` seconds pass (False): for readiness."""
        with self._cond:
            self._cond.wait_for(lambda: self._healthy or self._state == "closed", timeout)
            return self._healthy and self._state == "running"

    # --- the request path -------------------------------------------------------------------

    def submit(self, event: AuditEvent) -> Future[AuditRecord]:
        """Queue ``event``; the future resolves to its record once durable, or fails with
        ``AuditUnavailableError``. It cannot be cancelled (``asyncio.wrap_future`` works)."""
        future: Future[AuditRecord] = Future()
        future.set_running_or_notify_cancel()  # running: cancel() now always returns False
        self.enqueue(event, future)
        return future

    def enqueue(self, event: AuditEvent, completion: Completion) -> None:
        """``submit`` with the caller's own ``Completion`` (never blocks)."""
        if not isinstance(event, AuditEvent):
            raise TypeError("the audit writer takes AuditEvent objects")
        with self._cond:
            if self._state != "running":
                reason = "the audit writer is not running"
            elif not self._healthy:
                self._refused += 1
                reason = "the audit log is unavailable"
            elif len(self._queue) >= self._max_pending:
                reason = "the audit log is overloaded"
            else:
                self._queue.append(_Item(event, completion))
                if len(self._queue) in {1, self._linger_target}:  # wake an idle or lingering writer
                    self._cond.notify_all()
                return
        _fail([completion], reason)

    def record(self, event: AuditEvent, timeout: float = DEFAULT_TIMEOUT_S) -> AuditRecord:
        """``event`` made durable as the next record; ``AuditUnavailableError`` otherwise."""
        try:
            return self.submit(event).result(timeout)
        except TimeoutError:
            raise AuditUnavailableError(
                "the audit log did not confirm the record in time"
            ) from None

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        closing = False
        self._guarded([], lambda: self._checkpoint_if_due(force=True))
        while not closing:
            batch, closing = self._take(self._idle_timeout())
            self._guarded(batch, functools.partial(self._step, batch))
        if self._healthy:
            self._guarded([], self._final_checkpoint)
        with self._cond:
            self._state, self._healthy = "closed", False
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        _fail((item.future for item in left), "the audit writer is closed")

    def _guarded(self, batch: list[_Item], work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the writer thread must survive anything
            cause = "integrity" if isinstance(exc, SecurityError) else "store_unavailable"
            self._enter_outage(cause, exc)
            _fail((item.future for item in batch), "the audit log is unavailable")

    def _take(self, timeout: float | None) -> tuple[list[_Item], bool]:
        with self._cond:
            if not self._queue and self._state == "running":
                self._cond.wait(timeout)
            target = min(self._max_batch, self._last_batch)
            if self._queue and target > 1 and self._max_delay > 0:
                self._linger_target = target
                deadline = time.monotonic() + self._max_delay
                while len(self._queue) < target and self._state == "running":
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._linger_target = 0
            count = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            return batch, self._state != "running" and not self._queue

    def _idle_timeout(self) -> float | None:
        """Until the next probe (failing), or the next due checkpoint or publication.

        ``None`` (wait for ``close``) after evidence of tampering: nothing is probed then.
        """
        if not self._healthy:
            if self._outage is not None and self._outage.cause == "integrity":
                return None
            deadlines = [self._next_probe]
        else:
            deadlines = [self._next_publish] if self._unpublished is not None else []
            if self._tree.size > self._checkpointed:
                deadlines.append(self._checkpoint_at + self._interval)
        if not deadlines:
            return self._interval
        return max(0.0, min(deadlines) - time.monotonic())

    def _step(self, batch: list[_Item]) -> None:
        if not self._healthy:
            _fail((item.future for item in batch), "the audit log is unavailable")
            self._probe_if_due()
            return
        if batch:
            self._commit(batch)
            self._last_batch = len(batch)
        self._checkpoint_if_due()
        self._publish_if_due()
        if (
            self._max_unpublished is not None
            and self._tree.size - self._published > self._max_unpublished
        ):
            self._enter_outage("sink_unavailable", None)

    def _commit(self, batch: list[_Item]) -> None:
        """Number, append and acknowledge ``batch``, or leave the tree as it was and raise.

        Optimistic first (one short transaction). If another writer appended meanwhile, read its
        records without holding anything, then append rebased under the store's write lock,
        which cannot lose the race again.
        """
        before = self._tree.copy()
        try:
            records = self._sequence(batch)
            self._store.append_batch(records)
        except ConflictError:
            self._tree = before
            records = self._commit_rebased(batch)
        except BaseException:
            self._tree = before
            raise
        for item, record in zip(batch, records, strict=True):
            item.future.set_result(record)

    def _sequence(self, batch: list[_Item]) -> list[AuditRecord]:
        """Give ``batch`` the next sequence numbers and add it to the tree."""
        first = self._tree.size
        records = [item.event.sequenced(first + i) for i, item in enumerate(batch)]
        for record in records:
            self._tree.append(record.leaf_hash())
        return records

    def _commit_rebased(self, batch: list[_Item]) -> list[AuditRecord]:
        catch_up_after_conflict(self._store, self._tree)  # the bulk, without holding the lock
        before = self._tree.copy()
        built: list[AuditRecord] = []

        def build(missed: list[StoredRecord]) -> list[AuditRecord]:
            catch_up_rows(self._tree, missed)  # what was appended since, under the lock
            built[:] = self._sequence(batch)
            return built

        try:
            self._store.append_rebased(self._tree.size, build)
        except BaseException:
            self._tree = before
            raise
        return built

    # --- outages ------------------------------------------------------------------------------

    def _enter_outage(self, cause: str, exc: BaseException | None) -> None:
        with self._cond:
            was_healthy, self._healthy = self._healthy, False
            queued = list(self._queue)
            self._queue.clear()
            if was_healthy:
                self._refused = 0
            self._cond.notify_all()
        _fail((item.future for item in queued), "the audit log is unavailable")
        if not was_healthy:
            return
        self._outage = _Outage(cause, self._clock())
        self._next_probe = time.monotonic() + self._retry
        level = logging.CRITICAL if cause == "integrity" else logging.ERROR
        self._log.log(
            level,
            "audit log unavailable (%s): refusing every audited action until it recovers",
            cause,
            exc_info=exc,
        )

    def _probe_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_probe or self._outage is None or self._outage.cause == "integrity":
            return  # evidence of tampering: stay closed until restarted (and re-verified)
        self._next_probe = now + self._retry
        outage = self._outage
        try:
            catch_up_after_conflict(self._store, self._tree)
            if outage.cause == "sink_unavailable":
                self._checkpoint_if_due(force=True)
                self._publish_if_due(strict=True)
            with self._cond:
                refused = self._refused
            probe = _Item(self._outage_event(outage, refused), Future())
            self._commit([probe])
        except SecurityError as exc:  # tampering found while recovering: stay closed
            self._outage = _Outage("integrity", outage.since)
            self._log.critical(
                "audit log integrity failure while recovering from an outage (%s):"
                " refusing every audited action until restarted",
                outage.cause,
                exc_info=exc,
            )
            return
        except Exception as exc:  # noqa: BLE001 - still down: try again later
            self._log.debug("audit log still unavailable: %s", exc)
            return
        with self._cond:
            self._healthy, refused = True, self._refused
            self._cond.notify_all()
        self._outage = None
        self._log.warning(
            "audit log recovered (%s since %s); %d actions were refused meanwhile",
            outage.cause,
            format_time(outage.since),
            refused,
        )

    def _outage_event(self, outage: _Outage, refused: int) -> AuditEvent:
        return AuditEvent(
            time=self._clock(),
            principal=None,
            action="audit.outage",
            resource=LOG_RESOURCE,
            outcome=Outcome.ERROR,
            reason=f"audit.{outage.cause}",
            request_id="audit-writer",
            details={"since": format_time(outage.since), "refused": refused},
        )

    # --- checkpoints --------------------------------------------------------------------------

    def _checkpoint_if_due(self, *, force: bool = False) -> None:
        size, now = self._tree.size, time.monotonic()
        if size == self._checkpointed:
            return
        recent = now - self._checkpoint_at < self._interval
        if not force and size - self._checkpointed < self._every and recent:
            return
        self._checkpoint_at = now
        text = sign_checkpoint(self._origin, size, self._tree.root(), self._signer)
        self._store.save_checkpoint(size, text, self._tree.nodes)
        self._checkpointed = size
        self._unpublished, self._next_publish = text, now
        self._publish_if_due()

    def _publish_if_due(self, *, strict: bool = False) -> None:
        text = self._unpublished
        if text is None or (not strict and time.monotonic() < self._next_publish):
            return
        try:
            external = None if self._external_checked else self._sink.latest()
        except Exception as exc:
            if strict:
                raise
            self._sink_failed(exc)
            return
        if not self._external_checked:  # the sink was unreadable at start-up
            check_external(self._store, self._tree, external, self._verifiers, self._origin)
            self._external_checked = True
        try:
            self._sink.publish(text)
        except Exception as exc:
            if strict:
                raise
            self._sink_failed(exc)
            return
        self._published, self._unpublished = max(self._published, checkpoint_size(text)), None
        if self._sink_failing:
            self._sink_failing = False
            self._log.warning("the external audit checkpoint sink works again")

    def _sink_failed(self, exc: Exception) -> None:
        self._next_publish = time.monotonic() + self._retry
        if not self._sink_failing or isinstance(exc, SecurityError):
            self._sink_failing = True
            self._log.error("cannot use the external audit checkpoint sink", exc_info=exc)

    def _final_checkpoint(self) -> None:
        self._checkpoint_if_due(force=True)
        self._publish_if_due(strict=True)
