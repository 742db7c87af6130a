"""The Guard: audit before response, fail closed, body limits, errors, security headers."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from strongroom.core.audit.record import AuditEvent, AuditRecord, Outcome
from strongroom.entrypoints.http.guard import Guard, GuardSettings, request_log
from strongroom.errors import AuditUnavailableError, ForbiddenError, InvalidInputError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class RecordingAudit:
    """A fake audit sink: records events; can fail; can hold confirmation until released."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False
        self.sent_before_durable = False
        self.pending: list[Future[AuditRecord]] = []
        self.hold = False
        self.held: asyncio.Event | None = None

    def submit(self, event: AuditEvent) -> Future[AuditRecord]:
        future: Future[AuditRecord] = Future()
        if self.fail:
            future.set_exception(AuditUnavailableError("down"))
            return future
        self.events.append(event)
        if self.hold:
            self.pending.append(future)
            if self.held is not None:
                self.held.set()
        else:
            future.set_result(event.sequenced(len(self.events) - 1))
        return future


async def _echo(request: Request) -> Response:
    log = request_log(request.scope)
    log.action = "test.echo"
    body = await request.body()
    return Response(body, media_type="application/octet-stream")


async def _boom(request: Request) -> Response:
    raise RuntimeError("secret internal detail /etc/passwd")


async def _forbidden(request: Request) -> Response:
    raise ForbiddenError


async def _invalid(request: Request) -> Response:
    raise InvalidInputError("field x is wrong")


def _guard(audit: RecordingAudit, **settings: Any) -> Guard:
    router = Router(
        routes=[
            Route("/echo", _echo, methods=["POST"]),
            Route("/boom", _boom),
            Route("/forbidden", _forbidden),
            Route("/invalid", _invalid),
            Route("/v1/models/m/versions", _echo, methods=["POST"]),
        ]
    )
    values = {"max_body_bytes": 16, "max_upload_bytes": 64, "body_timeout_s": 5.0} | settings
    return Guard(
        router,
        settings=GuardSettings(**values),
        confirm=lambda event: asyncio.wrap_future(audit.submit(event)),
        clock=lambda: NOW,
    )


