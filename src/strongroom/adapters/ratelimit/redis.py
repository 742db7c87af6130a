"""``RedisRateCounter``: the ``RateCounter`` port in Redis, shared by every worker and replica.

One Lua script does a whole request: it reads every check's counter, runs the same integer
arithmetic as ``gcra_step`` and ``quota_step`` (core), and writes the new states only if every
check passed. Redis runs a script atomically, so concurrent requests from any number of processes
can neither overshoot a limit nor charge part of a refused request. The script is sent once per
connection pool (``EVALSHA``; redis-py's script object loads it again after ``NOSCRIPT``, e.g.
after a restart), and it returns each check's ``(allowed, state, limit, remaining, reset_us,
retry_after_us)`` so that the ``Verdict`` is built by core's ``verdict_of``. They come back as
one string of decimal integers, not nested arrays: redis-py parses that about 35 µs faster per
request (measured), and a reply of any other shape is refused as unavailable.

Stored state, under ``prefix + check.key`` (the checks of one request must have distinct keys,
else ``InvalidInputError``, as in every counter):

* a ``Rate``: the TAT in integer microseconds, expiring ``RATE_MARGIN_MS`` after it falls to
  ``now`` (an idle bucket is full, and a missing key means exactly that, so idle keys vanish;
  the margin keeps the TAT for a replica whose clock lags, which would otherwise find the key
  gone while, for it, the bucket is not yet full);
* a ``Quota``: the count, expiring ``QUOTA_MARGIN_MS`` after its window ends (a replica whose
  clock lags a little still finds the count of the window it thinks is current).

Both expiries are relative (``PX``), computed from the caller's ``now_us``, not absolute times
on Redis's clock: a difference between the clocks of the servers and of Redis then shifts no
window. A key outlives its state by its margin (rounded up to the millisecond); it never
expires before its state is at rest, as long as the clocks of the app servers agree within the
margin.

Exactness: Lua numbers are doubles, exact for integers below 2**53 (epoch microseconds are about
1.8e15). The script divides with ``math.floor`` and turns numbers into strings with ``%d`` only,
never the float formatting Lua uses by default. A ``Rate`` so slow that ``now + (burst + 1) *
interval`` reaches 2**53 (an interval of decades) is refused with ``ConfigurationError``.

Failure is closed: any Redis error (including a Redis without the script's commands, or a reply
of the wrong shape), timeout or socket error becomes ``RateCounterUnavailableError``
(its message names the server without credentials); ``take`` never answers "allowed" unless the
script ran. Connect and read timeouts are ``timeout_s``, and the whole ``take`` is bounded by it
too; redis-py's retries are off, so a stalled Redis costs each request ``timeout_s``, not several
times that. A request that timed out may still be counted if Redis wakes up and runs it later:
the error is on the safe side. Connections are re-established by themselves when Redis is back.

Deployment:

* A single Redis, or a primary with replicas (point the URL at the primary). **Redis Cluster is
  not supported**: one script touches the keys of all of a request's checks, which a cluster
  refuses unless they share a hash tag, and one hash tag for every key would put all counters on
  one node anyway. Keys carry no hash tag.
* Use ``maxmemory-policy noeviction``: every counter key has a TTL, so a ``volatile-*`` or
  ``allkeys-*`` policy could evict live counters and reset limits.

Event loops: a redis-py asyncio client belongs to the loop it was first used on. The counter keeps
one client per running loop, made on first use (the server runs one loop per worker process, so
there is one); clients of loops that have closed are dropped (their sockets are left to the
garbage collector). ``close`` closes the client of the running loop and of loops still running
in other threads. Each client has its own pool of at most ``max_connections`` connections; a
request waits for a free one within its ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from strongroom.core.policy.limits import (
    UNLIMITED,
    Check,
    Quota,
    Step,
    Verdict,
    verdict_of,
)
from strongroom.errors import ConfigurationError, InvalidInputError, RateCounterUnavailableError

DEFAULT_PREFIX: Final = "strongroom:rl:"
DEFAULT_TIMEOUT_S: Final = 0.25
DEFAULT_MAX_CONNECTIONS: Final = 32
RATE_MARGIN_MS: Final = 1_000
QUOTA_MARGIN_MS: Final = 60_000
EXACT_LIMIT: Final = 2**53
_STEP_FIELDS: Final = 6
_TLS_PARAMETERS: Final = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})

# KEYS[i]: the counter of check i. ARGV[1]: now (µs). Then 3 per check: kind ("r" or "q") and
# (interval_us, burst) for a rate or (limit, window end in µs) for a quota.
_SCRIPT: Final = """
local now = tonumber(ARGV[1])
local rate_margin, quota_margin = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local out, expiry = {}, {}
local admit = true
for i = 1, #KEYS do
  local kind, a, b = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local raw = redis.call('GET', KEYS[i])
  local held = nil
  if raw then
    held = tonumber(raw)
    if not string.match(raw, '^%d+$') or held >= 9007199254740992 then
      return redis.error_reply('strongroom: a counter holds something else than its state')
    end
  end
  if kind == 'r' then
    local capacity = b * a
    local base = now
    if held ~= nil and held >= now then base = held end
    local tat = base + a
    if tat - now <= capacity then
      out[i] = {1, tat, b, math.floor((now + capacity - tat) / a), tat - now, 0}
      expiry[i] = math.floor((tat - now + 999) / 1000) + rate_margin
    else
      out[i] = {0, base, b, 0, base - now, tat - capacity - now}
      admit = false
    end
  else
    local used = held or 0
    local left = b - now
    if left < 0 then left = 0 end
    if used < a then
      out[i] = {1, used + 1, a, a - used - 1, left, 0}
      expiry[i] = math.floor((left + 999) / 1000) + quota_margin
    else
      out[i] = {0, used, a, 0, left, left}
      admit = false
    end
  end
