"""AuditGate: the server's asyncio side of the audit writer (batched wake-ups, deadlines)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome
from strongroom.entrypoints.http import app as app_module
from strongroom.entrypoints.http.app import AuditGate
from strongroom.errors import AuditUnavailableError
from strongroom.services.audit import AuditWriter, Completion

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        time=NOW,
        principal=None,
        action="model.predict",
        resource="model:m",
        outcome=Outcome.ALLOWED,
        request_id=f"r{n}",
    )


class FakeWriter:
    """Keeps what it is given; the test decides when (and on which thread) to complete."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.queued: list[tuple[AuditEvent, Completion]] = []
        self.healthy = True

    def enqueue(self, event: AuditEvent, completion: Completion) -> None:
        if self.refuse:
            completion.set_exception(AuditUnavailableError("the audit log is unavailable"))
            return
        self.queued.append((event, completion))


def _gate(writer: FakeWriter, **kwargs: Any) -> AuditGate:
    gate = AuditGate(lambda: cast("AuditWriter", writer), **kwargs)
    gate.open()
    return gate


def test_records_completed_on_another_thread_resolve_their_own_waiters() -> None:
    writer = FakeWriter()
    gate = _gate(writer)

    async def scenario() -> list[AuditRecord]:
        waiters = [gate.confirm(_event(n)) for n in range(5)]

        def complete() -> None:  # the writer's thread completes the batch in one go
            for seq, (event, completion) in enumerate(writer.queued):
                completion.set_result(event.sequenced(seq))

        thread = threading.Thread(target=complete)
        thread.start()
        records = await asyncio.wait_for(asyncio.gather(*waiters), 5)
        thread.join()
        return list(records)

    records = asyncio.run(scenario())
    assert [r.request_id for r in records] == [f"r{n}" for n in range(5)]
    assert [r.seq for r in records] == list(range(5))


def test_a_failed_record_fails_only_its_waiter() -> None:
    writer = FakeWriter()
    gate = _gate(writer)

    async def scenario() -> tuple[AuditRecord, BaseException | None]:
        ok, bad = gate.confirm(_event(0)), gate.confirm(_event(1))
        (event, first), (_, second) = writer.queued
        first.set_result(event.sequenced(0))
        second.set_exception(AuditUnavailableError("down"))
        assert first.done() and second.done()
        record = await asyncio.wait_for(ok, 5)
        with pytest.raises(AuditUnavailableError):
            await asyncio.wait_for(bad, 5)
        return record, None

    record, _ = asyncio.run(scenario())
    assert record.request_id == "r0"


def test_an_event_refused_at_once_fails_its_waiter() -> None:
    gate = _gate(FakeWriter(refuse=True))

    async def scenario() -> None:
        with pytest.raises(AuditUnavailableError):
            await asyncio.wait_for(gate.confirm(_event(0)), 5)

    asyncio.run(scenario())


def test_without_a_writer_every_confirmation_fails() -> None:
    gate = AuditGate(lambda: cast("AuditWriter", FakeWriter()))  # never opened

    async def scenario() -> None:
        with pytest.raises(AuditUnavailableError, match="not running"):
            await gate.confirm(_event(0))

    asyncio.run(scenario())
    assert not gate.healthy()


def test_an_unconfirmed_record_times_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app_module, "SWEEP_S", 0.02)
    writer = FakeWriter()
    gate = _gate(writer, timeout_s=0.05)

    async def scenario() -> None:
        late = gate.confirm(_event(0))
        answered = gate.confirm(_event(1))
        event, completion = writer.queued[1]
        completion.set_result(event.sequenced(1))
        assert (await asyncio.wait_for(answered, 5)).request_id == "r1"
        with pytest.raises(AuditUnavailableError, match="in time"):
            await asyncio.wait_for(late, 5)  # the bound only stops a broken gate hanging
        # A result that arrives after the deadline changes nothing: the waiter keeps its error.
        event, completion = writer.queued[0]
        completion.set_result(event.sequenced(0))
        resolved = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(resolved.set_result, None)  # after the wake-up
        await resolved
        assert isinstance(late.exception(), AuditUnavailableError)

    asyncio.run(scenario())
    assert any("did not confirm a record in time" in r.getMessage() for r in caplog.records)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AuditGate(lambda: cast("AuditWriter", FakeWriter()), timeout_s=0)
