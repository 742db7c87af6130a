"""``RedisRateCounter`` under the conditions that matter in production:

* several processes, each with several tasks, on one limit: exactly the limit passes (the script
  is atomic, so not "about" the limit);
* a Redis that stops answering (SIGSTOP): every ``take`` raises ``RateCounterUnavailableError``
  after about ``timeout_s``, never "allowed", and the same counter works again on SIGCONT;
* a Redis killed outright, then restarted on the same port (empty, without the script): errors
  while it is gone, then the counter recovers by itself.

The outage tests run a private ``redis-server`` on a free port; it is always killed afterwards.
Nothing here waits with ``time.sleep``: readiness is polled with a deadline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
import redis

from redis_harness import RedisProcess
from strongroom.adapters.ratelimit.redis import RedisRateCounter
from strongroom.core.policy.limits import (
    Check,
    Quota,
    QuotaPeriod,
    Rate,
    Scope,
    quota_check,
    rate_check,
)
from strongroom.errors import RateCounterUnavailableError

REDIS_URL = os.environ.get("STRONGROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 500
PROCESSES = 2
TASKS = 8
ATTEMPTS_PER_PROCESS = 3 * LIMIT // PROCESSES
TIMEOUT_S = 0.25
SLACK_S = 0.35
"""Scheduling slack on a loaded 2-core CI box: an answer within ``TIMEOUT_S + SLACK_S``."""
READY_S = 10.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> None:
    if _in_ci():
        pytest.fail(f"{what} is required when CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


def now_us() -> int:
    return time.time_ns() // 1000


def generous(name: str = "alice") -> Check:
    """A limit no test here reaches: only the counter's availability is under test."""
    return rate_check(Scope.PRINCIPAL, name, Rate(100_000.0, 100_000))


# --- several processes on one limit --------------------------------------------------------------


def _hammer(url: str, prefix: str, check: Check, start: Barrier, results: Any) -> None:
    """One process: its own counter, ``TASKS`` tasks sharing ``ATTEMPTS_PER_PROCESS`` takes."""

    async def run() -> int:
        counter = RedisRateCounter(url, prefix=prefix, timeout_s=5.0)
        remaining = list(range(ATTEMPTS_PER_PROCESS))

        async def task() -> int:
            allowed = 0
            while remaining:
                remaining.pop()
                allowed += (await counter.take([check], now_us())).allowed
            return allowed

        try:
            start.wait(timeout=60)
            return sum(await asyncio.gather(*(task() for _ in range(TASKS))))
        finally:
            await counter.close()

    try:
        results.put(("ok", asyncio.run(run())))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(quota_check("alice", Quota(LIMIT, QuotaPeriod.DAY), now_us()), id="quota"),
        pytest.param(
            rate_check(Scope.PRINCIPAL, "alice", Rate(0.001, LIMIT)),  # refills 1 per 1000 s
            id="rate",
        ),
    ],
)
def test_processes_sharing_a_limit_admit_exactly_the_limit(
    shared_redis: tuple[str, str], check: Check
) -> None:
    url, prefix = shared_redis
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    workers = [
        context.Process(target=_hammer, args=(url, prefix, check, start, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert [kind for kind, _ in outcomes] == ["ok"] * PROCESSES, outcomes
    assert sum(allowed for _, allowed in outcomes) == LIMIT
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES


# --- a private redis-server to stop, kill and restart --------------------------------------------


async def _timed_failure(counter: RedisRateCounter) -> float:
    """Seconds a ``take`` took to raise ``RateCounterUnavailableError`` (it must not answer)."""
    started = time.monotonic()
    with pytest.raises(RateCounterUnavailableError) as caught:
        await counter.take([generous()], now_us())
    elapsed = time.monotonic() - started
    assert "127.0.0.1" in str(caught.value)
    return elapsed


def test_a_stopped_redis_refuses_within_the_timeout_then_recovers(
    private_redis: RedisProcess,
) -> None:
    counter = RedisRateCounter(private_redis.url, timeout_s=TIMEOUT_S)

    async def scenario() -> None:
        assert (await counter.take([generous()], now_us())).allowed  # a pooled connection
        private_redis.signal(signal.SIGSTOP)
        try:
            for _ in range(3):  # the pooled connection first, then new connections
                elapsed = await _timed_failure(counter)
                assert TIMEOUT_S * 0.8 <= elapsed <= TIMEOUT_S + SLACK_S, elapsed
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(counter.take([generous(f"p{n}")], now_us()) for n in range(20)),
                return_exceptions=True,
            )
            assert time.monotonic() - started <= TIMEOUT_S + SLACK_S
            assert all(isinstance(out, RateCounterUnavailableError) for out in outcomes), outcomes
        finally:
            private_redis.signal(signal.SIGCONT)
        assert (await counter.take([generous()], now_us())).allowed

    async def run() -> None:
        try:
            await scenario()
        finally:
            await counter.close()

    asyncio.run(run())


def test_a_killed_redis_refuses_then_a_restarted_one_serves_again(
    private_redis: RedisProcess,
) -> None:
    counter = RedisRateCounter(private_redis.url, timeout_s=TIMEOUT_S)
    limited = rate_check(Scope.PRINCIPAL, "bob", Rate(1.0, 2))

    async def scenario() -> None:
        assert (await counter.take([limited], now_us())).allowed
        private_redis.kill()
        for _ in range(3):
            assert await _timed_failure(counter) <= TIMEOUT_S + SLACK_S
        private_redis.start()  # same port, empty, no script loaded: EVALSHA gets NOSCRIPT
        verdict = await counter.take([limited], now_us())
        assert verdict.allowed
        assert verdict.remaining == 1  # a fresh server: the counter starts again from rest
        with redis.Redis(port=private_redis.port) as client:
            client.script_flush()
        assert (await counter.take([generous()], now_us())).allowed

    async def run() -> None:
        try:
            await scenario()
        finally:
            await counter.close()

    asyncio.run(run())
