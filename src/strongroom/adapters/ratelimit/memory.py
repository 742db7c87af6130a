"""``MemoryRateCounter``: the ``RateCounter`` port in this process's memory, exact.

It suits one process (the embedded default, a single worker) and is the reference the Redis
adapter is tested against: every decision is ``gcra_step`` / ``quota_step`` from core, combined by
``verdict_of``; this module adds only storage, locking and a bound.

Invariants:

* **All or nothing.** Every check of a request is evaluated against the stored state, and only
  if all pass are the new states written. A refused request changes nothing.
* **One state per key.** Two checks of one request on the same key would both be judged on the
  old state and the second write would hide the first: that is an ``InvalidInputError``.
* **Thread- and loop-safe.** Evaluate-and-commit runs under one ``threading.Lock`` with no
  ``await`` inside, so several threads, each with its own event loop, can share one counter.
* **Bounded memory, never a silent allow.** At most ``max_keys`` counters are held. A counter
  whose state has expired (a GCRA TAT at or before ``now_us``: the bucket is full again; a quota
  whose window has ended) is the same as no counter, so forgetting it changes no decision. When a
  request would add keys beyond the bound, expired counters are swept; if the table is still
  full, the request is refused with ``RateCounterUnavailableError`` (the server answers 503)
  and nothing is charged. Live counters are never evicted: evicting one would reset a limit
  and let through requests it should refuse. Requests on keys already held are always counted.
* **Sweeps are rationed.** A sweep scans every counter, so the counter keeps a lower bound of
  the earliest expiry it holds and does not scan before then, nor within ``SWEEP_GAP_US`` (of
  ``now_us`` time) of the last scan: a flood of new keys against a full table cannot make each
  request pay a full scan. Meanwhile new keys are refused, which is the safe side.

Quota windows are part of a quota check's key (``quota_check``), so a counter of an ended
window is simply never asked again and goes at the next sweep.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from strongroom.core.policy.limits import (
    UNLIMITED,
    Check,
    Quota,
    Step,
    Verdict,
    gcra_step,
    quota_step,
    verdict_of,
)
from strongroom.errors import ConfigurationError, InvalidInputError, RateCounterUnavailableError

DEFAULT_MAX_KEYS: Final = 100_000
SWEEP_GAP_US: Final = 100_000
"""At least this long (of ``now_us`` time) between two sweeps of a full table."""


class MemoryRateCounter:
    """``RateCounter`` held in a dict of ``key -> (state, expires_us)`` (see module docstring)."""

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if type(max_keys) is not int or max_keys < 1:
            raise ConfigurationError("max_keys of the memory rate counter is a positive integer")
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._states: dict[str, tuple[int, int]] = {}
        """``key -> (TAT or count, microsecond from which the state is at rest)``."""
        self._earliest_expiry_us: int | None = None
        """No held state expires before this (a lower bound; None: none held since a sweep)."""
        self._last_sweep_us: int | None = None

    def __len__(self) -> int:
        """How many counters are held (live or not yet swept)."""
        return len(self._states)

    async def take(self, checks: Sequence[Check], now_us: int) -> Verdict:
        """Evaluate every check at ``now_us``; charge all of them only if all pass."""
        if not checks:
            return UNLIMITED
        _require_distinct_keys(checks)
        with self._lock:
            steps = [self._step(check, now_us) for check in checks]
            if all(step.allowed for step in steps):
                self._commit(checks, steps, now_us)
        return verdict_of(checks, steps)

    async def close(self) -> None:
        """Forget every counter; the counter stays usable (and starts from rest)."""
        with self._lock:
            self._states.clear()
            self._earliest_expiry_us = self._last_sweep_us = None

    def _step(self, check: Check, now_us: int) -> Step:
        held = self._states.get(check.key)
        state = None if held is None else held[0]
        if isinstance(check.rule, Quota):
            return quota_step(state, now_us, check)
        return gcra_step(state, now_us, check.rule)

    def _commit(self, checks: Sequence[Check], steps: Sequence[Step], now_us: int) -> None:
        """Write the new states, first making room for new keys (or refusing, charging none)."""
        if self._needs_room(checks):
            self._sweep(now_us)  # which may drop keys of this very request: count again
            if self._needs_room(checks):
                raise RateCounterUnavailableError(
                    f"the in-process rate counter holds {self._max_keys} live counters: "
                    "refusing requests that need a new one"
                )
        states = self._states
        earliest = self._earliest_expiry_us
        for check, step in zip(checks, steps, strict=True):
            expires = check.expires_us if isinstance(check.rule, Quota) else step.state
            states[check.key] = (step.state, expires)
            if earliest is None or expires < earliest:
                earliest = expires
        self._earliest_expiry_us = earliest

    def _needs_room(self, checks: Sequence[Check]) -> bool:
        new_keys = sum(1 for check in checks if check.key not in self._states)
        return new_keys > 0 and len(self._states) + new_keys > self._max_keys

    def _sweep(self, now_us: int) -> None:
        """Drop every expired counter, unless none can have expired yet or the last sweep was
        less than ``SWEEP_GAP_US`` ago (a full scan per request would be a denial of service)."""
        earliest, last = self._earliest_expiry_us, self._last_sweep_us
        if (earliest is not None and now_us < earliest) or (
            last is not None and now_us < last + SWEEP_GAP_US
        ):
            return
        self._states = {key: held for key, held in self._states.items() if held[1] > now_us}
        self._earliest_expiry_us = min((held[1] for held in self._states.values()), default=None)
        self._last_sweep_us = now_us


def _require_distinct_keys(checks: Sequence[Check]) -> None:
    """Two checks on one key would be judged on the same old state and the second write would
    lose the first: refuse the request as a programming error instead."""
    if len(checks) > 1 and len({check.key for check in checks}) != len(checks):
        raise InvalidInputError("the checks of one request must have distinct keys")
