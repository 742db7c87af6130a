"""The ASGI application: settings -> parts -> routes, behind the ``Guard``.

``create_app()`` is the factory uvicorn calls in each worker process (``--factory``); it reads
settings from the environment like the CLI does. ``build_app(parts)`` assembles an app from
already-built ``ServerParts`` (tests build them with fakes).

Start-up (ASGI lifespan), in order: the audit writer starts (it re-verifies the log; a tampered
log stops the worker here), a ``server.start`` record is written (with ``unsafe_plaintext``
when set), every production model is loaded, and a task starts that keeps the warm models in
line with the registry every ``model_refresh_s``. Shutdown stops that task, writes
``server.stop`` and closes the audit writer (which writes a last checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from strongroom import bootstrap
from strongroom.bootstrap import guard as bootstrap_guard
from strongroom.config import Settings, load_settings
from strongroom.core.audit.record import AuditEvent, AuditRecord, DetailValue, Outcome
from strongroom.core.policy.conditions import StepUpSettings
from strongroom.core.policy.forwarded import ClientResolver
from strongroom.core.policy.network import NetworkRules
from strongroom.core.types import Clock
from strongroom.entrypoints.http.access import Access, BearerVerifier
from strongroom.entrypoints.http.guard import ASGIApp, Guard, GuardSettings, Receive, Scope, Send
from strongroom.entrypoints.http.routes.inference import InferenceRoutes
from strongroom.entrypoints.http.routing import Router
from strongroom.errors import AuditUnavailableError
from strongroom.services.audit import AuditWriter
from strongroom.services.identity import IdentityService
from strongroom.services.inference import ModelHost
from strongroom.services.lifecycle import LifecycleService
from strongroom.services.registry import RegistryService
from strongroom.services.request_limits import RequestLimits

if TYPE_CHECKING:  # built by bootstrap; the HTTP layer only calls it
    from strongroom.adapters.identity.token_issuer import TokenIssuer

_LOG: Final = logging.getLogger("strongroom.server")
SERVER_PRINCIPAL: Final = "server"


class AuditGate:
    """The guard's way into the audit log: the running writer, or a refusal (fail closed).

    ``confirm`` hands the event loop an ``asyncio.Future`` per record, without a
    ``concurrent.futures.Future`` in between: the writer thread reports each record to a
    ``_Completion``, which queues it for its loop, and the loop is woken once per batch (one
    ``call_soon_threadsafe``) to resolve them all. Deadlines are enforced here too, for every
    waiter at once: a sweep every ``SWEEP_S`` fails those unconfirmed after ``timeout_s`` with
    ``AuditUnavailableError``, instead of a timer per request.
    """

    def __init__(self, start: Callable[[], AuditWriter], *, timeout_s: float = 5.0) -> None:
        if timeout_s <= 0:
            raise ValueError("the audit confirmation timeout is positive")
        self._start = start
        self._timeout = timeout_s
        self._writer: AuditWriter | None = None
        self._loops: dict[asyncio.AbstractEventLoop, _LoopWaiters] = {}
        self._loops_lock = threading.Lock()

    def open(self) -> AuditWriter:
        self._writer = self._start()
        return self._writer

    def healthy(self) -> bool:
        return self._writer is not None and self._writer.healthy

    def confirm(self, event: AuditEvent) -> asyncio.Future[AuditRecord]:
        """A future on the running loop: ``event``'s record once durable, else
        ``AuditUnavailableError`` (refused, failed, or not confirmed within ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[AuditRecord] = loop.create_future()
        writer = self._writer
        if writer is None:
            waiter.set_exception(AuditUnavailableError("the audit writer is not running"))
            return waiter
        waiters = self._loops.get(loop)
        if waiters is None:
            waiters = self._waiters_of(loop)
        waiters.watch(waiter, loop.time() + self._timeout)
        writer.enqueue(event, _Completion(waiters, waiter))
        return waiter

    def _waiters_of(self, loop: asyncio.AbstractEventLoop) -> _LoopWaiters:
        with self._loops_lock:
            for other in [other for other in self._loops if other.is_closed()]:
                del self._loops[other]
            return self._loops.setdefault(loop, _LoopWaiters(loop))

    def record(self, event: AuditEvent) -> AuditRecord:
        if self._writer is None:
            raise AuditUnavailableError("the audit writer is not running")
        return self._writer.record(event)


SWEEP_S: Final = 0.5
"""How often unconfirmed audit records are checked against their deadline."""
_TIMED_OUT: Final = "the audit log did not confirm a record in time"


class _LoopWaiters:
    """The waiters of one event loop: results the writer reported, and deadlines."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[AuditRecord], Any, bool]] = []
        self._wake_scheduled = False
        self._deadlines: deque[tuple[float, asyncio.Future[AuditRecord]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    # On the loop's thread.

    def watch(self, waiter: asyncio.Future[AuditRecord], deadline: float) -> None:
        self._deadlines.append((deadline, waiter))
        if self._sweep is None:
            self._sweep = self._loop.call_later(SWEEP_S, self._expire)

    def _expire(self) -> None:
        self._sweep = None
        now, deadlines, expired = self._loop.time(), self._deadlines, 0
        while deadlines:
            deadline, waiter = deadlines[0]
            if not waiter.done():
                if deadline > now:
                    break
                waiter.set_exception(AuditUnavailableError(_TIMED_OUT))
                expired += 1
            deadlines.popleft()
        if expired:
            _LOG.error("%s: answered 503 to %d request(s)", _TIMED_OUT, expired)
        if deadlines:
            self._sweep = self._loop.call_later(SWEEP_S, self._expire)

    def _resolve(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._wake_scheduled = False
        for waiter, outcome, ok in ready:
            if waiter.done():  # timed out meanwhile
                continue
            if ok:
                waiter.set_result(outcome)
            else:
                waiter.set_exception(outcome)
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()

    # On the writer's thread (or the caller's, for an event refused at once).

    def report(self, waiter: asyncio.Future[AuditRecord], outcome: Any, *, ok: bool) -> None:
        with self._lock:
            self._ready.append((waiter, outcome, ok))
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._lock:
                self._wake_scheduled = False


class _Completion:
    """One queued record's ``services.audit.Completion``, reported to its loop's waiters."""

    __slots__ = ("_done", "_waiter", "_waiters")

    def __init__(self, waiters: _LoopWaiters, waiter: asyncio.Future[AuditRecord]) -> None:
        self._waiters, self._waiter, self._done = waiters, waiter, False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: AuditRecord, /) -> None:
        self._done = True
        self._waiters.report(self._waiter, result, ok=True)

    def set_exception(self, exception: BaseException | None, /) -> None:
        self._done = True
        error = exception or AuditUnavailableError("the audit log is unavailable")
        self._waiters.report(self._waiter, error, ok=False)


@dataclass
class ServerParts:
    """Everything the routes need, built once per worker process."""

    settings: Settings
    clock: Clock
    registry: RegistryService
    lifecycle: LifecycleService
    host: ModelHost
    identity: IdentityService
    access: Access
    audit: AuditGate
    input_key: bytes
    token_issuer: TokenIssuer
    audit_service: Callable[[], Any]
    """``AuditService`` factory for the auditor's query routes."""
    on_close: list[Callable[[], None]] = field(default_factory=list)
    routes: list[BaseRoute] = field(default_factory=list)
    """Routes beyond the inference protocol (``/v1``), added by ``admin_routes``."""
    limits: RequestLimits | None = None
    """Rate limits, quotas and load shedding; None with ``unsafe_no_request_guard``."""
    resolver: ClientResolver = field(default_factory=ClientResolver)
    network: NetworkRules | None = None


def build_parts(settings: Settings) -> ServerParts:
    """Build every adapter and service from settings (through ``bootstrap``)."""
    container = bootstrap.build_container(settings)
    keys = bootstrap.server_keys(settings)
    identity = bootstrap.build_identity_service(settings, keys)
    issuer = bootstrap.build_token_issuer(settings, keys)
    verifier: BearerVerifier = bootstrap.build_bearer_verifier(settings, issuer)
    step_up = StepUpSettings(
        stage_change=timedelta(seconds=settings.mfa_max_age_s),
        administration=timedelta(seconds=settings.mfa_max_age_s),
    )
    limits = bootstrap_guard.build_request_limits(settings)
    resolver, network = bootstrap_guard.build_network(settings)
    access = Access(
        identity=identity,
        tokens=verifier,
        roles_from_token=bootstrap.roles_from_token_issuers(settings),
        clock=bootstrap.utc_now,
        step_up=step_up,
        blocking_store=bootstrap.identity_store_is_remote(settings),
        limits=limits,
    )
    return ServerParts(
        settings=settings,
        clock=bootstrap.utc_now,
        registry=container.registry,
        lifecycle=container.lifecycle,
        host=ModelHost(container.registry, bootstrap.utc_now),
        identity=identity,
        access=access,
        audit=AuditGate(container.audit.writer),
        input_key=keys.audit_input_hmac,
        token_issuer=issuer,
        audit_service=container.audit.service,
        on_close=[container.audit.close],
        limits=limits,
        resolver=resolver,
        network=network,
    )


def create_app() -> ASGIApp:
    """The uvicorn factory: one app per worker process, from the environment's settings."""
    settings = load_settings()
    parts = build_parts(settings)
    from strongroom.entrypoints.http.admin import admin_routes  # noqa: PLC0415 - optional part

    parts.routes.extend(admin_routes(parts))
    return build_app(parts)


def build_app(parts: ServerParts) -> ASGIApp:
    settings = parts.settings
    inference = InferenceRoutes(
        host=parts.host,
        access=parts.access,
        input_key=parts.input_key,
        max_rows=settings.max_batch_rows,
        ready=parts.audit.healthy,
        validate_inputs=not settings.unsafe_no_request_guard,
    )
    router = Router(
        routes=[*inference.routes(), *parts.routes],
        default=_not_found,
        lifespan=_lifespan(parts),
    )
    return Guard(
        router,
        settings=GuardSettings(
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            body_timeout_s=settings.body_timeout_s,
            resolver=parts.resolver,
            network=parts.network,
        ),
        confirm=parts.audit.confirm,
        healthy=parts.audit.healthy,
        clock=parts.clock,
    )


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
    raise HTTPException(404)


def _server_event(parts: ServerParts, action: str, details: dict[str, DetailValue]) -> AuditEvent:
    return AuditEvent(
        time=parts.clock(),
        principal=SERVER_PRINCIPAL,
        action=action,
        resource="server",
        outcome=Outcome.ALLOWED,
        request_id=secrets.token_hex(12),
        details={"pid": os.getpid(), **details},
    )


def _lifespan(parts: ServerParts) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(parts.audit.open)
        settings = parts.settings
        details: dict[str, DetailValue] = {"tls": not settings.unsafe_plaintext}
        if settings.unsafe_plaintext:
            details["unsafe_plaintext"] = True
        if parts.limits is None:
            _LOG.warning(
                "unsafe_no_request_guard is set: no rate limits, quotas, input schema checks"
                " or load shedding"
            )
            details["unsafe_no_request_guard"] = True
        await asyncio.to_thread(parts.audit.record, _server_event(parts, "server.start", details))
        await asyncio.to_thread(parts.host.refresh)
        if parts.limits is not None:
            await asyncio.to_thread(parts.limits.refresh)
        # Everything built so far (runtimes, models, SQLAlchemy, the routes) lives as long as
        # the process: keep it out of the cyclic collector's scans, whose full passes over
        # that heap otherwise stall every request in flight for tens of milliseconds.
        gc.collect()
        gc.freeze()
        refresher = asyncio.create_task(_keep_fresh(parts, settings.model_refresh_s))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            with contextlib.suppress(AuditUnavailableError):
                await asyncio.to_thread(parts.audit.record, _server_event(parts, "server.stop", {}))
            for close in parts.on_close:
                await asyncio.to_thread(close)
            if parts.limits is not None:
                await parts.limits.close()

    return lifespan


async def _keep_fresh(parts: ServerParts, interval: float) -> None:
    """Keep warm models and guard overrides in line with the database (other workers and
    replicas change them too)."""
    while True:
        await asyncio.sleep(interval)  # a period, not synchronisation
        try:
            await asyncio.to_thread(parts.host.refresh)
        except Exception:  # noqa: BLE001 - keep refreshing; the error is logged
            _LOG.exception("model refresh failed; serving the models already loaded")
        if parts.limits is None:
            continue
        try:
            await asyncio.to_thread(parts.limits.refresh)
        except Exception:  # noqa: BLE001 - keep the overrides already loaded
            _LOG.exception("guard override refresh failed; keeping the overrides loaded")
