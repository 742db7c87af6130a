"""A real ``strongroom serve`` process for integration tests.

``serving_instance`` makes an instance as a user would (``init``, push + promote a signed model,
a service principal with the predictor role and an API key) and ``start_server`` runs
``python -m strongroom serve`` on a free 127.0.0.1 port, waiting for ``/v2/health/ready`` by
polling (bounded), never by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import CLI_SCRYPT_N, cli, cli_json

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServingInstance:
    home: Path
    api_key: str
    env: dict[str, str] = field(default_factory=dict)


def serving_instance(instance: Path, tmp_path: Path, **env: str) -> ServingInstance:
    """``instance`` (see conftest) with fraud v1 in production and a predictor API key."""
    cli(
        instance,
        "model",
        "push",
        "fraud",
        str(tmp_path / "model.onnx"),
        "--sign-key",
        str(tmp_path / "signer.pem"),
        "--owner",
        "risk",
        env=env,
    )
    cli(instance, "model", "promote", "fraud", "1", "--to", "production", "--reason", "t", env=env)
    cli(instance, "principal", "add", "svc:scoring", "--role", "predictor", env=env)
    issued = cli_json(instance, "apikey", "issue", "svc:scoring", env=env)
    return ServingInstance(home=instance, api_key=issued["token"], env=dict(env))


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    base_url: str
    ca_file: str | None
    log_path: Path
    log_file: Any = None

    @property
    def verify(self) -> Any:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else False

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)
        finally:
            if self.log_file is not None:
                self.log_file.close()


def start_server(
    served: ServingInstance,
    *,
    tls: bool = True,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> RunningServer:
    port = free_port()
    env = {
        **os.environ,
        "STRONGROOM_HOME": str(served.home),
        "STRONGROOM_KEYRING_SCRYPT_N": CLI_SCRYPT_N,
        "STRONGROOM_PORT": str(port),
        "STRONGROOM_WORKERS": str(workers),
        "STRONGROOM_MODEL_REFRESH_S": "0.2",
        **served.env,
        **(extra_env or {}),
    }
    env.pop("STRONGROOM_KEYRING_PASSPHRASE", None)
    if not tls:
        env["STRONGROOM_UNSAFE_PLAINTEXT"] = "true"
    log_path = served.home.parent / f"server-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() signals the workers too
    )
    scheme = "https" if tls else "http"
    ca_file = str(served.home / "tls" / "server.crt") if tls else None
    server = RunningServer(proc, f"{scheme}://127.0.0.1:{port}", ca_file, log_path, log)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def _wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with server.client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{server.log()}")
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(0.1)  # a bounded poll interval that also notices an exit
    raise AssertionError(f"the server was not ready in {READY_TIMEOUT_S} s:\n{server.log()}")


@contextlib.contextmanager
def running(served: ServingInstance, **kwargs: Any) -> Iterator[RunningServer]:
    server = start_server(served, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [v for row in rows for v in row],
            }
        ]
    }
