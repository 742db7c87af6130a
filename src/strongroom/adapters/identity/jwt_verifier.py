"""Bearer JWT verification for configured issuers: ``JwtVerifier.verify(token) -> VerifiedToken``.

The policy (which headers, algorithms, claims and subjects are acceptable) is
``strongroom.core.identity.tokens``; parsing, key sets and the JWS check are
``strongroom.adapters.identity.jwks``. This module puts them together per request:

1. The token is parsed strictly (``jwks.parse_compact``), and its payload must be a JSON object
   without duplicate keys.
2. The issuer is chosen by the *unverified* ``iss`` (exact match), and from then on only that
   issuer's algorithms and keys are used, so a key or algorithm of issuer A never verifies a
   token that claims issuer B.
3. The key comes only from that issuer's JWK Set (``KeySet.find``).
4. PyJWT (``jwt.decode`` with the algorithm pinned, the key as a ``PyJWK`` bound to that
   algorithm, ``exp``/``iss``/``aud``/``sub`` required) checks the signature; time claims are then
   judged against the injected clock by ``tokens.check_claims`` (PyJWT only knows the system
   clock), and ``tokens.principal_from_claims`` names the principal.
5. JWK Sets are fetched only from the configured URL through the injected ``fetch_jwks``
   (``jwks.https_jwks_fetcher`` in production), cached for ``jwks_ttl``, refreshed once on an
   unknown ``kid`` and never more often than ``min_refresh_interval`` per issuer, so a stream of
   random ``kid`` values cannot cause a fetch storm. If a refresh fails the last good keys stay in
   use and the failure is logged. Inline key sets (Strongroom's own issuer) are never fetched.
6. Verified tokens are cached (LRU, ``cache_size`` entries, keyed by SHA-256 of the token) until
   ``min(exp, verified + token_cache_ttl)``: repeated requests skip the signature check, a cached
   token never outlives its ``exp``, and it is dropped as soon as a refreshed JWK Set no longer
   holds the key that signed it.

Every refusal is the opaque ``AuthenticationError``; ``tokens.rejection_reason(err)`` gives the
reason for the server log. ``verify`` may block on a JWKS fetch (at most the fetcher's timeout,
at most once per ``min_refresh_interval`` per issuer): async servers call it in a worker thread,
and call ``prefetch()`` at startup. The verifier is thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

import jwt

from strongroom.adapters.identity.jwks import (
    MAX_TOKEN_CHARS,
    KeySet,
    VerificationKey,
    parse_compact,
    parse_json_object,
    reason_of,
)
from strongroom.core.identity.tokens import (
    IssuerConfig,
    RejectReason,
    TokenRejection,
    VerifiedToken,
    check_claims,
    check_header,
    principal_from_claims,
    reject,
)
from strongroom.core.types import Clock
from strongroom.errors import AuthenticationError, ConfigurationError

log = logging.getLogger(__name__)


@dataclass
class _IssuerState:
    """Keys of one issuer; mutated only under its own ``lock``, so a slow JWKS server delays
    only the tokens of its own issuer, never another issuer's."""

    config: IssuerConfig
    keys: KeySet | None = None
    fetched_at: datetime | None = None
    attempted_at: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True)
class _CacheEntry:
    token: VerifiedToken
    valid_until: datetime
    thumbprint: str


@dataclass(frozen=True)
class VerifierStats:
    """Counters for metrics: signature checks attempted, cache hits, JWKS fetch attempts, and
    the number of tokens cached now."""

    verifications: int
    cache_hits: int
    jwks_fetches: int
    cached: int


def _check_interval(name: str, value: timedelta, low: timedelta, high: timedelta) -> None:
    if not isinstance(value, timedelta) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}")


