"""Contract suite of the rate-counter port (``core.policy.limits.RateCounter``).

Every counter (in-process, Redis, any future one) must pass the same tests. An adapter's test
module subclasses the suite and provides a fresh counter, holding no state, as a fixture; the
suite closes it at the end of the test:

    class TestMemoryRateCounter(RateCounterContract):
        @pytest.fixture
        def rate_counter(self): ...  # a new, empty counter (for Redis: a unique key prefix)

The suite drives the counter on one event loop per test and passes ``now_us`` explicitly: time
never comes from the wall clock, so "exactly one more after one interval" is tested to the
microsecond, without sleeps. Beyond the port docstring it pins: a rest restores the whole burst;
a refused request moves no state (its ``retry_after`` counts down, not up); a new quota window
starts from zero; two checks of one request on the same key are an ``InvalidInputError``; and
every verdict equals the one of ``ReferenceCounter``, core's arithmetic over a plain dict.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from strongroom.core.policy.limits import (
    UNLIMITED,
    US,
    Check,
    Quota,
    QuotaPeriod,
    Rate,
    RateCounter,
    Scope,
    Verdict,
    gcra_step,
    quota_check,
    quota_step,
    rate_check,
    verdict_of,
)
from strongroom.errors import InvalidInputError

T = TypeVar("T")


def epoch_us(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> int:
    """Microseconds since the epoch of a UTC date and time (exact: no float seconds)."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp()) * US + micro


NOW_US = epoch_us(2026, 3, 14, 15, 9, 26, 535_897)
"""Mid-day, mid-month: no test near ``NOW_US`` crosses a window by accident."""
SECOND_RATE = Rate(per_second=1.0, burst=5)
INTERVAL_US = SECOND_RATE.interval_us


@dataclass(frozen=True)
class Driver:
    """A counter on the test's own event loop, called synchronously."""

    counter: RateCounter
    runner: asyncio.Runner

    def __call__(self, checks: Sequence[Check], now_us: int) -> Verdict:
        return self.runner.run(self.counter.take(checks, now_us))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)


Take = Callable[[Sequence[Check], int], Verdict]


class ReferenceCounter:
    """What the port means, in a few lines: core's steps over a dict, all or nothing, unbounded,
    one thread. Adapters are compared with it; it is not one (it never forgets a key)."""

    def __init__(self) -> None:
        self.states: dict[str, int] = {}

    def take(self, checks: Sequence[Check], now_us: int) -> Verdict:
        steps = [
            quota_step(self.states.get(check.key), now_us, check)
            if isinstance(check.rule, Quota)
            else gcra_step(self.states.get(check.key), now_us, check.rule)
            for check in checks
        ]
        if all(step.allowed for step in steps):
            for check, step in zip(checks, steps, strict=True):
                self.states[check.key] = step.state
        return verdict_of(checks, steps)


def principal(name: str, rule: Rate = SECOND_RATE) -> Check:
    return rate_check(Scope.PRINCIPAL, name, rule)


def exhaust(take: Take, check: Check, now_us: int) -> int:
    """Take ``check`` alone at ``now_us`` until refused; how many passed (bounded)."""
    for passed in range(10_000):
        if not take([check], now_us).allowed:
            return passed
    raise AssertionError("a counter never refused")


