"""Small shared types of the domain: injected time and randomness.

Core code never reads the clock or the OS random source itself; callers pass these in, so that
every algorithm is deterministic under test and replayable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC ``datetime``."""

RandomBytes = Callable[[int], bytes]
"""Returns ``n`` bytes from a cryptographically secure source (``os.urandom`` in production)."""
