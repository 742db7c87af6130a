"""Errors as RFC 9457 problem details (``application/problem+json``), in one place.

Every error response of the server is built here, from a ``StrongroomError`` (its stable
``code``), a framework ``HTTPException`` (404/405 from routing) or anything else (500).

Invariants:

* The body never holds a stack trace, an exception's repr or internal paths; only the stable
  code, a fixed title per status, and, for input errors, the message written for the caller.
* Security failures are opaque: every ``AuthenticationError`` is the same 401 with
  ``WWW-Authenticate: Bearer`` and every ``ForbiddenError`` the same 403, whatever check failed
  (the reason goes to the server log and the audit record, never to the client). The one
  exception is a missing MFA step-up, which is answered as RFC 9470 asks
  (``error="insufficient_user_authentication"``): it is raised only when every other rule
  allows the action, so it tells the caller nothing it could not learn by stepping up.
* Integrity and signature failures say that a check failed, never which or why.
* The body also carries ``error`` (the detail): Open Inference Protocol clients such as
  ``tritonclient`` read that member.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from strongroom.errors import (
    AuditUnavailableError,
    AuthenticationError,
    BusyError,
    ConflictError,
    ForbiddenError,
    IntegrityError,
    InvalidInputError,
    InvalidTransitionError,
    KeyAccessError,
    MfaRequiredError,
    NotFoundError,
    OverloadedError,
    RateCounterUnavailableError,
    RateLimitedError,
    SecurityError,
    SignatureError,
    StorageError,
    StrongroomError,
    TooLargeError,
    UnsupportedMediaTypeError,
)

PROBLEM_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:strongroom:problem:"
RETRY_AFTER_S: Final = "5"
_LOG: Final = logging.getLogger("strongroom.http")


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    code: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def body(self, request_id: str | None) -> bytes:
        document = {
            "type": TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "request_id": request_id,
            "error": self.detail,
        }
        return orjson.dumps(document)

    def response(self, request_id: str | None) -> Response:
        return Response(
            self.body(request_id),
            status_code=self.status,
            media_type=PROBLEM_TYPE,
            headers=dict(self.headers),
        )


UNAUTHENTICATED: Final = Problem(
    401,
    AuthenticationError.code,
    "authentication required",
    (("www-authenticate", 'Bearer realm="strongroom"'),),
)
FORBIDDEN: Final = Problem(403, ForbiddenError.code, "forbidden")
AUDIT_UNAVAILABLE: Final = Problem(
    503,
    AuditUnavailableError.code,
    "the service cannot record this request in its audit log now; retry later",
    (("retry-after", RETRY_AFTER_S),),
)
INTERNAL: Final = Problem(500, "server.internal", "internal error")


def too_large(limit: int) -> Problem:
    return Problem(413, TooLargeError.code, f"the request body exceeds {limit} bytes")


_CLIENT_ERRORS: Final[tuple[tuple[type[StrongroomError], int], ...]] = (
    (TooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (InvalidInputError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidTransitionError, 409),
)
"""Errors whose message is written for the caller, by status; the first match wins."""


def rate_limited(error: RateLimitedError) -> Problem:
    """429 with ``Retry-After`` and the ``RateLimit-*`` fields of the limit that refused."""
    return Problem(
        429,
        error.code,
        f"rate limit exceeded ({error.scope}); retry later",
        (
            ("retry-after", str(error.retry_after_s)),
            ("ratelimit-limit", str(error.limit)),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", str(error.reset_s)),
        ),
    )


def _mfa(error: MfaRequiredError) -> Problem:
    challenge = (
        'Bearer realm="strongroom", error="insufficient_user_authentication", '
        'error_description="a fresh MFA step-up is required"'
    )
    return Problem(
        401, error.code, "a fresh MFA step-up is required", (("www-authenticate", challenge),)
    )


def _security(error: SecurityError) -> Problem:
    if isinstance(error, MfaRequiredError):
        return _mfa(error)
    if isinstance(error, AuthenticationError):
        return UNAUTHENTICATED
    if isinstance(error, ForbiddenError):
        return FORBIDDEN
    return _failed_check(error)


def _failed_check(error: SecurityError) -> Problem:
    if isinstance(error, SignatureError):
        return Problem(422, error.code, "signature verification failed")
    if isinstance(error, KeyAccessError):
        return Problem(503, error.code, "a key is not available", (("retry-after", RETRY_AFTER_S),))
    if isinstance(error, IntegrityError):
        _LOG.critical("integrity check failed while serving a request")
        return Problem(500, error.code, "stored data failed an integrity check")
    return Problem(500, error.code, "a security check failed")


def _infrastructure(error: StrongroomError) -> Problem:
    if isinstance(error, AuditUnavailableError):
        return AUDIT_UNAVAILABLE
    if isinstance(error, OverloadedError):
        retry = (("retry-after", str(error.retry_after_s)),)
        return Problem(503, error.code, "too many requests in progress; retry later", retry)
    if isinstance(error, BusyError):
        return Problem(503, error.code, "too busy; retry later", (("retry-after", "1"),))
    if isinstance(error, RateCounterUnavailableError):
        _LOG.error("rate counter unavailable: %s", error)
        return Problem(
            503, error.code, "the rate limiter is unavailable", (("retry-after", RETRY_AFTER_S),)
        )
    if isinstance(error, StorageError):
        _LOG.error("storage unavailable: %s", error)
        return Problem(
            503, error.code, "a backend is unavailable", (("retry-after", RETRY_AFTER_S),)
        )
    _LOG.error("error without an HTTP mapping: %s (%s)", error.code, error)
    return Problem(500, error.code, "internal error")


def problem_for(error: BaseException) -> Problem:
    """The problem for ``error``; unexpected errors are logged here (server side only)."""
    if isinstance(error, SecurityError):
        return _security(error)
    if isinstance(error, RateLimitedError):
        return rate_limited(error)
    if isinstance(error, StrongroomError):
        for kind, status in _CLIENT_ERRORS:
            if isinstance(error, kind):
                return Problem(status, error.code, str(error))
        return _infrastructure(error)
    if isinstance(error, HTTPException):
        return _http(error)
    _LOG.error("unexpected %s while serving a request", type(error).__name__, exc_info=error)
    return INTERNAL


def _http(error: HTTPException) -> Problem:
    status = error.status_code
    if status == HTTPStatus.NOT_FOUND:
        return Problem(404, "http.not_found", "no such resource")
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        allow = (error.headers or {}).get("Allow", "")
        return Problem(405, "http.method_not_allowed", "method not allowed", (("allow", allow),))
    try:
        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = "error"
    return Problem(status, f"http.{status}", phrase)
