"""Running one server under test: pinned to its core, ready when its health route says so.

Invariants: every server binds 127.0.0.1 only; it runs in its own process group (so an
inference worker it forks is pinned with it and stopped with it); readiness is polled on
``GET /v2/health/ready`` against a deadline, never assumed after a sleep; a server that exits
during start-up fails at once with the tail of its log; the group is stopped (TERM, then KILL)
however the measurement ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
READY_PATH = "/v2/health/ready"
READY_DEADLINE_S = 90.0
POLL_INTERVAL_S = 0.05
STOP_GRACE_S = 15.0
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class ServerError(RuntimeError):
    """The server did not start, did not become ready, or answered the smoke request wrongly."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send the inference request."""

    base_url: str
    infer_path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    cafile: Path | None = None
    """For https: the server's self-signed certificate (hostname not checked: it is 127.0.0.1)."""

    @property
    def infer_url(self) -> str:
        return self.base_url + self.infer_path


@dataclass(frozen=True)
class ServerSpec:
    key: str
    title: str
    command: list[str]
    env: Mapping[str, str]
    endpoint: Endpoint
    log: Path
    cwd: Path | None = None
    ready_paths: tuple[str, ...] = (READY_PATH,)
    """Polled in order until each answers 200."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The inherited environment without any STRONGROOM_* setting, single-threaded numerics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    return {**env, **SINGLE_THREAD_ENV, **(extra or {})}


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext | None:
    if not endpoint.base_url.startswith("https://"):
        return None
    context = ssl.create_default_context(
        cafile=str(endpoint.cafile) if endpoint.cafile and endpoint.cafile.exists() else None
    )
    context.check_hostname = False
    if endpoint.cafile is None or not endpoint.cafile.exists():
        context.verify_mode = ssl.CERT_NONE  # loopback benchmark: nothing to protect
    return context


def request(
    endpoint: Endpoint, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP request on the loopback: (status, body); HTTP errors are answers, not raised."""
    url = endpoint.base_url + path
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ServerError(f"refusing a non-loopback URL {url}")
    headers = {"Content-Type": "application/json", **endpoint.headers} if body else {}
    req = urllib.request.Request(  # noqa: S310 - loopback http(s) only, checked above
        url, data=body, headers=headers, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            req, timeout=timeout, context=_ssl_context(endpoint)
        ) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(spec: ServerSpec, process: subprocess.Popen[bytes]) -> float:
    start = time.monotonic()
    deadline = start + READY_DEADLINE_S
    pending = list(spec.ready_paths)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            while pending:
                status, answer = request(spec.endpoint, pending[0], timeout=2.0)
                last = f"GET {pending[0]} -> HTTP {status} {answer[:200]!r}"
                if status != 200:
                    break
                pending.pop(0)
        except (OSError, ssl.SSLError) as error:
            last = f"{type(error).__name__}: {error}"  # not listening yet
        if not pending:
            return time.monotonic() - start
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = process.wait(timeout=POLL_INTERVAL_S)  # doubles as the poll interval
            raise ServerError(
                f"{spec.title}: server exited with {code} during start-up:\n{log_tail(spec.log)}"
            )
    raise ServerError(
        f"{spec.title}: not ready after {READY_DEADLINE_S:.0f} s (last: {last}):\n"
        f"{log_tail(spec.log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # our own session: the server and what it forked
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # leftover workers of an exited parent


@contextlib.contextmanager
def running(spec: ServerSpec, core: int) -> Iterator[float]:
    """Start ``spec`` pinned to ``core``, yield once ready (the start-up time), always stop it."""
    with spec.log.open("ab") as log:
        process = subprocess.Popen(
            ["taskset", "-c", str(core), *spec.command],
            env=dict(spec.env),
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield _wait_ready(spec, process)
    finally:
        _stop(process)


def smoke_check(spec: ServerSpec, body: bytes) -> dict[str, Any]:
    """One request before any load: a wrong status or shape fails the configuration, so wrk
    never measures how fast a server can say 401."""
    status, answer = request(spec.endpoint, spec.endpoint.infer_path, body)
    if status != 200:
        raise ServerError(
            f"{spec.title}: smoke request got HTTP {status}: {answer[:300]!r}\n"
            f"server log:\n{log_tail(spec.log)}"
        )
    try:
        document = json.loads(answer)
    except ValueError:
        raise ServerError(f"{spec.title}: smoke answer is not JSON: {answer[:300]!r}") from None
    if not isinstance(document, dict) or not document.get("outputs"):
        raise ServerError(f"{spec.title}: smoke answer has no outputs: {answer[:300]!r}")
    return document
