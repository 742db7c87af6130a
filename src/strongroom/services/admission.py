"""Load shedding: bounded work per model and per principal, refused early instead of queued.

A server that queues without bound turns a flood into unbounded latency for everyone. Here,
per worker process:

* each **model** has a bound on predictions in flight (``RequestLimits.queue_bound``): the
  requests waiting for the model and the one running it. Beyond it the request is shed with
  ``OverloadedError`` (503 with ``Retry-After``) before its body is decoded;
* each **principal** has a bound on requests in flight (``RequestLimits.max_concurrent``), so
  that one stolen key cannot occupy every slot.

Counters are plain integers changed on the event loop's thread only (no awaits between test
and increment), so they need no lock. ``enter`` returns the function that gives the slot back;
the caller must call it exactly once (the HTTP guard does, when the exchange ends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from strongroom.errors import OverloadedError
from strongroom.services.request_limits import RequestLimits

RETRY_AFTER_S: Final = 1


class Admission:
    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits
        self._principals: dict[str, int] = {}
        self._models: dict[str, int] = {}

    def in_flight(self, *, principal: str | None = None, model: str | None = None) -> int:
        if principal is not None:
            return self._principals.get(principal, 0)
        return self._models.get(model or "", 0)

    def enter_principal(self, principal: str) -> Callable[[], None]:
        """Take a slot of ``principal``'s concurrent requests, or raise ``OverloadedError``."""
        return _enter(self._principals, principal, self._limits.max_concurrent(principal))

    def enter_model(self, model: str) -> Callable[[], None]:
        """Take a place in ``model``'s bounded queue, or raise ``OverloadedError``."""
        return _enter(self._models, model, self._limits.queue_bound(model))


def _enter(counts: dict[str, int], key: str, bound: int) -> Callable[[], None]:
    current = counts.get(key, 0)
    if current >= bound:
        raise OverloadedError(
            "too many requests in progress; retry later", retry_after_s=RETRY_AFTER_S
        )
    counts[key] = current + 1
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        left = counts[key] - 1
        if left:
            counts[key] = left
        else:
            del counts[key]

    return release
