"""The two baselines: (a) the bare Starlette + onnxruntime app, (e) MLServer's sklearn runtime.

(a) serves the same ONNX bytes as Strongroom; (e) the same fitted scikit-learn pipeline those
bytes were converted from, saved with joblib as MLServer's users do. MLServer lives in its own
virtual environment (``bench/.venv-mlserver``, made from the package registry on first use) so
that its dependency pins (FastAPI, protobuf, ...) never touch the project's lock file; its
scikit-learn and numpy are pinned to the project's, so the pickled pipeline loads unchanged.

MLServer set-up, documented choices:
* ``parallel_workers = 1``: MLServer's default, and what its docs advise per CPU core given to
  the server (one inference worker process behind the HTTP process). ``0`` runs inference on
  the HTTP event loop instead; ``--mlserver-parallel-workers 0`` measures that.
* ``metrics_endpoint = null``: no Prometheus metrics server; ``debug = false``: no access log
  (the bare app has none either). Both only make MLServer faster.
* ``predict_fn = predict_proba`` in the model's parameters, so the same request body returns
  the same probabilities as the ONNX model's ``probabilities`` output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers import HOST, READY_PATH, Endpoint, ServerSpec, free_port, server_env

BENCH_DIR = Path(__file__).resolve().parent
MLSERVER_VENV = BENCH_DIR / ".venv-mlserver"
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22")
"""uvloop 0.22 made ``get_event_loop()`` raise outside a running loop, which kills MLServer
1.7.1's inference workers at start (``parallel/worker.py``); 0.21 is what it was released with."""
MODEL_NAME = "fraud"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"


def bare_app_spec(workdir: Path, onnx_path: Path) -> ServerSpec:
    """(a): uvicorn + uvloop + httptools, one worker, no access log, ORT on one thread."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(BENCH_DIR),
        "--host", HOST, "--port", str(port), "--workers", "1", "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return ServerSpec(
        key="a",
        title="(a) bare Starlette + onnxruntime",
        command=command,
        env=server_env({"BENCH_ONNX_PATH": str(onnx_path)}),
        endpoint=Endpoint(base_url=f"http://{HOST}:{port}", infer_path=INFER_PATH),
        log=workdir / "a-bare.log",
    )


def _pins() -> list[str]:
    import numpy as np
    import sklearn

    return [*MLSERVER_PACKAGES, f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}"]


def ensure_mlserver_venv(python: str, venv: Path = MLSERVER_VENV) -> Path:
    """Create (first use) or reuse MLServer's venv; return its ``mlserver`` executable.

    A stamp holds the installed pins; when the project's scikit-learn or numpy moves, or the
    venv is incomplete, it is installed again with pip from the package registry.
    """
    pins = _pins()
    stamp = venv / ".bench-pins"
    mlserver = venv / "bin" / "mlserver"
    if stamp.exists() and stamp.read_text("utf-8").split() == pins and mlserver.exists():
        return mlserver
    print(
        f"installing {' '.join(pins)} into {venv} (first use or new pins; about a minute)...",
        flush=True,
    )
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "install", "--quiet", *pins], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"pip install into {venv} failed (exit {done.returncode}):\n{tail}")
    stamp.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return mlserver


def mlserver_version(mlserver: Path) -> str:
    python = mlserver.parent / "python"
    done = subprocess.run(
        [str(python), "-c", "import mlserver; print(mlserver.__version__)"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


def write_mlserver_repository(root: Path, model: Any, parallel_workers: int) -> tuple[int, int]:
    """A model repository as MLServer's users lay it out: ``settings.json`` at the root, one
    folder per model with ``model-settings.json`` and ``model.joblib``; returns the ports."""
    import joblib

    folder = root / MODEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    http_port, grpc_port = free_port(), free_port()
    settings = {
        "host": HOST,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "parallel_workers": parallel_workers,
        "metrics_endpoint": None,
        "debug": False,
    }
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {
            "uri": "./model.joblib",
            "version": "1",
            "extra": {"predict_fn": "predict_proba"},
        },
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    (folder / "model-settings.json").write_text(
        json.dumps(model_settings, indent=2), encoding="utf-8"
    )
    return http_port, grpc_port


def mlserver_spec(
    workdir: Path, mlserver: Path, model: Any, parallel_workers: int = 1
) -> ServerSpec:
    """(e): ``mlserver start <repository>`` with the settings above."""
    repository = workdir / "mlserver-model"
    http_port, _ = write_mlserver_repository(repository, model, parallel_workers)
    return ServerSpec(
        key="e",
        title=f"(e) MLServer sklearn, parallel_workers={parallel_workers}",
        command=[str(mlserver), "start", str(repository)],
        env=server_env({"PATH": f"{mlserver.parent}:{server_env().get('PATH', '')}"}),
        endpoint=Endpoint(base_url=f"http://{HOST}:{http_port}", infer_path=INFER_PATH),
        log=workdir / "e-mlserver.log",
        # The server is ready before its models are (a model that fails to load is dropped):
        ready_paths=(READY_PATH, f"/v2/models/{MODEL_NAME}/ready"),
        cwd=repository,
    )
