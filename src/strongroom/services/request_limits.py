"""Rate limits, quotas and per-principal network denials: which checks a request must pass.

``RequestLimits`` turns (principal, model, client address) into the ``Check`` list of
``core.policy.limits``, from the defaults in settings and the overrides stored per model and per
principal, and charges them on a ``RateCounter`` in one all-or-nothing call.

What is counted:

* **Authenticated requests**: the principal's rate (every route). Predictions also count
  against the model's rate (all principals together), the principal-and-model rate, the
  principal's quota, and the model's per-principal quota when an override sets one.
* **Unauthenticated traffic** per client address: logins, and every failed authentication.
  When an address runs out, it is refused (429) *before* its next credential is even checked,
  for as long as ``Retry-After`` says; the block is remembered by this process, the count is
  shared through the counter.

Which rule wins: a principal's override beats a model's for the principal-and-model rate (an
exception granted to one caller); otherwise an override replaces the default it names.

When the shared counter is unreachable (``RateCounterUnavailableError``): admin and
authentication requests are refused (503), always. Predictions follow the operator's
``OutagePolicy``: refused too (``closed``, the default) or counted by this process alone
(``local``); never let through uncounted.

Overrides are read from their store by ``refresh`` (a blocking call: the server runs it in a
thread at start-up, periodically and after a change through this process's admin API); the
request path reads only the in-memory snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Final

from strongroom.core.policy.limits import (
    Check,
    Quota,
    Rate,
    RateCounter,
    Scope,
    Verdict,
    quota_check,
    rate_check,
)
from strongroom.core.policy.network import NetworkRules, parse_networks
from strongroom.core.policy.overrides import GuardOverride, GuardOverrideStore, GuardPolicy
from strongroom.core.policy.overrides import SubjectKind as Kind
from strongroom.errors import InvalidInputError, RateCounterUnavailableError, RateLimitedError

MAX_BLOCKED_ADDRESSES: Final = 65_536
MAX_CACHED_CHECKS: Final = 65_536
_FOREVER: Final = 2**62
OUTAGE_LOG_INTERVAL_S: Final = 10.0
_LOG: Final = logging.getLogger("strongroom.limits")

Address = IPv4Address | IPv6Address


class OutagePolicy(StrEnum):
    CLOSED = "closed"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    principal: Rate | None = None
    model: Rate | None = None
    principal_model: Rate | None = None
    address: Rate | None = None
    quota: Quota | None = None
    max_concurrent_per_principal: int = 32
    max_queue_per_model: int = 64


@dataclass(frozen=True, slots=True)
class _Snapshot:
    principals: Mapping[str, GuardPolicy]
    models: Mapping[str, GuardPolicy]
    deny: Mapping[str, NetworkRules]


_EMPTY: Final = _Snapshot(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))
_NO_POLICY: Final = GuardPolicy()


class RequestLimits:
    """See the module docstring."""

    def __init__(
        self,
        *,
        counter: RateCounter,
        local: RateCounter,
        defaults: LimitDefaults,
        overrides: GuardOverrideStore | None,
        now_us: Callable[[], int],
        inference_outage: OutagePolicy = OutagePolicy.CLOSED,
    ) -> None:
        self._counter = counter
        self._local = local
        self._defaults = defaults
        self._store = overrides
        self._now_us = now_us
        self._inference_outage = inference_outage
        self._snapshot = _EMPTY
        self._checks: dict[tuple[str, str | None], tuple[tuple[Check, ...], int]] = {}
        self._blocked: OrderedDict[Address, int] = OrderedDict()
        self._blocked_lock = threading.Lock()
        self._last_outage_log = 0.0

    @property
    def defaults(self) -> LimitDefaults:
        return self._defaults

    async def close(self) -> None:
        await self._counter.close()
        await self._local.close()

    # --- overrides ------------------------------------------------------------------------------

    def refresh(self) -> list[GuardOverride]:
        """Reload overrides from the store (blocking); returns them."""
        if self._store is None:
            return []
        stored = self._store.list_overrides()
        principals = {o.subject: o.policy for o in stored if o.kind is Kind.PRINCIPAL}
        models = {o.subject: o.policy for o in stored if o.kind is Kind.MODEL}
        deny = {
            subject: NetworkRules(deny=parse_networks(policy.deny_networks))
            for subject, policy in principals.items()
            if policy.deny_networks
        }
        self._snapshot = _Snapshot(
            MappingProxyType(principals), MappingProxyType(models), MappingProxyType(deny)
        )
        self._checks = {}  # built from the old snapshot
        return stored

    def put_override(self, override: GuardOverride) -> None:
        """Store (insert or replace) an override and apply it on this process (blocking)."""
        self._require_store().put_override(override)
        self.refresh()

    def delete_override(self, kind: Kind, subject: str) -> None:
        """Remove an override (``NotFoundError`` if none) and apply that (blocking)."""
        self._require_store().delete_override(kind, subject)
        self.refresh()

    def _require_store(self) -> GuardOverrideStore:
        if self._store is None:
            raise InvalidInputError("this server keeps no guard overrides")
        return self._store

    def denied_networks(self, principal: str) -> NetworkRules | None:
        """The networks ``principal`` may never call from (its override), or None."""
        return self._snapshot.deny.get(principal)

    def max_concurrent(self, principal: str) -> int:
        policy = self._snapshot.principals.get(principal, _NO_POLICY)
        return policy.max_concurrent or self._defaults.max_concurrent_per_principal

    def queue_bound(self, model: str) -> int:
        policy = self._snapshot.models.get(model, _NO_POLICY)
        return policy.max_concurrent or self._defaults.max_queue_per_model

    # --- authenticated requests -----------------------------------------------------------------

    def checks(self, principal: str, model: str | None, now_us: int) -> tuple[Check, ...]:
        """Every check a request of ``principal`` (a prediction on ``model``, if given) passes.

        Built once per (principal, model) and kept until a quota window ends or the overrides
        change: the checks are the same for every request in between."""
        key = (principal, model)
        cached = self._checks.get(key)
        if cached is not None and now_us < cached[1]:
            return cached[0]
        built = tuple(self._build_checks(principal, model, now_us))
        until = min((c.expires_us for c in built if isinstance(c.rule, Quota)), default=_FOREVER)
        checks = self._checks
        if len(checks) >= MAX_CACHED_CHECKS:
            checks.clear()
        checks[key] = (built, until)
        return built

    def _build_checks(self, principal: str, model: str | None, now_us: int) -> list[Check]:
        defaults, snapshot = self._defaults, self._snapshot
        own = snapshot.principals.get(principal, _NO_POLICY)
        checks: list[Check] = []
        rate = own.rate or defaults.principal
        if rate is not None:
            checks.append(rate_check(Scope.PRINCIPAL, principal, rate))
        if model is None:
            return checks
        on_model = snapshot.models.get(model, _NO_POLICY)
        model_rate = on_model.rate or defaults.model
        if model_rate is not None:
            checks.append(rate_check(Scope.MODEL, model, model_rate))
        pair = own.model_rate or on_model.model_rate or defaults.principal_model
        if pair is not None:
            checks.append(rate_check(Scope.PRINCIPAL_MODEL, f"{principal}|{model}", pair))
        quota = own.quota or defaults.quota
        if quota is not None:
            checks.append(quota_check(principal, quota, now_us))
        if on_model.quota is not None:
            checks.append(quota_check(f"{principal}|{model}", on_model.quota, now_us))
        return checks

    async def admit(self, principal: str, model: str | None, *, inference: bool) -> Verdict:
        """Charge the request's checks; raises ``RateLimitedError`` when one refuses."""
        now = self._now_us()
        checks = self.checks(principal, model, now)
        verdict = await self._take(checks, now, local_allowed=inference)
        if not verdict.allowed:
            raise _limited(verdict)
        return verdict

    async def _take(self, checks: Sequence[Check], now: int, *, local_allowed: bool) -> Verdict:
        try:
            return await self._counter.take(checks, now)
        except RateCounterUnavailableError:
            local = local_allowed and self._inference_outage is OutagePolicy.LOCAL
            self._log_outage(local=local)
            if not local:
                raise
        return await self._local.take(checks, now)

    def _log_outage(self, *, local: bool) -> None:
        moment = time.monotonic()
        if moment - self._last_outage_log < OUTAGE_LOG_INTERVAL_S:
            return
        self._last_outage_log = moment
        if local:
            _LOG.warning("the shared rate counter is unreachable: counting in this process only")
        else:
            _LOG.error("the shared rate counter is unreachable: refusing requests (503)")

    # --- unauthenticated traffic ----------------------------------------------------------------

    def check_address(self, address: Address | None) -> None:
        """Refuse (429) an address that ran out of unauthenticated attempts, without counting."""
        if address is None or self._defaults.address is None:
            return
        until = self._blocked.get(address)
        if until is None:
            return
        now = self._now_us()
        if until <= now:
            with self._blocked_lock:
                self._blocked.pop(address, None)
            return
        left = until - now
        blocked = Verdict(
            allowed=False,
            scope=Scope.ADDRESS,
            limit=self._defaults.address.burst,
            remaining=0,
            reset_us=left,
            retry_after_us=left,
        )
        raise _limited(blocked)

    async def charge_address(self, address: Address | None) -> None:
        """Count one unauthenticated attempt from ``address``; 429 once it has run out."""
        rule = self._defaults.address
        if rule is None:
            return
        subject = "unknown" if address is None else address.compressed
        now = self._now_us()
        verdict = await self._take(
            [rate_check(Scope.ADDRESS, subject, rule)], now, local_allowed=False
        )
        if verdict.allowed:
            return
        if address is not None:
            self._block(address, now + verdict.retry_after_us)
        raise _limited(verdict)

    def _block(self, address: Address, until: int) -> None:
        with self._blocked_lock:
            self._blocked[address] = until
            self._blocked.move_to_end(address)
            while len(self._blocked) > MAX_BLOCKED_ADDRESSES:
                self._blocked.popitem(last=False)


def _limited(verdict: Verdict) -> RateLimitedError:
    scope = verdict.scope.value if verdict.scope is not None else "limit"
    return RateLimitedError(
        scope,
        retry_after_s=verdict.retry_after_s,
        limit=verdict.limit,
        remaining=0,
        reset_s=verdict.reset_s,
    )
