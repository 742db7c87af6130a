"""Redis for tests: the shared server at 127.0.0.1:6379 (a key prefix per test) and private
``redis-server`` processes on free ports, to stop (SIGSTOP), kill and restart.

Readiness is polled with a deadline, never waited for with a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

READY_S = 10.0
REDIS_URL = os.environ.get("STRONGROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class RedisProcess:
    """A ``redis-server`` without persistence on a free port of 127.0.0.1."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll PING until it answers; between polls, wait on the process (it may have died)."""
        deadline = time.monotonic() + READY_S
        with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as probe:
            while time.monotonic() < deadline:
                try:
                    if probe.ping():
                        return
                except (redis.RedisError, OSError):
                    pass
                try:
                    code = self.running().wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    continue
                log = (self.workdir / "redis.log").read_text(errors="replace")
                pytest.fail(f"redis-server exited with {code}:\n{log}")
        pytest.fail(f"redis-server did not answer PING within {READY_S} s")

    def running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process

    def signal(self, number: signal.Signals) -> None:
        os.kill(self.running().pid, number)

    def kill(self) -> None:
        """SIGKILL (which also ends a stopped process) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None
