"""Rate limits and quotas: the rules, the arithmetic, and the ``RateCounter`` port.

A request is admitted only if it passes every ``Check`` that applies to it (its principal, its
model, the pair, its client address, the principal's quota). A counter takes all of a request's
checks at once, **all or nothing**: if one refuses, none is charged, so a refused request never
eats into another limit, and concurrent requests on several workers or replicas cannot overshoot
(the Redis adapter runs the same arithmetic in one Lua script).

Two kinds of rule:

* ``Rate``: requests per second with a burst, counted with GCRA (the generic cell rate
  algorithm, a token bucket stored as one number, the "theoretical arrival time"). From rest,
  exactly ``burst`` requests pass at once, then one every ``1 / per_second`` seconds.
* ``Quota``: at most ``limit`` requests per calendar day or month (UTC); the window is part of
  the counter's key, so a new window starts from zero.

Invariants:

* Times are **integer microseconds** since the Unix epoch, passed in (core has no clock): float
  seconds would make "exactly N" depend on rounding. Every adapter gets the same ``now_us``
  arithmetic from ``gcra_step`` and ``quota_step``.
* A ``Verdict`` describes the most constraining check: the one that refused, or, when all
  passed, the one with the fewest requests left. That is what ``RateLimit-*`` headers report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, NamedTuple, Protocol

from strongroom.errors import InvalidInputError

US: Final = 1_000_000
MAX_PER_SECOND: Final = 1_000_000.0
MAX_BURST: Final = 1_000_000
MAX_QUOTA: Final = 10**12
MAX_KEY_CHARS: Final = 512
_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")


class Scope(StrEnum):
    """What a check counts; also the name reported in the audit record and the headers."""

    PRINCIPAL = "principal"
    MODEL = "model"
    PRINCIPAL_MODEL = "principal_model"
    ADDRESS = "address"
    QUOTA = "quota"


class QuotaPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` sustained, up to ``burst`` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        per_second = self.per_second
        if (
            not isinstance(per_second, int | float)
            or isinstance(per_second, bool)
            or not math.isfinite(per_second)
            or not 0 < per_second <= MAX_PER_SECOND
        ):
            raise InvalidInputError(f"a rate is more than 0 and at most {MAX_PER_SECOND:g}/s")
        if type(self.burst) is not int or not 1 <= self.burst <= MAX_BURST:
            raise InvalidInputError(f"a burst is an integer from 1 to {MAX_BURST}")

    @property
    def interval_us(self) -> int:
        """Microseconds between two requests at the sustained rate (at least 1)."""
        return max(1, round(US / self.per_second))


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` requests per calendar ``period`` (UTC)."""

    limit: int
    period: QuotaPeriod

    def __post_init__(self) -> None:
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_QUOTA:
            raise InvalidInputError(f"a quota is an integer from 1 to {MAX_QUOTA}")
        if not isinstance(self.period, QuotaPeriod):
            raise InvalidInputError("a quota period is 'day' or 'month'")

    def window(self, now_us: int) -> tuple[str, int]:
        """The id of the window holding ``now_us`` and the microsecond it ends."""
        now = datetime.fromtimestamp(now_us / US, UTC)
        if self.period is QuotaPeriod.DAY:
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
            return start.strftime("%Y-%m-%d"), _epoch_us(end)
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)  # noqa: PLR2004
        return start.strftime("%Y-%m"), _epoch_us(datetime(year, month, 1, tzinfo=UTC))


def _epoch_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


Rule = Rate | Quota


@dataclass(frozen=True, slots=True)
class Check:
    """One counter a request must pass.

    ``key`` names the counter (printable ASCII, no spaces); for a ``Quota`` it must already
    contain the window id (``quota_check`` builds it), and ``expires_us`` is the window's end.
    """

    scope: Scope
    key: str
    rule: Rule
    expires_us: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.fullmatch(self.key):
            raise InvalidInputError("a counter key is 1 to 512 printable ASCII characters")
        if isinstance(self.rule, Quota) and self.expires_us <= 0:
            raise InvalidInputError("a quota check needs the end of its window")


def rate_check(scope: Scope, subject: str, rule: Rate) -> Check:
    """The check of ``rule`` for ``subject``. The rule is part of the key: a stored TAT means
    nothing under another interval or burst, so a changed rule starts from rest."""
    return Check(scope, f"{scope.value}:{rule.interval_us}/{rule.burst}:{subject}", rule)


