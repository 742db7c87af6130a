"""The quickstart's last act: start ``strongroom serve`` and call it as a client would.

``ServerProcess`` runs the server as a child process (its own process group, so stopping it stops
every worker) and waits for ``/v2/health/ready`` over TLS, trusting only the instance's own
development certificate. ``triton_predict`` then calls ``/infer`` with the unmodified
``tritonclient`` HTTP client and an API key, exactly as a KServe/Triton user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess  # runs this very program, fixed arguments  # nosec B404
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final, Self

from strongroom.errors import ConfigurationError, MissingExtraError

READY_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 30.0


class ServerProcess:
    """``python -m strongroom serve`` for ``home``, stopped on exit of the ``with`` block."""

    def __init__(self, home: Path, port: int, ca_file: Path) -> None:
        self.home = home
        self.port = port
        self.ca_file = ca_file
        self.base_url = f"https://localhost:{port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        # The server runs in its own session (a Ctrl-C reaches only this process, which then
        # stops it in order); so that a SIGTERM or hang-up of this process stops it too, they
        # are turned into the same KeyboardInterrupt while the server runs.
        self._previous = _interrupt_on(TERMINATION_SIGNALS)
        env = {**os.environ, "STRONGROOM_HOME": str(self.home), "STRONGROOM_PORT": str(self.port)}
        self._proc = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "strongroom", "serve"],
            env=env,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.stop()
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"{self.base_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.wait(0.2) is not None:
                raise ConfigurationError("the server stopped while starting; see its log above")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - https URL built above  # nosec B310
                    if response.status == 200:  # noqa: PLR2004
                        return
            except (OSError, urllib.error.URLError):
                continue
        self.stop()
        raise ConfigurationError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s")

    def wait(self, timeout: float | None = None) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)


TERMINATION_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler
    raise KeyboardInterrupt


def _interrupt_on(signals: tuple[signal.Signals, ...]) -> dict[int, Any]:
    """Make ``signals`` raise ``KeyboardInterrupt``; the handlers they had (main thread only:
    elsewhere signals cannot be handled and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.signal(number, _interrupt) for number in signals}


def triton_predict(server: ServerProcess, api_key: str, model: str, rows: Any) -> dict[str, Any]:
    """``/infer`` through ``tritonclient.http`` (binary tensors, its default); outputs by name."""
    try:
        import tritonclient.http as triton  # noqa: PLC0415 - optional: the quickstart extra
    except ImportError as exc:
        raise MissingExtraError("the Open Inference Protocol client", "quickstart") from exc
    client = triton.InferenceServerClient(
        url=f"localhost:{server.port}", ssl=True, ssl_options={"ca_certs": str(server.ca_file)}
    )
    try:
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(model, [tensor], headers={"Authorization": f"Bearer {api_key}"})
        return {name: result.as_numpy(name) for name in ("label", "probabilities")}
    finally:
        client.close()


def curl_line(server: ServerProcess, key_file: Path, request_file: Path, model: str) -> str:
    return (
        f"curl --cacert {server.ca_file} "
        f'-H "Authorization: Bearer $(cat {key_file})" '
        f"{server.base_url}/v2/models/{model}/infer -d @{request_file}"
    )
