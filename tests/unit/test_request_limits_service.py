"""``services.request_limits.RequestLimits``: which checks apply, overrides, the check cache,
the outage policies and unauthenticated traffic, with the memory counter and a fake store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest

from strongroom.adapters.ratelimit.memory import MemoryRateCounter
from strongroom.core.policy.limits import US, Check, Quota, QuotaPeriod, Rate, Scope, Verdict
from strongroom.core.policy.overrides import GuardOverride, GuardPolicy, SubjectKind
from strongroom.errors import RateCounterUnavailableError, RateLimitedError
from strongroom.services.request_limits import LimitDefaults, OutagePolicy, RequestLimits
from strongroom.testing.fake_guard import FakeGuardOverrideStore

DAY_START = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp()) * US
SLOW = Rate(per_second=0.001, burst=2)
FAST = Rate(per_second=1000.0, burst=1000)


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


class DownCounter:
    """A shared counter that cannot be reached."""

    async def take(self, checks: Sequence[Check], now_us: int) -> Verdict:
        raise RateCounterUnavailableError("redis://127.0.0.1:1 is unreachable")

    async def close(self) -> None:
        return None


def limits(
    defaults: LimitDefaults,
    *,
    store: FakeGuardOverrideStore | None = None,
    clock: Clock | None = None,
    counter: object | None = None,
    outage: OutagePolicy = OutagePolicy.CLOSED,
) -> RequestLimits:
    return RequestLimits(
        counter=counter or MemoryRateCounter(),  # type: ignore[arg-type]
        local=MemoryRateCounter(),
        defaults=defaults,
        overrides=store,
        now_us=clock or Clock(DAY_START + 3600 * US),
        inference_outage=outage,
    )


def override(kind: SubjectKind, subject: str, **policy: object) -> GuardOverride:
    return GuardOverride(kind, subject, GuardPolicy(**policy), datetime.now(UTC), "test")  # type: ignore[arg-type]


def admitted(guard: RequestLimits, n: int, principal: str, model: str | None) -> list[bool]:
    async def run() -> list[bool]:
        out = []
        for _ in range(n):
            try:
                await guard.admit(principal, model, inference=model is not None)
                out.append(True)
            except RateLimitedError:
                out.append(False)
        return out

    return asyncio.run(run())


def test_checks_follow_defaults_and_overrides_with_the_principal_winning_the_pair() -> None:
    store = FakeGuardOverrideStore()
    store.put_override(override(SubjectKind.MODEL, "fraud", model_rate=FAST, rate=SLOW))
    store.put_override(override(SubjectKind.PRINCIPAL, "svc:a", model_rate=SLOW))
    guard = limits(LimitDefaults(principal=FAST, quota=Quota(5, QuotaPeriod.DAY)), store=store)
    guard.refresh()
    now = DAY_START + 10 * US
    scopes = {c.scope: c.rule for c in guard.checks("svc:a", "fraud", now)}
    assert scopes == {
        Scope.PRINCIPAL: FAST,
        Scope.MODEL: SLOW,
        Scope.PRINCIPAL_MODEL: SLOW,  # the principal's override beats the model's
        Scope.QUOTA: Quota(5, QuotaPeriod.DAY),
    }
    other = {c.scope: c.rule for c in guard.checks("svc:b", "fraud", now)}
    assert other[Scope.PRINCIPAL_MODEL] == FAST  # the model's own per-principal rate
    assert [c.scope for c in guard.checks("svc:b", None, now)] == [Scope.PRINCIPAL]


def test_cached_checks_end_with_their_quota_window_and_with_a_refresh() -> None:
    clock = Clock(DAY_START + 86_399 * US)  # the last second of the day
    store = FakeGuardOverrideStore()
    guard = limits(LimitDefaults(quota=Quota(2, QuotaPeriod.DAY)), store=store, clock=clock)
    assert admitted(guard, 3, "svc:q", "fraud") == [True, True, False]
    clock.now_us = DAY_START + 86_400 * US  # the next day: a new window, new checks
    assert admitted(guard, 3, "svc:q", "fraud") == [True, True, False]
    store.put_override(override(SubjectKind.PRINCIPAL, "svc:q", quota=Quota(4, QuotaPeriod.DAY)))
    guard.refresh()  # the cache is rebuilt from the new overrides
    assert admitted(guard, 3, "svc:q", "fraud") == [True, True, False]  # 2 used of 4


@pytest.mark.parametrize(
    ("outage", "inference", "survives"),
    [
        (OutagePolicy.CLOSED, True, False),
        (OutagePolicy.CLOSED, False, False),
        (OutagePolicy.LOCAL, True, True),
        (OutagePolicy.LOCAL, False, False),  # admin and auth: never counted locally
    ],
)
def test_an_unreachable_counter_follows_the_outage_policy(
    outage: OutagePolicy, inference: bool, survives: bool
) -> None:
    guard = limits(LimitDefaults(principal=SLOW), counter=DownCounter(), outage=outage)

    async def attempt() -> list[bool]:
        out = []
        for _ in range(3):
            try:
                await guard.admit("svc:o", "fraud" if inference else None, inference=inference)
                out.append(True)
            except RateLimitedError:
                out.append(False)
        return out

    if survives:
        assert asyncio.run(attempt()) == [True, True, False]  # the local counter still limits
    else:
        with pytest.raises(RateCounterUnavailableError):
            asyncio.run(attempt())


def test_an_address_out_of_attempts_is_blocked_until_retry_after() -> None:
    clock = Clock(DAY_START)
    guard = limits(LimitDefaults(address=Rate(per_second=1.0, burst=2)), clock=clock)
    address = IPv4Address("192.0.2.9")

    async def fail_three() -> None:
        for _ in range(2):
            await guard.charge_address(address)
        with pytest.raises(RateLimitedError) as caught:
            await guard.charge_address(address)
        assert caught.value.retry_after_s == 1

    asyncio.run(fail_three())
    with pytest.raises(RateLimitedError):
        guard.check_address(address)  # blocked without counting
    guard.check_address(IPv4Address("192.0.2.10"))  # another address is not
    clock.now_us += US
    guard.check_address(address)  # the block ends with Retry-After
