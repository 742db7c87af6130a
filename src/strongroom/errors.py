"""The one error tree of Strongroom.

Every error carries a stable, documented ``code`` (``category.reason``) that scripts and the API
can rely on; messages may change, codes may not. Errors know nothing of HTTP statuses or exit
codes: each entrypoint maps them in exactly one place.

Security failures are opaque on purpose. ``IntegrityError`` and ``SignatureError`` say *that*
verification failed, never *why* (which byte, which key, which check), so that an attacker gets
no oracle. The detailed cause is kept on ``__cause__`` for server-side logs only.
"""

from __future__ import annotations

from typing import ClassVar


class StrongroomError(Exception):
    """Root of every error Strongroom raises on purpose."""

    code: ClassVar[str] = "strongroom.error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


# --- configuration ------------------------------------------------------------------------------


class ConfigurationError(StrongroomError):
    """Settings are missing, malformed or unsafe without the matching ``unsafe_*`` opt-in."""

    code = "config.invalid"


class MissingExtraError(ConfigurationError):
    """A backend or runtime was chosen whose optional dependencies are not installed."""

    code = "config.missing_extra"

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional extra '{extra}'",
            hint=f"install it with: pip install 'strongroom[{extra}]'",
        )
        self.extra = extra


# --- input from users ---------------------------------------------------------------------------


class InvalidInputError(StrongroomError):
    """A request or command is malformed. Safe to show to the caller."""

    code = "input.invalid"


class UnsupportedFormatError(InvalidInputError):
    """A model file is in a format Strongroom refuses (pickle, joblib, torch, unknown)."""

    code = "input.unsupported_format"


class UnsafeArchiveError(InvalidInputError):
    """An archive holds path traversal, absolute paths, links or other unsafe members."""

    code = "input.unsafe_archive"


class TooLargeError(InvalidInputError):
    """An upload or archive exceeds a configured size limit."""

    code = "input.too_large"


class UntrustedTypesError(InvalidInputError):
    """A skops file references types outside the model's trusted-type list."""

    code = "input.untrusted_types"


class UnsupportedMediaTypeError(InvalidInputError):
    """A request body is not in a media type the endpoint accepts (e.g. not JSON)."""

    code = "input.unsupported_media_type"


class OAuthRequestError(InvalidInputError):
    """A malformed OAuth 2.0 token request (RFC 6749 section 5.2 ``invalid_request``)."""

    code = "oauth.invalid_request"


class UnsupportedGrantTypeError(OAuthRequestError):
    """A token request for a grant the server does not offer (``unsupported_grant_type``)."""

    code = "oauth.unsupported_grant_type"


class InvalidScopeError(OAuthRequestError):
    """A token request whose ``scope`` is malformed (``invalid_scope``)."""

    code = "oauth.invalid_scope"


# --- registry state -----------------------------------------------------------------------------


class NotFoundError(StrongroomError):
    code = "registry.not_found"


class ConflictError(StrongroomError):
    """The operation conflicts with current state (duplicate version, concurrent promotion)."""

    code = "registry.conflict"


class InvalidTransitionError(StrongroomError):
    """A stage change that the lifecycle does not allow."""

    code = "registry.invalid_transition"


# --- security: opaque ---------------------------------------------------------------------------


class SecurityError(StrongroomError):
    """Base of verification failures. Messages never reveal which check failed."""

    code = "security.failed"


class IntegrityError(SecurityError):
    """Stored bytes, keys or metadata do not verify: decryption or digest check failed."""

    code = "security.integrity"

    def __init__(self, message: str = "integrity check failed") -> None:
        super().__init__(message)


class SignatureError(SecurityError):
    """A signature is missing, malformed, invalid, or made by a key the policy does not allow."""

    code = "security.signature"

    def __init__(self, message: str = "signature verification failed") -> None:
        super().__init__(message)


class KeyAccessError(SecurityError):
    """The key provider refused: wrong passphrase, retired key version, unknown key."""

    code = "security.key_access"

    def __init__(self, message: str = "key access failed") -> None:
        super().__init__(message)


class AuthenticationError(SecurityError):
    """The caller could not be authenticated. Never says which check failed."""

    code = "auth.unauthenticated"

    def __init__(self, message: str = "authentication failed") -> None:
        super().__init__(message)


class ForbiddenError(SecurityError):
    """The authenticated caller may not do this. Never says which rule refused."""

    code = "auth.forbidden"

    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message)


class MfaRequiredError(ForbiddenError):
    """Allowed only after a fresh MFA step-up; the server answers with a step-up challenge.

    Raised only when every other rule would allow the action, so it reveals nothing the caller
    could not learn by completing MFA. Service principals never get it (they cannot do MFA).
    """

    code = "auth.mfa_required"

    def __init__(self, message: str = "multi-factor step-up required") -> None:
        super().__init__(message)


# --- infrastructure -----------------------------------------------------------------------------


class StorageError(StrongroomError):
    """A backend (database, object store, key service) failed or is unreachable."""

    code = "storage.unavailable"


class BusyError(StorageError):
    """Too much of one costly kind of work is already in progress (password checks): retry."""

    code = "server.busy"


class AuditUnavailableError(StorageError):
    """The audit log cannot make a record durable now, so the action must not happen (fail closed).

    The server answers 503 and the CLI exits with the storage code; the writer recovers by itself
    once its store is back.
    """

    code = "audit.unavailable"


class RateCounterUnavailableError(StorageError):
    """The shared rate counter (Redis) cannot be reached: the request is refused or, where the
    operator chose so, counted by this process alone; never let through uncounted."""

    code = "ratelimit.unavailable"


class OverloadedError(BusyError):
    """A model's queue or a principal's concurrent requests are at their bound: shed, retry."""

    code = "server.overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# --- rate limits --------------------------------------------------------------------------------


class RateLimitedError(StrongroomError):
    """A rate limit or quota refused the request (429); the numbers become ``Retry-After`` and
    ``RateLimit-*`` headers. ``scope`` names the limit (principal, model, address, quota...)."""

    code = "ratelimit.exceeded"

    def __init__(
        self, scope: str, *, retry_after_s: int, limit: int, remaining: int, reset_s: int
    ) -> None:
        super().__init__(f"rate limit exceeded ({scope}); retry after {retry_after_s} s")
        self.scope = scope
        self.retry_after_s = retry_after_s
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s
