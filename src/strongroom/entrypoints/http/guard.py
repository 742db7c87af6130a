"""The outermost ASGI layer: every HTTP request passes through ``Guard`` exactly once.

It owns what must hold for *every* request, whatever route (or no route) answers it:

* **One audit record per request, durable before the response.** Handlers (and the
  authenticator) fill the request's ``RequestLog`` (who, what, which model version, input
  HMAC, reason); when the application starts its response, the guard holds the response start,
  submits the record to the audit writer and waits until it is committed, then sends. If the
  record cannot be made durable (``AuditUnavailableError``, or no confirmation in time) the
  client gets 503 instead of the application's answer: nothing is served unaudited (fail
  closed).
* **Errors as problem+json**, never a stack trace: a ``StrongroomError`` or routing
  ``HTTPException`` escaping a handler becomes its problem (``problems``); anything else a
  logged 500.
* **Body limits before reading**: a ``Content-Length`` over the route's limit is answered 413
  without reading a byte; a chunked body is counted as it arrives and cut off at the limit.
  The whole body must arrive within ``body_timeout`` (slow senders get 408).
* **Security headers** on every response (HSTS over TLS, ``no-store``, ``nosniff``, a CSP that
  allows nothing, no framing, no referrer) and ``X-Request-Id``.

A plain ASGI class rather than Starlette middleware: one layer, no per-request task, and it
sees the raw ``http.response.start`` it must hold back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from strongroom.core.audit.record import AuditEvent, AuditRecord, DetailValue, Outcome, bounded_text
from strongroom.core.policy.conditions import denial_reason
from strongroom.core.policy.forwarded import ClientResolver, ResolvedClient
from strongroom.core.policy.network import NetworkRules
from strongroom.core.types import Clock
from strongroom.entrypoints.http import problems
from strongroom.errors import AuditUnavailableError, ForbiddenError, StrongroomError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AuditConfirm = Callable[[AuditEvent], "asyncio.Future[AuditRecord]"]
"""Submits a record and returns a future that resolves once it is durable, and fails with
``AuditUnavailableError`` if it cannot be made durable or is not confirmed in time."""

REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
LOG_KEY: Final = "strongroom.log"
CLIENT_KEY: Final = "strongroom.client"
"""The ``ResolvedClient`` of the request (``access.client_ip`` reads it)."""
_LOG: Final = logging.getLogger("strongroom.http")

_BASE_HEADERS: Final = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_HSTS: Final = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


@dataclass(slots=True)
class RequestLog:
    """What the audit record of this request will say; handlers fill it in as they learn."""

    request_id: str
    action: str
    resource: str
    principal: str | None = None
    model_version: int | None = None
    manifest_digest: str | None = None
    input_hmac: str | None = None
    reason: str | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)
    headers: list[tuple[bytes, bytes]] | None = None
    """Extra response headers (``RateLimit-*``), added by the guard to whatever is sent."""
    releases: list[Callable[[], None]] | None = None
    """Slots taken for this request (load shedding), given back when the exchange ends."""

    def on_exit(self, release: Callable[[], None]) -> None:
        if self.releases is None:
            self.releases = [release]
        else:
            self.releases.append(release)


def request_log(scope: Scope) -> RequestLog:
    """The ``RequestLog`` the guard attached to this request."""
    log: RequestLog = scope[LOG_KEY]
    return log


def outcome_of(status: int) -> Outcome:
    if status < 400:  # noqa: PLR2004
        return Outcome.ALLOWED
    if status in {401, 403, 429}:
        return Outcome.DENIED
    return Outcome.ERROR


@dataclass(frozen=True, slots=True)
class GuardSettings:
    max_body_bytes: int
    max_upload_bytes: int
    body_timeout_s: float
    upload_paths: re.Pattern[str] = re.compile(r"^/v1/models/[^/]+/versions$")
    resolver: ClientResolver = field(default_factory=ClientResolver)
    """Who the client is: the transport peer, or what trusted proxies say it is."""
    network: NetworkRules | None = None
    """Global allow and deny lists, checked before any route runs (None: off)."""


class BodyTooLarge(Exception):  # noqa: N818 - control flow inside the guard
    pass


class BodyTimeout(Exception):  # noqa: N818 - control flow inside the guard
    pass


class ClientGone(Exception):  # noqa: N818 - control flow inside the guard
    """The client disconnected before its body was complete."""


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: GuardSettings,
        confirm: AuditConfirm,
        clock: Clock,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self._app = app
        self._settings = settings
        self._confirm = confirm
        self._healthy = healthy
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        await _Exchange(self, scope, receive, send).run()


class _Exchange:
    """One request/response exchange through the guard."""

    def __init__(self, guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard = guard
        self.scope = scope
        self.raw_receive = receive
        self.raw_send = send
        self.started_ns = time.perf_counter_ns()
        self.time = guard._clock()  # noqa: SLF001 - the exchange is part of the guard
        self.response_started = False
        self.swallow = False
        self.received = 0
        self.deadline = time.monotonic() + guard._settings.body_timeout_s  # noqa: SLF001
        self.body_complete = self.expired = self.waiting = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None
        self.client: ResolvedClient | None = None
        path = scope.get("path", "")
        self.log = RequestLog(
            request_id=_request_id(scope),
            action="http.request",
            resource=bounded_text(f"{scope.get('method', '?')} {path}", 512),
        )
        scope[LOG_KEY] = self.log
        scope.setdefault("state", {})
        scope["app"] = guard  # routing raises HTTPException (404/405) instead of sending text
        method = scope.get("method", "")
        settings = guard._settings  # noqa: SLF001
        upload = method in {"POST", "PUT"} and settings.upload_paths.match(path) is not None
        self.limit = settings.max_upload_bytes if upload else settings.max_body_bytes

    async def run(self) -> None:
        try:
            await self.exchange()
        finally:
            self.disarm()
            if self.log.releases:
                for release in self.log.releases:
                    release()

    async def exchange(self) -> None:
        if not self.guard._healthy():  # noqa: SLF001
            # Fail closed *before* the handler runs, so that no action (a promote, a key
            # issued) happens while it cannot be recorded. (The record of this refusal fails
            # too, which the writer counts for its outage record; the client gets 503.)
            await self.answer(problems.AUDIT_UNAVAILABLE)
            return
        try:
            self.admit_client()
        except StrongroomError as exc:  # a malformed proxy header (400), a denied network (403)
            await self.answer(problems.problem_for(exc))
            return
        declared = _content_length(self.scope)
        if declared is not None and declared > self.limit:
            await self.answer(problems.too_large(self.limit))
            return
        if declared is None and header(self.scope, b"content-length") is not None:
            await self.answer(problems.Problem(400, "http.bad_request", "invalid Content-Length"))
            return
        try:
            await self.guard._app(self.scope, self.receive, self.send)  # noqa: SLF001
        except BodyTooLarge:
            await self.answer_unless_started(problems.too_large(self.limit))
        except BodyTimeout:
            await self.answer_unless_started(
                problems.Problem(408, "http.timeout", "the request body did not arrive in time")
            )
        except ClientGone:  # nobody reads the answer, but the record says what happened
            await self.answer_unless_started(
                problems.Problem(400, "http.client_gone", "the client disconnected mid-body")
            )
        except Exception as exc:  # noqa: BLE001 - the error boundary of the server
            if self.response_started:
                _LOG.error("error after the response started", exc_info=exc)
                return
            await self.answer(problems.problem_for(exc))

    def admit_client(self) -> None:
        """Resolve the client's address (once, for every later check and the audit record) and
        apply the global network rules to it."""
        settings = self.guard._settings  # noqa: SLF001
        peer = self.scope.get("client")
        client = settings.resolver.resolve(
            None if not peer else str(peer[0]), self.scope.get("headers", ())
        )
        self.client = client
        self.scope[CLIENT_KEY] = client
        if settings.network is not None:
            try:
                settings.network.check(client.address)
            except ForbiddenError as exc:
                reason = denial_reason(exc)
                self.log.details["denial"] = reason.value if reason else "forbidden"
                raise

    async def answer_unless_started(self, problem: problems.Problem) -> None:
        if not self.response_started:
            await self.answer(problem)

    async def answer(self, problem: problems.Problem) -> None:
        if self.log.reason is None:
            self.log.reason = problem.code
        await problem.response(self.log.request_id)(self.scope, self.receive, self.send)

    # --- receive: body limit and timeout --------------------------------------------------------
    #
    # One timer per exchange instead of a timeout scope per ``receive``: it is armed by the first
    # ``receive`` and disarmed when the body is complete. If it fires while the application waits
    # for body bytes, the task is cancelled and that ``receive`` raises ``BodyTimeout``; if it
    # fires in between, the next ``receive`` does.

    async def receive(self) -> Message:
        if self.body_complete:  # after the body (a disconnect listener): no deadline
            return await self.raw_receive()
        if self.timer is None:
            self.arm()
        if self.expired:
            raise BodyTimeout
        self.waiting = True
        try:
            message = await self.raw_receive()
        except asyncio.CancelledError:
            if self.cancelled_by_timer():
                raise BodyTimeout from None
            raise
        finally:
            self.waiting = False
        self.count(message)
        return message

    def arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            return
        self.task = asyncio.current_task()
        self.timer = asyncio.get_running_loop().call_later(remaining, self.expire)

    def count(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge
            if not message.get("more_body", False):
                self.body_complete = True
                self.disarm()
        elif kind == "http.disconnect":
            raise ClientGone

    def cancelled_by_timer(self) -> bool:
        """True, and the cancellation withdrawn, when it was this exchange's body timer's."""
        return self.expired and self.task is not None and self.task.uncancel() == 0

    def expire(self) -> None:
        self.expired = True
        if self.waiting and self.task is not None:
            self.task.cancel()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    # --- send: audit first, then the response ----------------------------------------------------

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self.response_started:
                raise RuntimeError("the response already started")
            self.response_started = True
            await self.start(message)
        elif not self.swallow:
            await self.raw_send(message)

    async def start(self, message: Message) -> None:
        status = int(message["status"])
        try:
            await self.record(status)
        except AuditUnavailableError:
            self.swallow = True  # the application's body is dropped: 503 instead
            problem = problems.AUDIT_UNAVAILABLE
            body = problem.body(self.log.request_id)
            headers = [
                (b"content-type", problems.PROBLEM_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", problems.RETRY_AFTER_S.encode()),
            ]
            await self.raw_send(
                {"type": "http.response.start", "status": 503, "headers": self.headers(headers)}
            )
            await self.raw_send({"type": "http.response.body", "body": body})
            return
        message["headers"] = self.headers(list(message.get("headers", [])))
        await self.raw_send(message)

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        present = {name.lower() for name, _ in headers}
        headers.extend(h for h in _BASE_HEADERS if h[0] not in present)
        if self.log.headers:
            headers.extend(h for h in self.log.headers if h[0] not in present)
        if self.scope.get("scheme") == "https":
            headers.append(_HSTS)
        headers.append((b"x-request-id", self.log.request_id.encode("ascii")))
        return headers

    async def record(self, status: int) -> None:
        try:
            event = self.event(status)
        except (ValueError, TypeError):
            # A handler put something the record format refuses (too long, too many details):
            # keep the facts that are always well-formed and say what was dropped, rather
            # than answer without a record.
            _LOG.error("audit details of %s were malformed; recorded without them", self.log.action)
            self.log.details = {"details_dropped": True}
            self.log.action = (
                self.log.action if _ACTION_RE.fullmatch(self.log.action) else "http.request"
            )
            event = self.event(status)
        try:
            await self.guard._confirm(event)  # noqa: SLF001 - resolves, fails or times out
        except AuditUnavailableError:
            raise
        except StrongroomError as exc:
            _LOG.error("audit record refused: %s", exc.code)
            raise AuditUnavailableError("audit record refused") from exc

    def event(self, status: int) -> AuditEvent:
        log = self.log
        details = dict(log.details)
        details["status"] = status
        client_address = self.client_address(details)
        return AuditEvent(
            time=self.time,
            principal=log.principal,
            action=log.action,
            resource=log.resource,
            outcome=outcome_of(status),
            request_id=log.request_id,
            reason=log.reason if status >= 400 else None,  # noqa: PLR2004
            model_version=log.model_version,
            manifest_digest=log.manifest_digest,
            client_address=client_address,
            input_hmac=log.input_hmac,
            latency_us=(time.perf_counter_ns() - self.started_ns) // 1000,
            details=details,
        )

    def client_address(self, details: dict[str, DetailValue]) -> str | None:
        """The address the record names: the resolved client (and, when a proxy named it, the
        proxy as ``peer``), else the raw transport peer (e.g. a form the resolver refused)."""
        client = self.client
        if client is not None and client.address is not None:
            if client.forwarded and client.peer is not None:
                details["peer"] = client.peer.compressed
            return client.address.compressed
        peer = self.scope.get("client")
        return bounded_text(str(peer[0]), 128) if peer else None


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    if value is None or not value.isdigit() or len(value) > 18:  # noqa: PLR2004
        return None
    return int(value)


class RequestIds:
    """Unique request ids without a system call per request: a random per-process prefix
    (64 bits, drawn once) and a counter. Ids are for correlation, not secrets."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


_IDS: Final = RequestIds()


def _request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given is not None:
        text = given.decode("latin-1")
        if REQUEST_ID_RE.fullmatch(text):
            return text
    return _IDS.next()
