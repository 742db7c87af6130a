"""The quickstart's server guard: SIGTERM and SIGHUP stop the server like Ctrl-C does."""

from __future__ import annotations

import os
import signal

import pytest

from strongroom.entrypoints.cli import live_check


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_become_keyboard_interrupts_and_are_restored(number: int) -> None:
    before = signal.getsignal(number)
    previous = live_check._interrupt_on(live_check.TERMINATION_SIGNALS)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), number)  # the handler runs before the next statement
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert signal.getsignal(number) == before