class JwtVerifier:
    """Verifies bearer JWTs of the configured issuers (see module doc). Thread-safe."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        fetch_jwks: Callable[[str], bytes],
        clock: Clock,
        jwks_ttl: timedelta = timedelta(minutes=10),
        min_refresh_interval: timedelta = timedelta(seconds=30),
        cache_size: int = 10_000,
        token_cache_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        if not issuers or not all(isinstance(i, IssuerConfig) for i in issuers):
            raise ConfigurationError("JwtVerifier needs at least one IssuerConfig")
        if len({i.issuer for i in issuers}) != len(issuers):
            raise ConfigurationError("two issuer configurations name the same issuer")
        if len({i.subject_prefix for i in issuers}) != len(issuers):
            raise ConfigurationError(
                "every issuer needs its own subject_prefix",
                hint="sub is unique only per issuer: give all issuers but one a prefix ('corp:')",
            )
        _check_interval("jwks_ttl", jwks_ttl, timedelta(seconds=1), timedelta(days=1))
        _check_interval(
            "min_refresh_interval", min_refresh_interval, timedelta(seconds=1), jwks_ttl
        )
        _check_interval("token_cache_ttl", token_cache_ttl, timedelta(0), jwks_ttl)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError("cache_size must be an integer >= 0 (0 disables the cache)")
        self._fetch = fetch_jwks
        self._clock = clock
        self._jwks_ttl = jwks_ttl
        self._min_refresh = min_refresh_interval
        self._cache_size = cache_size
        self._cache_ttl = token_cache_ttl
        self._states = {i.issuer: _IssuerState(i) for i in issuers}
        for state in self._states.values():
            if state.config.jwks is not None:
                try:
                    state.keys = KeySet.from_jwks(state.config.jwks, state.config.algorithms)
                except ValueError as exc:
                    raise ConfigurationError(f"issuer {state.config.issuer}: {exc}") from exc
        self._cache: OrderedDict[bytes, _CacheEntry] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._counts = {"verifications": 0, "cache_hits": 0, "jwks_fetches": 0}

    def verify(self, token: str) -> VerifiedToken:
        """The verified token and its principal, or the opaque ``AuthenticationError``."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            reject(RejectReason.TOO_LARGE if isinstance(token, str) else RejectReason.MALFORMED)
        now = self._clock()
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cached(digest, now)
        if cached is not None:
            return cached
        verified, thumbprint = self._verify_uncached(token, digest, now)
        self._remember(digest, verified, thumbprint, now)
        return verified

    def cached(self, token: str) -> VerifiedToken | None:
        """The cached result for ``token``, or None: never does I/O or signature work.

        For async servers: answer from the event loop when this returns a token, and run
        ``verify`` in a worker thread only when it returns None.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        return self._cached(digest, self._clock())

    def _verify_uncached(
        self, token: str, digest: bytes, now: datetime
    ) -> tuple[VerifiedToken, str]:
        jws = parse_compact(token)
        try:
            claims = parse_json_object(jws.payload)
        except ValueError as exc:
            raise AuthenticationError from TokenRejection(RejectReason.MALFORMED, str(exc))
        iss = claims.get("iss")
        state = self._states.get(iss) if isinstance(iss, str) else None
        if state is None:
            reject(RejectReason.UNKNOWN_ISSUER)
        config = state.config
        header = check_header(
            jws.header, algorithms=config.algorithms, token_types=config.token_types
        )
        key = self._key_for(state, header.alg, header.kid, now)
        self._check_signature(token, key, config)
        expires_at = check_claims(config, claims, token_type=header.token_type, now=now)
        principal = principal_from_claims(
            config, claims, now=now, fallback_credential_id=f"sha256:{digest.hex()}"
        )
        verified = VerifiedToken(
            issuer=config.issuer,
            algorithm=header.alg,
            key_id=header.kid,
            token_type=header.token_type,
            claims=MappingProxyType(claims),
            principal=principal,
            expires_at=expires_at,
        )
        return verified, key.thumbprint

    def prefetch(self) -> tuple[str, ...]:
        """Load every issuer's JWK Set now (call at startup); returns the issuers that failed."""
        now = self._clock()
        failed: list[str] = []
        for state in self._states.values():
            try:
                self._current_keys(state, now)
            except AuthenticationError:
                failed.append(state.config.issuer)
        return tuple(failed)

    def clear_cache(self) -> None:
        """Forget every verified token (for example after an issuer's key was compromised)."""
        with self._cache_lock:
            self._cache.clear()

    def stats(self) -> VerifierStats:
        with self._cache_lock:
            return VerifierStats(**self._counts, cached=len(self._cache))

    # --- cache ---

    def _cached(self, digest: bytes, now: datetime) -> VerifiedToken | None:
        with self._cache_lock:
            entry = self._cache.get(digest)
            if entry is None:
                return None
            keys = self._states[entry.token.issuer].keys
            if now >= entry.valid_until or keys is None or not keys.holds(entry.thumbprint):
                del self._cache[digest]
                return None
            self._cache.move_to_end(digest)
            self._counts["cache_hits"] += 1  # the cache lock also guards the counters
            return entry.token

    def _remember(
        self, digest: bytes, verified: VerifiedToken, thumbprint: str, now: datetime
    ) -> None:
        valid_until = min(verified.expires_at, now + self._cache_ttl)
        if self._cache_size == 0 or valid_until <= now:
            return
        with self._cache_lock:
            self._cache[digest] = _CacheEntry(verified, valid_until, thumbprint)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    # --- keys ---

    def _key_for(
        self, state: _IssuerState, alg: str, kid: str | None, now: datetime
    ) -> VerificationKey:
        key = self._current_keys(state, now).find(alg, kid)
        if key is None and kid is not None:
            with state.lock:
                if self._may_fetch(state, now):
                    self._refresh(state, now)
                keys = state.keys
            key = keys.find(alg, kid) if keys is not None else None
        if key is None:
            reject(RejectReason.NO_KEY, f"kid {kid!r} alg {alg}")
        return key

    def _current_keys(self, state: _IssuerState, now: datetime) -> KeySet:
        # With keys in hand, never queue behind another thread's refresh: serve with the current
        # keys while it runs. Only an issuer with no keys yet waits for its first fetch.
        if not state.lock.acquire(blocking=state.keys is None):
            keys = state.keys
        else:
            try:
                stale = state.fetched_at is None or now - state.fetched_at >= self._jwks_ttl
                if state.config.jwks_url is not None and stale and self._may_fetch(state, now):
                    self._refresh(state, now)
                keys = state.keys
            finally:
                state.lock.release()
        if keys is None:
            reject(RejectReason.KEYS_UNAVAILABLE, state.config.issuer)
        return keys

    def _may_fetch(self, state: _IssuerState, now: datetime) -> bool:
        """Static key sets never; URLs at most once per ``min_refresh_interval``."""
        if state.config.jwks_url is None:
            return False
        return state.attempted_at is None or now - state.attempted_at >= self._min_refresh

    def _refresh(self, state: _IssuerState, now: datetime) -> None:
        """Fetch the issuer's JWK Set (caller holds ``state.lock``); keep old keys on failure."""
        url = state.config.jwks_url
        if url is None:
            return
        state.attempted_at = now
        self._count("jwks_fetches")
        try:
            keys = KeySet.from_jwks(self._fetch(url), state.config.algorithms)
        except Exception:  # whatever the injected fetcher raises: keep the old keys, log why
            log.warning(
                "JWKS of %s could not be loaded from %s", state.config.issuer, url, exc_info=True
            )
            return
        state.keys, state.fetched_at = keys, now

    def _check_signature(self, token: str, key: VerificationKey, config: IssuerConfig) -> None:
        """PyJWT verifies the signature and the clock-free claims; time is checked in core."""
        self._count("verifications")
        try:
            jwt.decode(
                token,
                key=key.jwk,
                algorithms=[key.alg],
                audience=list(config.audiences),
                issuer=config.issuer,
                leeway=config.leeway,
                options={
                    "verify_signature": True,
                    "require": list(config.all_required_claims),
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    # PyJWT reads the system clock; exp/nbf/iat use the injected one instead.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError from TokenRejection(reason_of(exc), type(exc).__name__)

    def _count(self, name: str) -> None:
        with self._cache_lock:
            self._counts[name] += 1
