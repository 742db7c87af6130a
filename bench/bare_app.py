"""Baseline (a): the least an Open Inference Protocol v2 server can do with one ONNX model.

Starlette + onnxruntime, no security at all: no TLS, no authentication, no authorisation, no
input validation beyond what a malformed body breaks, no audit. It is what Strongroom's
per-request overhead is measured against, so it must stay minimal: orjson to parse the body,
one numpy array per input tensor, ``session.run`` on the event loop, orjson for the response.

Run by ``bench_server.py`` as
``uvicorn bare_app:app --app-dir bench --loop uvloop --http httptools --workers 1`` with
``OMP_NUM_THREADS=1``; the ONNX file is named by ``BENCH_ONNX_PATH`` and loaded once at start-up
(before uvicorn accepts connections), with onnxruntime's intra- and inter-op pools at 1 thread.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MODEL_NAME = "fraud"
INPUT_DTYPES: dict[str, Any] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}
OUTPUT_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
}
JSON = "application/json"


def load_session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    session = load_session(os.environ["BENCH_ONNX_PATH"])
    app.state.session = session
    app.state.output_names = [output.name for output in session.get_outputs()]
    yield


async def infer(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
        feeds = {
            tensor["name"]: np.asarray(
                tensor["data"], dtype=INPUT_DTYPES[tensor["datatype"]]
            ).reshape(tensor["shape"])
            for tensor in body["inputs"]
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Response(b'{"error":"bad request"}', status_code=400, media_type=JSON)
    names = request.app.state.output_names
    results = request.app.state.session.run(names, feeds)
    outputs = [
        {
            "name": name,
            "datatype": OUTPUT_DATATYPES[result.dtype],
            "shape": list(result.shape),
            "data": result.ravel().tolist(),
        }
        for name, result in zip(names, results, strict=True)
    ]
    document = {"model_name": MODEL_NAME, "model_version": "1", "outputs": outputs}
    return Response(orjson.dumps(document), media_type=JSON)


async def ready(_: Request) -> Response:
    """The model is loaded in the lifespan, before uvicorn accepts a connection: up is ready."""
    return Response(b'{"ready":true}', media_type=JSON)


app = Starlette(
    routes=[
        Route(f"/v2/models/{MODEL_NAME}/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/health/live", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)
