"""Open Inference Protocol v2 routes: health, server and model metadata, readiness, infer.

``/v2/models/{name}`` without a version serves the production version (kept warm by the
``ModelHost``); ``/versions/{version}`` serves that exact version. Health endpoints answer
without credentials (orchestrator probes) and say nothing but live/ready; everything else
needs a credential and the matching permission (``model.read``, ``model.predict``,
``server.read``). Authorization happens on the model *name* before the registry is consulted,
so a caller without rights on a model cannot learn whether it exists.

Small batches run on the event loop: a one-row ONNX call takes tens of microseconds, far less
than a hop to a worker thread; batches above ``INLINE_ROWS`` rows run in a thread so that one
big request does not stall every other connection.

``infer`` is the one hot path, so it is a plain ASGI endpoint (listed first in the router):
it reads the body and sends its answer as ASGI messages, without Starlette's ``Request`` and
``Response`` objects, whose construction cost more than the model call. Everything the guard
does (audit, limits, headers, errors) applies to it as to every route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom import __version__
from strongroom.core.audit.record import input_hasher
from strongroom.core.policy.rbac import Action, Resource
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.model import check_model_name
from strongroom.core.registry.runtime import TensorSpec
from strongroom.entrypoints.http import oip
from strongroom.entrypoints.http.access import Access, ScopeView
from strongroom.entrypoints.http.access import Request as Scoped
from strongroom.entrypoints.http.guard import Receive, Scope, Send, header, request_log
from strongroom.errors import InvalidInputError, NotFoundError
from strongroom.services.inference import ModelHost, ServedModel

INLINE_ROWS: Final = 64
JSON: Final = "application/json"
_JSON_TYPE: Final = (b"content-type", JSON.encode())
_BINARY_TYPE: Final = (b"content-type", b"application/octet-stream")
PLATFORMS: Final = {
    ModelFormat.ONNX: "onnxruntime_onnx",
    ModelFormat.SKOPS: "sklearn_skops",
    ModelFormat.XGBOOST_UBJ: "xgboost",
    ModelFormat.XGBOOST_JSON: "xgboost",
    ModelFormat.LIGHTGBM_TEXT: "lightgbm",
}
SERVER_EXTENSIONS: Final = ("binary_tensor_data", "model_repository")


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=JSON)


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _version(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9 or text.startswith("0"):  # noqa: PLR2004
        raise InvalidInputError("the version must be a positive integer")
    return int(text)


class InferenceRoutes:
    def __init__(
        self,
        *,
        host: ModelHost,
        access: Access,
        input_key: bytes,
        max_rows: int,
        ready: Callable[[], bool],
        validate_inputs: bool = True,
    ) -> None:
        """``validate_inputs``: check every request against the version's input schema (off
        only with ``unsafe_no_request_guard``)."""
        self._validate_inputs = validate_inputs
        self._host = host
        self._access = access
        self._input_hmac = input_hasher(input_key)
        self._max_rows = max_rows
        self._ready = ready

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        version = model + "/versions/{version}"
        return [
            Route(model + "/infer", self.infer, methods=["POST"]),  # first: the hot path
            Route(version + "/infer", self.infer, methods=["POST"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route(model, self.model_metadata, methods=["GET"]),
            Route(version, self.model_metadata, methods=["GET"]),
            Route(model + "/ready", self.model_ready, methods=["GET"]),
            Route(version + "/ready", self.model_ready, methods=["GET"]),
        ]

    # --- health and metadata ------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        request_log(request.scope).action = "server.health"
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        request_log(request.scope).action = "server.health"
        ready = self._ready() and self._host.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.SERVER_READ.value, "server"
        await self._access.require(request, Action.SERVER_READ, Resource.server())
        return _json(
            {"name": "strongroom", "version": __version__, "extensions": SERVER_EXTENSIONS}
        )

    async def model_metadata(self, request: Request) -> Response:
        served = await self._served(request, Action.MODEL_READ)
        signature = served.signature
        return _json(
            {
                "name": served.name,
                "versions": [str(served.version)],
                "platform": PLATFORMS.get(served.format, served.format.value),
                "inputs": [_tensor(spec) for spec in signature.inputs],
                "outputs": [_tensor(spec) for spec in signature.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        served = await self._served(request, Action.MODEL_READ)
        return _json({"name": served.name, "version": str(served.version), "ready": True})

    # --- infer --------------------------------------------------------------------------------

    @property
    def infer(self) -> _InferEndpoint:
        return _InferEndpoint(self)

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = await self._served(ScopeView(scope), Action.MODEL_PREDICT)
        admission = self._access.admission
        if admission is not None:  # shed before the body is read, not after
            request_log(scope).on_exit(admission.enter_model(served.name))
        oip.check_media_type(header(scope, b"content-type"))
        body = await _read_body(receive)
        request_log(scope).input_hmac = self._input_hmac(body)
        length = header(scope, b"inference-header-content-length")
        decoded = oip.decode_infer_request(
            body,
            None if length is None else length.decode("latin-1"),
            served.signature,
            max_rows=self._max_rows,
            nan_checked_later=self._validate_inputs,
        )
        if self._validate_inputs:  # the version's input schema, before the model
            served.check_inputs(decoded.inputs)
        if decoded.rows <= INLINE_ROWS:
            results = served.predict(decoded.inputs)
        else:
            results = await asyncio.to_thread(served.predict, decoded.inputs)
        content, header_length = oip.encode_infer_response(
            served.name, served.version, decoded, results, served.output_names
        )
        headers = [_JSON_TYPE, (b"content-length", b"%d" % len(content))]
        if header_length is not None:
            headers[0] = _BINARY_TYPE
            headers.append((b"inference-header-content-length", header_length.encode("ascii")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    # --- shared -------------------------------------------------------------------------------

    async def _served(self, request: Scoped, action: Action) -> ServedModel:
        """Authorize ``action`` on the requested model, then find (or load) its version."""
        log = request_log(request.scope)
        log.action = action.value
        params = request.scope["path_params"]
        name = params["name"]
        log.resource = f"model:{name}"[:256]
        check_model_name(name)
        await self._access.require(request, action, Resource.model(name))
        text = params.get("version")
        served: ServedModel | None
        if text is None:
            served = self._host.production(name)
            if served is None:
                served = await asyncio.to_thread(self._host.load_production, name)
        else:
            version = _version(text)
            served = self._host.pinned(name, version)
            if served is None:
                served = await asyncio.to_thread(self._host.load_pinned, name, version)
        if served.name != name:  # defence in depth: the host returned another model
            raise NotFoundError(f"model {name!r} not found")
        log.model_version = served.version
        log.manifest_digest = served.manifest_digest
        return served


class _InferEndpoint:
    """``InferenceRoutes.predict`` as an ASGI app, so that Starlette's ``Route`` calls it with
    the raw scope, receive and send (it wraps functions and methods in a ``Request``)."""

    __slots__ = ("_routes",)

    def __init__(self, routes: InferenceRoutes) -> None:
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._routes.predict(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (the guard enforces its size limit and deadline)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
