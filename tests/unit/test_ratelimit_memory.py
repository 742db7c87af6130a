"""``MemoryRateCounter`` against the reference model (core's steps over a dict) on random
sequences of requests and time steps, and its bound: expired counters are swept, live ones are
never evicted, a full table refuses new keys (charging nothing), sweeps are rationed."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from strongroom.adapters.ratelimit.memory import SWEEP_GAP_US, MemoryRateCounter
from strongroom.core.policy.limits import (
    Check,
    Quota,
    QuotaPeriod,
    Rate,
    Scope,
    Verdict,
    quota_check,
    rate_check,
)
from strongroom.errors import ConfigurationError, RateCounterUnavailableError
from strongroom.testing.contracts.ratelimit import NOW_US, ReferenceCounter, epoch_us

T = TypeVar("T")


def done(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending (the memory counter never awaits)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the memory counter suspended inside take")


def take(counter: MemoryRateCounter, checks: Sequence[Check], now_us: int) -> Verdict:
    return done(counter.take(checks, now_us))


def rate(name: str, per_second: float, burst: int) -> Callable[[int], Check]:
    return lambda _now: rate_check(Scope.PRINCIPAL, name, Rate(per_second, burst))


def quota(name: str, limit: int, period: QuotaPeriod) -> Callable[[int], Check]:
    return lambda now: quota_check(name, Quota(limit, period), now)


POOL = [
    rate("a", 1.0, 3),
    rate("b", 10.0, 1),
    rate("c", 0.5, 2),
    rate("d", 1_000_000.0, 5),
    rate("e", 3.0, 7),
    quota("q", 4, QuotaPeriod.DAY),
    quota("r", 6, QuotaPeriod.MONTH),
]
"""Checks, as functions of the time (a quota's key names its window)."""
STEPS_US = [0, 0, 1, 2, 999, 100_000, 333_333, 1_000_000, 5_000_000, 3_600 * 10**6, 86_400 * 10**6]


class MemoryAgreesWithTheReference(RuleBasedStateMachine):
    """Every verdict equals the reference's; a bounded table may only refuse (raise) instead,
    and only for a request that needs a key it does not hold, charging nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.reference = ReferenceCounter()
        self.now = epoch_us(2026, 1, 31, 23, 59, 58)
        self.counter = MemoryRateCounter()
        self.max_keys = 100_000

    @initialize(max_keys=st.sampled_from([1, 2, 3, 5, 100_000]))
    def bound(self, max_keys: int) -> None:
        self.counter = MemoryRateCounter(max_keys=max_keys)
        self.max_keys = max_keys

    @rule(step=st.sampled_from(STEPS_US))
    def wait(self, step: int) -> None:
        self.now += step

    @rule(picks=st.lists(st.integers(0, len(POOL) - 1), unique=True, max_size=4))
    def take(self, picks: list[int]) -> None:
        checks = [POOL[index](self.now) for index in picks]
        held_before = {check.key for check in checks if check.key in self.counter._states}
        try:
            verdict = take(self.counter, checks, self.now)
        except RateCounterUnavailableError:
            assert len(held_before) < len(checks), "refused although every key was held"
            return
        assert verdict == self.reference.take(checks, self.now)

    @invariant()
    def bounded(self) -> None:
        assert len(self.counter) <= self.max_keys


TestMemoryAgreesWithTheReference = MemoryAgreesWithTheReference.TestCase
TestMemoryAgreesWithTheReference.settings = settings(max_examples=300, stateful_step_count=40)


# --- the bound ------------------------------------------------------------------------------------

SLOW = Rate(1.0, 2)  # live for up to 2 s after a take
FAST = Rate(20_000.0, 1)  # 50 µs apart: expired 50 µs after a take


def principal(name: str, rule: Rate = SLOW) -> Check:
    return rate_check(Scope.PRINCIPAL, name, rule)


def test_a_full_table_refuses_new_keys_and_charges_nothing() -> None:
    counter = MemoryRateCounter(max_keys=2)
    alice, bob, carol = principal("alice"), principal("bob"), principal("carol")
    assert take(counter, [alice], NOW_US).remaining == 1
    assert take(counter, [bob], NOW_US).allowed
    for _ in range(3):
        with pytest.raises(RateCounterUnavailableError):
            take(counter, [alice, carol], NOW_US)
    assert len(counter) == 2
    assert take(counter, [alice], NOW_US).remaining == 0  # the refusals charged nothing
    assert not take(counter, [alice, bob], NOW_US).allowed  # held keys are still counted


def test_expired_counters_make_room_and_are_the_same_as_none() -> None:
    counter = MemoryRateCounter(max_keys=2)
    take(counter, [principal("alice")], NOW_US)
    take(counter, [principal("bob", FAST)], NOW_US)
    with pytest.raises(RateCounterUnavailableError):
        take(counter, [principal("carol")], NOW_US + 49)
    assert take(counter, [principal("carol")], NOW_US + 50).allowed
    assert principal("bob", FAST).key not in counter._states
    assert take(counter, [principal("alice")], NOW_US + 50).remaining == 0  # alice was kept
    with pytest.raises(RateCounterUnavailableError):  # bob is new again, and nothing expired
        take(counter, [principal("bob", FAST)], NOW_US + 51)


def test_a_sweep_that_drops_a_key_of_the_request_counts_it_as_new() -> None:
    counter = MemoryRateCounter(max_keys=3)
    alice, bob = principal("alice"), principal("bob", FAST)
    take(counter, [alice], NOW_US)
    take(counter, [bob], NOW_US)
    with pytest.raises(RateCounterUnavailableError):  # bob expires in the sweep: 3 new keys
        take(counter, [alice, bob, principal("carol"), principal("dave")], NOW_US + 50)
    assert len(counter) <= 3
    assert take(counter, [alice], NOW_US + 50).remaining == 0  # charged once, by the first take


def test_an_ended_quota_window_makes_room() -> None:
    counter = MemoryRateCounter(max_keys=1)
    daily = Quota(5, QuotaPeriod.DAY)
    today = quota_check("alice", daily, NOW_US)
    take(counter, [today], NOW_US)
    with pytest.raises(RateCounterUnavailableError):
        take(counter, [quota_check("bob", daily, NOW_US)], today.expires_us - 1)
    tomorrow = quota_check("alice", daily, today.expires_us)
    assert take(counter, [tomorrow], today.expires_us).remaining == 4
    assert list(counter._states) == [tomorrow.key]


def test_sweeps_are_rationed() -> None:
    counter = MemoryRateCounter(max_keys=2)
    take(counter, [principal("alice")], NOW_US)
    take(counter, [principal("bob", FAST)], NOW_US)
    take(counter, [principal("carol", FAST)], NOW_US + 50)  # sweeps bob out at NOW_US + 50
    with pytest.raises(RateCounterUnavailableError):  # carol expired, but too soon to scan
        take(counter, [principal("dave")], NOW_US + 100)
    with pytest.raises(RateCounterUnavailableError):
        take(counter, [principal("dave")], NOW_US + 50 + SWEEP_GAP_US - 1)
    assert take(counter, [principal("dave")], NOW_US + 50 + SWEEP_GAP_US).allowed
    assert set(counter._states) == {principal("alice").key, principal("dave").key}


def test_a_table_of_live_counters_is_not_scanned_before_one_can_expire() -> None:
    counter = MemoryRateCounter(max_keys=1)
    take(counter, [principal("alice")], NOW_US)  # expires at NOW_US + 1 s
    scans = 0
    original = counter._sweep

    def counting(now_us: int) -> None:
        nonlocal scans
        before = counter._last_sweep_us
        original(now_us)
        scans += counter._last_sweep_us != before

    counter._sweep = counting  # type: ignore[method-assign]
    for offset in range(0, 900_000, 1_000):
        with pytest.raises(RateCounterUnavailableError):
            take(counter, [principal("bob")], NOW_US + offset)
    assert scans == 0


@pytest.mark.parametrize("max_keys", [0, -1, 1.5, True, "10"])
def test_the_bound_is_a_positive_integer(max_keys: Any) -> None:
    with pytest.raises(ConfigurationError):
        MemoryRateCounter(max_keys=max_keys)


def test_close_forgets_every_counter() -> None:
    counter = MemoryRateCounter()
    take(counter, [principal("alice")], NOW_US)
    done(counter.close())
    assert len(counter) == 0
    assert take(counter, [principal("alice")], NOW_US).remaining == 1


# --- threads, each with its own event loop --------------------------------------------------------


def test_threads_with_their_own_loops_count_exactly() -> None:
    counter = MemoryRateCounter()
    limit, threads, attempts = 2_000, 6, 1_000  # 6000 attempts on a limit of 2000
    quota_ = quota_check("alice", Quota(limit, QuotaPeriod.DAY), NOW_US)
    rate_ = principal("alice", Rate(0.001, limit + 50))
    start = threading.Barrier(threads)
    allowed: list[int] = []

    async def hammer() -> int:
        verdicts = await asyncio.gather(
            *(counter.take([rate_, quota_], NOW_US) for _ in range(attempts))
        )
        return sum(verdict.allowed for verdict in verdicts)

    def worker() -> None:
        start.wait(timeout=30)
        allowed.append(asyncio.run(hammer()))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a missing lock shows
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert len(allowed) == threads
    assert sum(allowed) == limit
    assert take(counter, [rate_], NOW_US).remaining == 50 - 1  # rate charged exactly `limit`
