"""The rate-counter contract on every implementation (in-process, Redis at 127.0.0.1:6379), and
what only the Redis adapter must show: its URL handling, its key layout and expiries, and that
every failure is ``RateCounterUnavailableError`` without the URL's password."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator

import pytest
import redis

from strongroom.adapters.ratelimit.memory import MemoryRateCounter
from strongroom.adapters.ratelimit.redis import (
    QUOTA_MARGIN_MS,
    RATE_MARGIN_MS,
    RedisRateCounter,
)
from strongroom.core.policy.limits import (
    Quota,
    QuotaPeriod,
    Rate,
    RateCounter,
    Scope,
    quota_check,
    rate_check,
)
from strongroom.errors import ConfigurationError, RateCounterUnavailableError
from strongroom.testing.contracts.ratelimit import NOW_US, RateCounterContract, principal

REDIS_URL = os.environ.get("STRONGROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis; a test that needs it fails under CI when it is unreachable, else skips."""
    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        if _in_ci():
            pytest.fail(f"Redis at {REDIS_URL} is required when CI=true ({exc!r})", pytrace=False)
        pytest.skip(f"Redis at {REDIS_URL} not available ({type(exc).__name__})")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"strongroom-test:{secrets.token_hex(8)}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


class TestMemoryRateCounter(RateCounterContract):
    @pytest.fixture
    def rate_counter(self) -> RateCounter:
        return MemoryRateCounter()


class TestRedisRateCounter(RateCounterContract):
    @pytest.fixture
    def rate_counter(self, redis_url: str, redis_prefix: str) -> RateCounter:
        return RedisRateCounter(redis_url, prefix=redis_prefix)


# --- Redis beyond the contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "unix:///run/redis.sock",
        "redis+sentinel://127.0.0.1",
        "127.0.0.1:6379",
        "",
        "redis://:hunter2@127.0.0.1:notaport/0",
        "redis://:hunter2@/0",
        "redis://:hunter2@127.0.0.1:6379/zero",
        "redis://:hunter2@127.0.0.1:6379/0?socket_timeout=30",
        "redis://:hunter2@127.0.0.1:6379/0?ssl_ca_certs=/etc/ca.pem",
        "rediss://:hunter2@127.0.0.1:6379/0?password=other",
    ],
)
def test_only_redis_urls_with_known_parameters_are_accepted(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisRateCounter(url)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None or "hunter2" not in str(caught.value.__cause__)


def test_a_url_is_shown_without_credentials() -> None:
    counter = RedisRateCounter("rediss://user:hunter2@cache.internal:6380/3?ssl_ca_certs=/ca.pem")
    assert counter.location == "rediss://cache.internal:6380/3"
    assert RedisRateCounter("redis://[::1]").location == "redis://[::1]:6379/0"


@pytest.mark.parametrize(
    "options",
    [{"timeout_s": 0}, {"timeout_s": -1.0}, {"timeout_s": 600}, {"max_connections": 0}],
)
def test_unsafe_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RedisRateCounter("redis://127.0.0.1", **options)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_redis_is_unavailable_and_never_shows_the_password() -> None:
    counter = RedisRateCounter(f"redis://admin:hunter2@127.0.0.1:{_closed_port()}/0")

    async def attempt() -> None:
        try:
            await counter.take([principal("alice")], NOW_US)
        finally:
            await counter.close()

    with pytest.raises(RateCounterUnavailableError) as caught:
        asyncio.run(attempt())
    assert caught.value.code == "ratelimit.unavailable"
    assert "127.0.0.1" in str(caught.value)
    chain = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert all("hunter2" not in repr(error) for error in chain)


def test_keys_hold_integers_and_expire_after_their_state(redis_url: str, redis_prefix: str) -> None:
    counter = RedisRateCounter(redis_url, prefix=redis_prefix)
    rate = rate_check(Scope.PRINCIPAL, "alice", Rate(2.0, 4))  # 500 ms apart
    quota = quota_check("alice", Quota(10, QuotaPeriod.DAY), NOW_US)

    async def scenario() -> None:
        try:
            for _ in range(3):
                assert (await counter.take([rate, quota], NOW_US)).allowed
        finally:
            await counter.close()

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        assert client.get(redis_prefix + rate.key) == str(NOW_US + 3 * 500_000).encode()
        assert client.get(redis_prefix + quota.key) == b"3"
        rate_ttl = client.pttl(redis_prefix + rate.key)
        quota_ttl = client.pttl(redis_prefix + quota.key)
    assert 1500 + RATE_MARGIN_MS - 1000 < rate_ttl <= 1500 + RATE_MARGIN_MS
    window_ms = -(-(quota.expires_us - NOW_US) // 1000)
    assert window_ms + QUOTA_MARGIN_MS - 1000 < quota_ttl <= window_ms + QUOTA_MARGIN_MS


def test_a_corrupt_counter_is_unavailable_not_allowed(redis_url: str, redis_prefix: str) -> None:
    check = principal("alice")
    with redis.Redis.from_url(redis_url) as client:
        client.set(redis_prefix + check.key, b"1.5e15", px=60_000)  # a float, even if whole
        client.set(redis_prefix + principal("bob").key, b"not a number", px=60_000)
        client.rpush(redis_prefix + principal("carol").key, b"1")
        client.pexpire(redis_prefix + principal("carol").key, 60_000)
    counter = RedisRateCounter(redis_url, prefix=redis_prefix)

    async def attempt(name: str) -> None:
        try:
            await counter.take([principal(name)], NOW_US)
        finally:
            await counter.close()

    for name in ("alice", "bob", "carol"):  # float, text, a list
        with pytest.raises(RateCounterUnavailableError):
            asyncio.run(attempt(name))


def test_a_rate_too_slow_for_exact_lua_arithmetic_is_refused(redis_url: str) -> None:
    counter = RedisRateCounter(redis_url)
    glacial = rate_check(Scope.PRINCIPAL, "alice", Rate(1e-9, 10))  # one per 31.7 years

    async def attempt() -> None:
        try:
            await counter.take([glacial], NOW_US)
        finally:
            await counter.close()

    with pytest.raises(ConfigurationError):
        asyncio.run(attempt())


def test_one_counter_serves_several_event_loops(redis_url: str, redis_prefix: str) -> None:
    """Each loop gets its own client, and the state is shared through Redis."""
    counter = RedisRateCounter(redis_url, prefix=redis_prefix)
    check = principal("alice", Rate(1.0, 3))

    async def once() -> bool:
        try:
            return (await counter.take([check], NOW_US)).allowed
        finally:
            await counter.close()

    assert [asyncio.run(once()) for _ in range(4)] == [True, True, True, False]
