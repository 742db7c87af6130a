"""``EpochCache``: an in-process credential cache that is dropped whenever the epoch moves.

The identity service caches what it reads from the store on the hot path (API key records and
their principals, certificate bindings, sessions, principals of verified tokens). Every change
to identities or credentials bumps the shared ``CredentialEpoch`` *after* its commit, and every
lookup first reads the epoch: if it differs from the value the cache was filled under, the whole
cache is replaced by an empty one. So a change is visible to the very next request in every
process that shares the epoch.

Why this is safe with threads and processes: entries live in a dict tied to one epoch value
(``(epoch, entries)``, replaced as a whole, never mutated across epochs). A lookup reads the
epoch *before* it reads the store, and stores what it loaded in the dict of the epoch it read.
A change that completed (commit, then bump) before a request began therefore has its bump in
the epoch that request reads, and the request sees only entries loaded after that epoch was
read, hence after the commit. A slow loader that read an older epoch writes into that older
dict, which no later request uses. Comparisons are for inequality, so a reset counter also
drops the cache.

The cache is bounded (``max_entries``); when full it is emptied rather than tracking recency,
which keeps a lookup to two dict operations. Misses are cached only when ``cache_misses`` is
set: never for credentials an anonymous client names (API key ids, fingerprints, sessions),
because random ids would flush the useful entries; only for principals of verified tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

from strongroom.core.identity.ports import CredentialEpoch
from strongroom.errors import ConfigurationError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DEFAULT_MAX_ENTRIES: Final = 65_536
DEFAULT_MAX_AGE_S: Final = 60.0
"""However stable the epoch, nothing is served from a cache older than this."""


class EpochCache(Generic[K, V]):
    """Values by key, valid for one epoch value (see module docstring)."""

    def __init__(
        self,
        epoch: CredentialEpoch,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        cache_misses: bool = False,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("a credential cache holds at least one entry")
        self._epoch = epoch
        self._max_entries = max_entries
        self._cache_misses = cache_misses
        self._max_age = max_age_s
        self._monotonic = monotonic
        self._generation: tuple[int | None, float, dict[K, V | None]] = (None, 0.0, {})

    def _entries(self) -> dict[K, V | None]:
        """The entries valid at the current epoch; an empty dict when it has moved, or when
        they are older than ``max_age_s`` (a backstop for a change whose epoch bump was lost:
        the store committed but the bump failed, or the epoch file was replaced)."""
        current = self._epoch.current()
        generation = self._generation
        now = self._monotonic()
        if generation[0] != current or now - generation[1] > self._max_age:
            generation = (current, now, {})
            self._generation = generation
        return generation[2]

    def get(self, key: K, load: Callable[[], V | None]) -> V | None:
        """The cached value for ``key``, else ``load()`` (cached unless a miss is not cached)."""
        entries = self._entries()
        try:
            return entries[key]
        except KeyError:
            pass
        value = load()
        if value is None and not self._cache_misses:
            return None
        if len(entries) >= self._max_entries:
            entries.clear()
        entries[key] = value
        return value

    def peek(self, key: K) -> V | None:
        """The cached value for ``key`` at the current epoch, or None (absent or a cached miss)."""
        return self._entries().get(key)

    def clear(self) -> None:
        """Drop every entry now (this process only; ``CredentialEpoch.bump`` reaches all)."""
        self._generation = (None, 0.0, {})

    def __len__(self) -> int:
        return len(self._generation[2])