def quota_check(subject: str, rule: Quota, now_us: int) -> Check:
    window, end = rule.window(now_us)
    return Check(Scope.QUOTA, f"quota:{rule.period.value}:{window}:{subject}", rule, end)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for a request: admitted or not, and its most constraining check."""

    allowed: bool
    scope: Scope | None
    """The check that refused, or the one with the fewest requests left; None: no checks."""
    limit: int
    """The burst of a ``Rate``, the ``limit`` of a ``Quota`` (0 with no checks)."""
    remaining: int
    reset_us: int
    """Until that counter is back to its full allowance (rate) or its window ends (quota)."""
    retry_after_us: int
    """0 when allowed; else how long until the same request could pass."""

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, rounded up, as ``Retry-After`` takes them (at least 1 if refused)."""
        return 0 if self.allowed else max(1, -(-self.retry_after_us // US))

    @property
    def reset_s(self) -> int:
        return -(-self.reset_us // US)


UNLIMITED: Final = Verdict(
    allowed=True, scope=None, limit=0, remaining=0, reset_us=0, retry_after_us=0
)


class Step(NamedTuple):
    """One check's result: whether it passes, and the state to store if the request is admitted.

    A named tuple, not a frozen dataclass: several are made per request, and a tuple is built
    in a fraction of the time."""

    allowed: bool
    state: int
    """The new TAT (rate) or count (quota) to store when every check passed."""
    limit: int
    remaining: int
    reset_us: int
    retry_after_us: int


def gcra_step(tat_us: int | None, now_us: int, rule: Rate) -> Step:
    """GCRA for one request. ``tat_us`` is the stored theoretical arrival time (None: at rest).

    With interval ``T`` and capacity ``burst * T``: the request passes iff
    ``max(tat, now) + T <= now + burst * T``; if it does, ``max(tat, now) + T`` is stored.
    """
    interval = rule.interval_us
    capacity = rule.burst * interval
    base = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = base + interval
    if new_tat - now_us <= capacity:
        remaining = (now_us + capacity - new_tat) // interval
        return Step(
            allowed=True,
            state=new_tat,
            limit=rule.burst,
            remaining=remaining,
            reset_us=new_tat - now_us,
            retry_after_us=0,
        )
    return Step(
        allowed=False,
        state=base,
        limit=rule.burst,
        remaining=0,
        reset_us=base - now_us,
        retry_after_us=new_tat - capacity - now_us,
    )


def quota_step(count: int | None, now_us: int, check: Check) -> Step:
    """A quota for one request: the ``count`` so far in the check's window (None: zero)."""
    rule = check.rule
    if not isinstance(rule, Quota):
        raise TypeError("quota_step takes a quota check")
    used = count or 0
    reset = max(0, check.expires_us - now_us)
    if used < rule.limit:
        return Step(
            allowed=True,
            state=used + 1,
            limit=rule.limit,
            remaining=rule.limit - used - 1,
            reset_us=reset,
            retry_after_us=0,
        )
    return Step(
        allowed=False,
        state=used,
        limit=rule.limit,
        remaining=0,
        reset_us=reset,
        retry_after_us=reset,
    )


def verdict_of(checks: Sequence[Check], steps: Sequence[Step]) -> Verdict:
    """Combine per-check steps: refused if any refused; report the most constraining check."""
    if not checks:
        return UNLIMITED
    pairs = list(zip(checks, steps, strict=True))
    refused = [(c, s) for c, s in pairs if not s.allowed]
    if refused:
        check, step = max(refused, key=lambda pair: pair[1].retry_after_us)
        return Verdict(
            allowed=False,
            scope=check.scope,
            limit=step.limit,
            remaining=0,
            reset_us=step.reset_us,
            retry_after_us=step.retry_after_us,
        )
    check, step = min(pairs, key=lambda pair: (pair[1].remaining, -pair[1].reset_us))
    return Verdict(
        allowed=True,
        scope=check.scope,
        limit=step.limit,
        remaining=step.remaining,
        reset_us=step.reset_us,
        retry_after_us=0,
    )


class RateCounter(Protocol):
    """Counts requests against checks, atomically across every process that shares it.

    ``take`` evaluates every check at ``now_us`` and, only if all pass, charges all of them;
    it raises ``StorageError`` (never returns "allowed") when its backend is unreachable.
    """

    async def take(self, checks: Sequence[Check], now_us: int) -> Verdict: ...

    async def close(self) -> None: ...