class Exchange:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.sent: list[dict[str, Any]] = []
        self.received = 0
        self.audit: RecordingAudit | None = None

    async def run(
        self,
        method: str,
        path: str,
        body: bytes | list[bytes] = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        stall: bool = False,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        chunks = body if isinstance(body, list) else [body]
        if headers is None and not isinstance(body, list):
            headers = [(b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers or [],
            "client": ("127.0.0.1", 5000),
            "scheme": "https",
            "http_version": "1.1",
        }

        async def receive() -> dict[str, Any]:
            if stall and self.received >= len(chunks):
                await asyncio.Event().wait()  # a client that never sends the rest
            self.received += 1
            index = self.received - 1
            if index >= len(chunks):
                return {"type": "http.disconnect"}
            return {
                "type": "http.request",
                "body": chunks[index],
                "more_body": stall or index < len(chunks) - 1,
            }

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.audit and not self.audit.fail:
                # every record is durable before the response starts
                assert self.audit.events, "response started before any audit record"
            self.sent.append(message)

        await self.guard(scope, receive, send)
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        content = b"".join(
            m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"
        )
        return start["status"], dict(start["headers"]), content


def _run(audit: RecordingAudit, *args: Any, guard: Guard | None = None, **kwargs: Any) -> Any:
    exchange = Exchange(guard or _guard(audit))
    exchange.audit = audit
    return asyncio.run(exchange.run(*args, **kwargs)), exchange


def test_one_durable_record_per_request_with_security_headers() -> None:
    audit = RecordingAudit()
    (status, headers, body), _ = _run(audit, "POST", "/echo", b"hello")
    assert (status, body) == (200, b"hello")
    assert len(audit.events) == 1
    event = audit.events[0]
    assert event.action == "test.echo"
    assert event.outcome is Outcome.ALLOWED
    assert event.client_address == "127.0.0.1"
    assert event.details["status"] == 200
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"content-security-policy"].startswith(b"default-src 'none'")
    assert headers[b"strict-transport-security"].startswith(b"max-age=")
    assert headers[b"x-request-id"].decode() == event.request_id


def test_response_waits_for_the_audit_confirmation() -> None:
    audit = RecordingAudit()
    audit.hold = True
    exchange = Exchange(_guard(audit))

    async def scenario() -> None:
        audit.held = asyncio.Event()
        task = asyncio.create_task(exchange.run("POST", "/echo", b"x"))
        await audit.held.wait()
        # Not synchronisation: give a guard that wrongly skipped the wait every chance to send.
        for _ in range(20):
            await asyncio.sleep(0)
        assert not any(m["type"] == "http.response.start" for m in exchange.sent)
        audit.pending[0].set_result(audit.events[0].sequenced(0))
        status, _, _ = await task
        assert status == 200

    asyncio.run(scenario())


def test_audit_failure_answers_503_and_drops_the_application_body() -> None:
    audit = RecordingAudit()
    audit.fail = True
    (status, headers, body), _ = _run(audit, "POST", "/echo", b"secret-output")
    assert status == 503
    assert b"secret-output" not in body
    assert headers[b"content-type"] == b"application/problem+json"
    assert orjson.loads(body)["code"] == "audit.unavailable"
    assert headers[b"retry-after"] == b"5"


def test_declared_oversize_body_is_refused_before_reading() -> None:
    audit = RecordingAudit()
    (status, _, body), exchange = _run(audit, "POST", "/echo", b"x" * 17)
    assert status == 413
    assert exchange.received == 0
    assert orjson.loads(body)["code"] == "input.too_large"
    assert audit.events[0].reason == "input.too_large"


def test_upload_route_has_its_own_limit() -> None:
    audit = RecordingAudit()
    (status, _, _), _ = _run(audit, "POST", "/v1/models/m/versions", b"x" * 40)
    assert status == 200
    (status, _, _), _ = _run(audit, "POST", "/v1/models/m/versions", b"x" * 65)
    assert status == 413


def test_chunked_body_is_cut_off_at_the_limit() -> None:
    audit = RecordingAudit()
    chunks = [b"x" * 10, b"y" * 10, b"z" * 10]
    (status, _, _), exchange = _run(audit, "POST", "/echo", chunks, headers=[])
    assert status == 413
    assert exchange.received == 2


def test_slow_body_gets_408() -> None:
    audit = RecordingAudit()
    guard = _guard(audit, body_timeout_s=0.05)
    (status, _, body), _ = _run(audit, "POST", "/echo", [b"x"], headers=[], stall=True, guard=guard)
    assert status == 408
    assert orjson.loads(body)["code"] == "http.timeout"


def test_unexpected_error_is_an_opaque_500() -> None:
    audit = RecordingAudit()
    (status, _, body), _ = _run(audit, "GET", "/boom")
    assert status == 500
    assert b"passwd" not in body
    assert b"Traceback" not in body
    assert b"RuntimeError" not in body
    assert audit.events[0].outcome is Outcome.ERROR


def test_forbidden_and_invalid_map_to_problems() -> None:
    audit = RecordingAudit()
    (status, _, body), _ = _run(audit, "GET", "/forbidden")
    assert status == 403
    assert orjson.loads(body)["detail"] == "forbidden"
    assert audit.events[-1].outcome is Outcome.DENIED
    (status, _, body), _ = _run(audit, "GET", "/invalid")
    assert status == 400
    assert orjson.loads(body)["detail"] == "field x is wrong"


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/nope", 404), ("GET", "/echo", 405)]
)
def test_routing_errors_are_problems_and_audited(method: str, path: str, status: int) -> None:
    audit = RecordingAudit()
    (got, headers, body), _ = _run(audit, method, path)
    assert got == status
    assert headers[b"content-type"] == b"application/problem+json"
    assert orjson.loads(body)["status"] == status
    assert len(audit.events) == 1