end
if admit then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%d', out[i][2]), 'PX', string.format('%d', expiry[i]))
  end
end
local text = {}
for i = 1, #KEYS do
  for j = 1, 6 do text[#text + 1] = string.format('%d', out[i][j]) end
end
return table.concat(text, ' ')
"""
"""The last two ARGV are ``RATE_MARGIN_MS`` and ``QUOTA_MARGIN_MS``."""


@dataclass(frozen=True, slots=True)
class _Server:
    """Where Redis is, parsed from the URL; ``location`` is safe to show (no credentials)."""

    location: str
    options: dict[str, Any]
    tls: bool


@dataclass(frozen=True, slots=True)
class _Bound:
    """A client and its script, usable on one event loop only."""

    client: Redis
    script: AsyncScript


class RedisRateCounter:
    """``RateCounter`` in Redis, atomic across processes (see module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError("the rate counter key prefix is a string")
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 60:  # noqa: PLR2004
            raise ConfigurationError("the rate counter timeout is more than 0 and at most 60 s")
        if type(max_connections) is not int or max_connections < 1:
            raise ConfigurationError("the rate counter's max_connections is a positive integer")
        self._server = _parse_url(url)
        self._prefix = prefix
        self._timeout_s = float(timeout_s)
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, _Bound] = {}

    @property
    def location(self) -> str:
        """The server, as ``redis://host:port/db`` without credentials: safe for logs."""
        return self._server.location

    async def take(self, checks: Sequence[Check], now_us: int) -> Verdict:
        """Evaluate every check at ``now_us`` in one script; charge all only if all pass."""
        if not checks:
            return UNLIMITED
        keys, args = self._arguments(checks, now_us)
        bound = self._bound()
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await bound.script(keys, args, client=bound.client)
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise RateCounterUnavailableError(
                f"the rate counter at {self.location} did not answer ({type(exc).__name__})"
            ) from exc
        return verdict_of(checks, self._steps(reply, len(checks)))

    async def close(self) -> None:
        """Close the client of the running loop (and of other loops still running)."""
        with self._lock:
            bound = dict(self._clients)
            self._clients.clear()
        current = asyncio.get_running_loop()
        for loop, held in bound.items():
            if loop is current:
                await held.client.aclose()
            elif loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(held.client.aclose(), loop)
                with contextlib.suppress(TimeoutError, RedisError, OSError):
                    await asyncio.wait_for(asyncio.wrap_future(closing), self._timeout_s)

    def _bound(self) -> _Bound:
        """This loop's client, made on first use; clients of closed loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            bound = self._clients.get(loop)
            if bound is None:
                for stale in [held for held in self._clients if held.is_closed()]:
                    del self._clients[stale]
                client = Redis.from_pool(self._pool())
                bound = _Bound(client, client.register_script(_SCRIPT))
                self._clients[loop] = bound
            return bound

    def _pool(self) -> BlockingConnectionPool:
        """A bounded pool: waits up to ``timeout_s`` for a free connection; no retries."""
        return BlockingConnectionPool(
            max_connections=self._max_connections,
            timeout=self._timeout_s,
            connection_class=SSLConnection if self._server.tls else Connection,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
            **self._server.options,
        )

    def _arguments(self, checks: Sequence[Check], now_us: int) -> tuple[list[str], list[str]]:
        """The script's KEYS and ARGV, as decimal integers (exact in Lua below 2**53)."""
        if type(now_us) is not int or not 0 <= now_us < EXACT_LIMIT:
            raise InvalidInputError("now_us is a non-negative integer below 2**53")
        keys = [self._prefix + check.key for check in checks]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("the checks of one request must have distinct keys")
        args = [str(now_us)]
        for check in checks:
            rule = check.rule
            if isinstance(rule, Quota):
                args += ["q", str(rule.limit), str(check.expires_us)]
                continue
            interval = rule.interval_us
            if now_us + (rule.burst + 1) * interval >= EXACT_LIMIT:
                raise ConfigurationError(
                    "a rate this slow cannot be counted exactly in Redis; use a quota"
                )
            args += ["r", str(interval), str(rule.burst)]
        args += [str(RATE_MARGIN_MS), str(QUOTA_MARGIN_MS)]
        return keys, args

    def _steps(self, reply: Any, count: int) -> list[Step]:
        """Six decimal integers per check, checked (a proxy or a wrong server must not read as
        "allowed"). One string parses much faster in redis-py than nested arrays of integers."""
        fields = reply.split(b" ") if isinstance(reply, bytes) else []
        if len(fields) != _STEP_FIELDS * count or not all(field.isdigit() for field in fields):
            raise RateCounterUnavailableError(
                f"the rate counter at {self.location} gave a malformed answer"
            )
        numbers = [int(field) for field in fields]
        return [
            Step(numbers[at] == 1, *numbers[at + 1 : at + _STEP_FIELDS])
            for at in range(0, len(numbers), _STEP_FIELDS)
        ]


def _parse_url(url: str) -> _Server:
    """Parse ``redis://`` or ``rediss://`` ourselves, so that no query parameter can override the
    timeouts, and so that errors never repeat the URL (it may hold a password)."""
    if not isinstance(url, str):
        raise ConfigurationError("the rate counter URL is a string")
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        raise ConfigurationError(
            "the rate counter URL must start with redis:// or rediss:// "
            "(unix sockets and Redis Cluster are not supported)"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigurationError("the rate counter URL has an invalid port") from None
    host = parts.hostname
    if not host:
        raise ConfigurationError("the rate counter URL names no host")
    database = parts.path.lstrip("/") or "0"
    if not database.isdigit() or not database.isascii():
        raise ConfigurationError("the rate counter URL's path is a database number")
    tls = parts.scheme == "rediss"
    options: dict[str, Any] = {"host": host, "port": port, "db": int(database)}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if not tls or name not in _TLS_PARAMETERS:
            raise ConfigurationError(
                f"unsupported rate counter URL parameter {name!r}; rediss:// accepts only "
                + ", ".join(sorted(_TLS_PARAMETERS))
            )
        options[name] = value
    shown = f"[{host}]" if ":" in host else host
    return _Server(f"{parts.scheme}://{shown}:{port}/{database}", options, tls)