class RateCounterContract:
    """Subclass it and define the ``rate_counter`` fixture."""

    @pytest.fixture
    def rate_counter(self) -> RateCounter:
        raise NotImplementedError("the adapter's test class provides rate_counter")

    @pytest.fixture
    def take(self, rate_counter: RateCounter) -> Iterator[Driver]:
        with asyncio.Runner() as runner:
            driver = Driver(rate_counter, runner)
            try:
                yield driver
            finally:
                runner.run(rate_counter.close())

    # --- GCRA -------------------------------------------------------------------------------------

    def test_no_checks_is_unlimited(self, take: Driver) -> None:
        assert take([], NOW_US) == UNLIMITED
        assert take([principal("alice")], NOW_US).remaining == SECOND_RATE.burst - 1

    def test_exactly_burst_pass_at_one_instant(self, take: Driver) -> None:
        check = principal("alice")
        for passed in range(1, 6):
            verdict = take([check], NOW_US)
            assert verdict == Verdict(
                allowed=True,
                scope=Scope.PRINCIPAL,
                limit=5,
                remaining=5 - passed,
                reset_us=passed * INTERVAL_US,
                retry_after_us=0,
            )
        refused = Verdict(
            allowed=False,
            scope=Scope.PRINCIPAL,
            limit=5,
            remaining=0,
            reset_us=5 * INTERVAL_US,
            retry_after_us=INTERVAL_US,
        )
        assert take([check], NOW_US) == refused
        assert take([check], NOW_US) == refused  # a refusal moved nothing

    def test_one_more_after_exactly_one_interval(self, take: Driver) -> None:
        check = principal("alice")
        assert exhaust(take, check, NOW_US) == 5
        early = take([check], NOW_US + INTERVAL_US - 1)
        assert not early.allowed
        assert early.retry_after_us == 1
        on_time = take([check], NOW_US + INTERVAL_US)
        assert on_time.allowed
        assert on_time.remaining == 0
        assert on_time.reset_us == 5 * INTERVAL_US
        again = take([check], NOW_US + INTERVAL_US)
        assert not again.allowed
        assert again.retry_after_us == INTERVAL_US

    def test_retry_after_counts_down_while_refused(self, take: Driver) -> None:
        check = principal("alice")
        exhaust(take, check, NOW_US)
        for elapsed in (0, 1, INTERVAL_US // 4, INTERVAL_US // 2, INTERVAL_US - 1):
            verdict = take([check], NOW_US + elapsed)
            assert not verdict.allowed
            assert verdict.retry_after_us == INTERVAL_US - elapsed
            assert verdict.reset_us == 5 * INTERVAL_US - elapsed

    def test_a_full_rest_restores_the_whole_burst(self, take: Driver) -> None:
        check = principal("alice")
        exhaust(take, check, NOW_US)
        assert exhaust(take, check, NOW_US + 5 * INTERVAL_US - 1) == 4
        assert exhaust(take, check, NOW_US + 20 * INTERVAL_US) == 5
        assert exhaust(take, check, NOW_US + 10**6 * INTERVAL_US) == 5

    # --- quotas -----------------------------------------------------------------------------------

    def test_exactly_limit_pass_in_a_day_then_the_next_day_starts_at_zero(
        self, take: Driver
    ) -> None:
        rule = Quota(3, QuotaPeriod.DAY)
        end = epoch_us(2026, 3, 15)
        check = quota_check("alice", rule, NOW_US)
        assert check.expires_us == end
        assert [take([check], NOW_US).remaining for _ in range(3)] == [2, 1, 0]
        refused = take([check], NOW_US + 5)
        assert refused == Verdict(
            allowed=False,
            scope=Scope.QUOTA,
            limit=3,
            remaining=0,
            reset_us=end - NOW_US - 5,
            retry_after_us=end - NOW_US - 5,
        )
        assert take([check], end - 1).retry_after_us == 1
        tomorrow = quota_check("alice", rule, end)
        assert tomorrow.key != check.key
        first = take([tomorrow], end)
        assert first == Verdict(
            allowed=True,
            scope=Scope.QUOTA,
            limit=3,
            remaining=2,
            reset_us=24 * 3600 * US,
            retry_after_us=0,
        )
        assert exhaust(take, tomorrow, end + 1) == 2

    def test_month_windows(self, take: Driver) -> None:
        rule = Quota(2, QuotaPeriod.MONTH)
        end = epoch_us(2026, 4, 1)
        check = quota_check("alice", rule, NOW_US)
        assert exhaust(take, check, NOW_US) == 2
        last = take([check], end - 1)
        assert not last.allowed
        assert last.retry_after_us == last.reset_us == 1
        april = quota_check("alice", rule, end)
        verdict = take([april], end)
        assert verdict.allowed
        assert verdict.remaining == 1
        assert verdict.reset_us == 30 * 24 * 3600 * US  # April has 30 days

    # --- one request, several checks --------------------------------------------------------------

    def test_a_refused_request_charges_none_of_its_checks(self, take: Driver) -> None:
        rate = principal("alice", Rate(1.0, 2))
        quota = quota_check("alice", Quota(1, QuotaPeriod.DAY), NOW_US)
        assert take([quota], NOW_US).allowed
        for _ in range(3):
            verdict = take([rate, quota], NOW_US)
            assert not verdict.allowed
            assert verdict.scope is Scope.QUOTA
        assert exhaust(take, rate, NOW_US) == 2  # the rate was never charged

        other_quota = quota_check("bob", Quota(2, QuotaPeriod.DAY), NOW_US)
        for _ in range(3):
            assert take([other_quota, rate], NOW_US).scope is Scope.PRINCIPAL
        assert exhaust(take, other_quota, NOW_US) == 2  # nor was the quota

    def test_the_verdict_reports_the_most_constraining_check(self, take: Driver) -> None:
        wide = rate_check(Scope.PRINCIPAL, "alice", Rate(1.0, 10))
        narrow = rate_check(Scope.MODEL, "fraud", Rate(0.5, 3))
        verdict = take([wide, narrow], NOW_US)
        assert (verdict.allowed, verdict.scope, verdict.limit, verdict.remaining) == (
            True,
            Scope.MODEL,
            3,
            2,
        )
        assert verdict.reset_us == 2 * US
        take([wide, narrow], NOW_US)
        take([wide, narrow], NOW_US)
        refused = take([narrow, wide], NOW_US)
        assert (refused.allowed, refused.scope, refused.retry_after_us) == (
            False,
            Scope.MODEL,
            2 * US,
        )
        slow = rate_check(Scope.ADDRESS, "192.0.2.1", Rate(0.25, 1))
        take([slow], NOW_US)
        both = take([wide, narrow, slow], NOW_US)
        assert (both.scope, both.retry_after_us, both.limit) == (Scope.ADDRESS, 4 * US, 1)

    def test_keys_are_independent(self, take: Driver) -> None:
        assert exhaust(take, principal("alice"), NOW_US) == 5
        assert exhaust(take, principal("bob"), NOW_US) == 5
        assert exhaust(take, rate_check(Scope.MODEL, "alice", SECOND_RATE), NOW_US) == 5
        daily = Quota(2, QuotaPeriod.DAY)
        assert exhaust(take, quota_check("alice", daily, NOW_US), NOW_US) == 2
        assert exhaust(take, quota_check("bob", daily, NOW_US), NOW_US) == 2

    def test_two_checks_on_one_key_are_refused_as_input(self, take: Driver) -> None:
        check = principal("alice")
        same_key = Check(Scope.MODEL, check.key, Rate(2.0, 9))
        for checks in ([check, check], [check, same_key]):
            with pytest.raises(InvalidInputError):
                take(checks, NOW_US)
        assert exhaust(take, check, NOW_US) == 5

    # --- against the reference --------------------------------------------------------------------

    def test_verdicts_equal_the_core_arithmetic(self, take: Driver) -> None:
        """A random walk across a day and a month boundary, with several instants repeated."""
        rng = random.Random(20_260_331)  # noqa: S311 - a reproducible walk, not a secret
        rules = [Rate(1.0, 5), Rate(7.0, 3), Rate(0.5, 1), Rate(1000.0, 20), Rate(3.3, 4)]
        quotas = [Quota(9, QuotaPeriod.DAY), Quota(25, QuotaPeriod.MONTH)]
        reference = ReferenceCounter()
        now = epoch_us(2026, 3, 31, 23, 59, 50)
        for _ in range(400):
            now += rng.choice([0, 0, 1, 999, 50_000, 142_857, 400_000, 1_000_000])
            checks = [
                rate_check(Scope.PRINCIPAL, f"p{index}", rule)
                for index, rule in enumerate(rules)
                if rng.random() < 0.4
            ]
            checks += [
                quota_check(f"q{index}", quota, now)
                for index, quota in enumerate(quotas)
                if rng.random() < 0.3
            ]
            assert take(checks, now) == reference.take(checks, now), (checks, now)

    def test_concurrent_takes_count_exactly(self, take: Driver) -> None:
        limit = 40
        check = quota_check("alice", Quota(limit, QuotaPeriod.DAY), NOW_US)
        rate = principal("alice", Rate(0.001, limit + 5))

        async def hammer() -> list[Verdict]:
            return await asyncio.gather(
                *(take.counter.take([rate, check], NOW_US) for _ in range(3 * limit))
            )

        verdicts = take.run(hammer())
        assert sum(verdict.allowed for verdict in verdicts) == limit
        assert sorted(v.remaining for v in verdicts if v.allowed) == list(range(limit))