def test_client_request_id_is_kept_only_when_well_formed() -> None:
    audit = RecordingAudit()
    _run(audit, "POST", "/echo", b"", headers=[(b"x-request-id", b"abc-123")])
    _run(audit, "POST", "/echo", b"", headers=[(b"x-request-id", b"bad id\n")])
    assert audit.events[0].request_id == "abc-123"
    assert audit.events[1].request_id != "bad id\n"
    assert len(audit.events[1].request_id) == 24


async def _too_much_detail(request: Request) -> Response:
    log = request_log(request.scope)
    log.action = "oauth.token"
    log.details["scope"] = "x" * 5000  # over the record's text limit
    return Response(b"minted")


def test_malformed_details_still_give_exactly_one_record() -> None:
    audit = RecordingAudit()
    router = Router(routes=[Route("/t", _too_much_detail)])
    guard = Guard(
        router,
        settings=GuardSettings(max_body_bytes=16, max_upload_bytes=64, body_timeout_s=5.0),
        confirm=lambda event: asyncio.wrap_future(audit.submit(event)),
        clock=lambda: NOW,
    )
    (status, headers, body), _ = _run(audit, "GET", "/t", guard=guard)
    assert (status, body) == (200, b"minted")
    assert len(audit.events) == 1
    assert audit.events[0].action == "oauth.token"
    assert audit.events[0].details["details_dropped"] is True
    assert headers[b"cache-control"] == b"no-store"


def test_unhealthy_audit_refuses_before_the_handler_runs() -> None:
    audit = RecordingAudit()
    audit.fail = True
    ran: list[bool] = []

    async def action(request: Request) -> Response:
        ran.append(True)
        return Response(b"done")

    guard = Guard(
        Router(routes=[Route("/act", action, methods=["POST"])]),
        settings=GuardSettings(max_body_bytes=16, max_upload_bytes=64, body_timeout_s=5.0),
        confirm=lambda event: asyncio.wrap_future(audit.submit(event)),
        clock=lambda: NOW,
        healthy=lambda: False,
    )
    (status, _, body), _ = _run(audit, "POST", "/act", b"", guard=guard)
    assert status == 503
    assert ran == []
    assert orjson.loads(body)["code"] == "audit.unavailable"


def test_client_that_disconnects_mid_body_is_recorded() -> None:
    audit = RecordingAudit()
    guard = _guard(audit)

    async def gone() -> tuple[int, list[dict[str, Any]]]:
        sent: list[dict[str, Any]] = []
        messages = [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/echo",
            "headers": [],
            "client": ("127.0.0.1", 5000),
            "scheme": "http",
        }
        await guard(scope, receive, send)
        return sent[0]["status"], sent

    status, _ = asyncio.run(gone())
    assert status == 400
    assert [e.reason for e in audit.events] == ["http.client_gone"]


async def _slow_between_reads(request: Request) -> Response:
    """Reads one chunk, then works past the body deadline before reading the rest."""
    stream = request.stream()
    await stream.__anext__()
    loop = asyncio.get_running_loop()
    expired = loop.create_future()
    loop.call_later(0.1, expired.set_result, None)
    await expired  # the deadline (0.05 s) passes while no receive is pending
    async for _ in stream:
        pass
    return Response(b"never")


def test_body_deadline_that_passes_between_reads_fails_the_next_read() -> None:
    audit = RecordingAudit()
    guard = Guard(
        Router(routes=[Route("/slow", _slow_between_reads, methods=["POST"])]),
        settings=GuardSettings(max_body_bytes=16, max_upload_bytes=64, body_timeout_s=0.05),
        confirm=lambda event: asyncio.wrap_future(audit.submit(event)),
        clock=lambda: NOW,
    )
    (status, _, body), _ = _run(audit, "POST", "/slow", [b"a", b"b"], headers=[], guard=guard)
    assert status == 408
    assert orjson.loads(body)["code"] == "http.timeout"
    assert len(audit.events) == 1
