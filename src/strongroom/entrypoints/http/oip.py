"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) request and response bodies.

``decode_infer_request`` turns an ``/infer`` body into numpy arrays checked against the model's
signature; ``encode_infer_response`` does the reverse. Both JSON tensors and Triton's binary
tensor extension (``Inference-Header-Content-Length`` plus raw little-endian tensor bytes, what
``tritonclient`` sends by default) are supported.

Strictness (every violation is an ``InvalidInputError`` naming the field, answered 400):

* The body is one JSON object (UTF-8, no byte order mark, at most ``orjson``'s nesting depth);
  unknown members of the request and of each input are refused; ``parameters`` objects are
  open (the protocol extends them) but hold scalars only. A member name given twice in any
  object is refused rather than resolved (``orjson`` would keep the last one silently, and
  another parser in front of the server might have kept the first): see ``_refuse_duplicates``.
* Input names are unique and exactly the model's inputs; each datatype is the model's; a shape
  has the model's rank and its fixed dimensions; the batch (first dimension) is 1 to
  ``max_rows`` and the same for every input; the element count matches the shape.
* Elements have exactly the declared JSON type: numbers for FP32/FP64 (an integer is a valid
  number, a boolean or string is not), integers in the int64 range for INT64, ``true``/``false``
  for BOOL, strings for BYTES. NaN and infinities are refused (JSON cannot carry them, and a
  finite FP64 number that overflows FP32 is refused too). Binary tensors can carry them:
  infinities are refused; NaN too, unless the caller checks the input schema next (where a
  ``nullable`` feature accepts NaN as "missing").
* Binary tensors must account for every byte of the body, with the exact size their datatype
  and shape imply.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import orjson

from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError, UnsupportedMediaTypeError

SUPPORTED_DATATYPES: Final = frozenset({"FP32", "FP64", "INT64", "INT32", "BOOL", "BYTES"})
MAX_BYTES_ELEMENT: Final = 64 * 1024
MAX_ID_CHARS: Final = 256
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_NUMPY: Final[Mapping[str, Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "BOOL": np.dtype("?"),
}
MEDIA_TYPES: Final = frozenset(
    {b"application/json", b"application/octet-stream", b"application/x-www-form-urlencoded"}
)
"""``Content-Type`` values an ``/infer`` body may declare (or none at all). ``tritonclient.http``
sends none, ``tritonclient.http.aio`` (aiohttp) and KServe's client send
``application/octet-stream`` for binary tensors (aiohttp for JSON too), KServe's client sends
none for JSON, and ``curl -d`` (as in Triton's, KServe's and this project's examples) sends
``application/x-www-form-urlencoded``: the body is recognised by its content, and these labels
are tolerated; any other type (``text/plain``, XML, multipart, ...) is refused with 415."""
_REQUEST_KEYS: Final = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS: Final = frozenset({"name", "shape", "datatype", "data", "parameters"})
_OUTPUT_KEYS: Final = frozenset({"name", "parameters"})
_LENGTH: Final = struct.Struct("<I")
_NUMBER_TYPES: Final = frozenset({int, float})
_FP32_MAX: Final = float(np.finfo(np.float32).max)
"""(2 - 2**-23) * 2**127: a JSON number of larger magnitude is out of range for FP32 (even
where rounding would give this value, numpy's cast warns of an overflow)."""


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray[Any, Any]]
    rows: int
    outputs: tuple[RequestedOutput, ...] | None
    """None: every output of the model."""
    binary_outputs: bool
    """Default for outputs not named in ``outputs`` (``binary_data_output``)."""


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(message)


def _object(value: object, what: str, allowed: frozenset[str]) -> dict[str, Any]:
    if type(value) is not dict:  # orjson gives exactly dict for a JSON object
        raise _bad(f"{what} must be a JSON object")
    if value.keys() <= allowed:
        return value
    unknown = set(value) - allowed
    if unknown:
        raise _bad(f"{what} has unknown member(s): {', '.join(sorted(unknown)[:5])}")
    return value


def _parameters(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 64:  # noqa: PLR2004 - a sane bound
        raise _bad(f"{what}.parameters must be an object of at most 64 members")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or (
            isinstance(item, float) and not (math.isfinite(item))
        ):
            raise _bad(f"{what}.parameters.{key} must be a finite scalar")
    return value


def check_media_type(content_type: bytes | None) -> None:
    """Refuse (415) an ``/infer`` body labelled with a media type none of the supported
    clients sends (see ``MEDIA_TYPES``), or with a charset other than UTF-8."""
    if content_type is None or content_type == b"application/json":
        return
    kind, _, parameters = content_type.partition(b";")
    kind = kind.strip().lower()
    if kind and kind not in MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            "the request body must be application/json or application/octet-stream"
        )
    for parameter in parameters.split(b";"):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() not in {
            b"utf-8",
            b"utf8",
        }:
            raise UnsupportedMediaTypeError("the request body must be encoded as UTF-8")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part of an ``/infer`` body."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isascii() or not header_length.isdigit() or len(header_length) > 12:  # noqa: PLR2004
        raise _bad("Inference-Header-Content-Length must be a decimal byte count")
    length = int(header_length)
    if length > len(body):
        raise _bad("Inference-Header-Content-Length is larger than the body")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def decode_infer_request(
    body: bytes,
    header_length: str | None,
    signature: ModelSignature,
    *,
    max_rows: int,
    nan_checked_later: bool = False,
) -> InferRequest:
    """Decode and check an ``/infer`` body (see the module docstring). Binary FP tensors may
    carry NaN only with ``nan_checked_later``: the model's input schema then decides (a
    ``nullable`` feature accepts it); infinities are refused either way."""
    json_part, binary = split_body(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError:
        raise _bad("the body is not valid JSON") from None
    request = _object(document, "the request", _REQUEST_KEYS)
    if _counted_members(request) != json_part.count(b":"):
        _refuse_duplicates(json_part)
    request_id = request.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS
    ):
        raise _bad(f"id must be a string of at most {MAX_ID_CHARS} characters")
    params = _parameters(request.get("parameters"), "the request")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("inputs must be a non-empty list")
    specs = _input_specs(signature)
    if len(raw_inputs) != len(specs):
        raise _bad(f"the model takes {len(specs)} input(s): {', '.join(sorted(specs))}")
    decoder = _TensorDecoder(binary, max_rows, allow_nan=nan_checked_later)
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for index, raw in enumerate(raw_inputs):
        name, array = decoder.decode(raw, index, specs)
        if name in inputs:
            raise _bad(f"input {name!r} is given twice")
        inputs[name] = array
    if decoder.offset != len(binary):
        raise _bad("the binary part of the body has bytes no input accounts for")
    binary_default = params.get("binary_data_output") is True
    outputs = _requested_outputs(request.get("outputs"), signature)
    return InferRequest(request_id, inputs, decoder.rows or 0, outputs, binary_default)


def _counted_members(request: dict[str, Any]) -> int:
    """The members of the objects a valid request has: the request, the inputs, the requested
    outputs and their ``parameters``.

    Every member of every object in the body has one ``:`` before its value, and the other
    ``:`` are inside strings, so this count equals the body's number of ``:`` exactly when no
    object lost a duplicate member in parsing, no other object exists and no string holds a
    ``:``. That is the common case, decided in a few hundred nanoseconds; any other body takes
    the strict parse of ``_refuse_duplicates``.
    """
    count = len(request)
    params = request.get("parameters")
    if type(params) is dict:
        count += len(params)
    for group in (request.get("inputs"), request.get("outputs")):
        if type(group) is list:
            for item in group:
                if type(item) is dict:
                    count += len(item)
                    params = item.get("parameters")
                    if type(params) is dict:
                        count += len(params)
    return count


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMemberError
    return members


class _DuplicateMemberError(Exception):
    pass


def _refuse_duplicates(json_part: bytes) -> None:
    """Refuse a body (already parsed by ``orjson``, so valid UTF-8 JSON) in which some object
    names a member twice, with the standard library's parser, which shows every pair."""
    try:
        json.loads(json_part.decode("utf-8"), object_pairs_hook=_unique_members)
    except _DuplicateMemberError:
        raise _bad("a JSON object in the body names a member twice") from None
    except (RecursionError, ValueError):  # deeper than the stdlib parser goes: not a request
        raise _bad("the body is not valid JSON") from None


@functools.lru_cache(maxsize=256)
def _input_specs(signature: ModelSignature) -> Mapping[str, TensorSpec]:
    """The signature's inputs by name (signatures are immutable and few; looked up per call)."""
    return MappingProxyType({spec.name: spec for spec in signature.inputs})


def _requested_outputs(
    value: object, signature: ModelSignature
) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > len(signature.outputs):
        raise _bad("outputs must be a list of the model's outputs")
    known = {spec.name for spec in signature.outputs}
    requested = []
    for index, raw in enumerate(value):
        item = _object(raw, f"outputs[{index}]", _OUTPUT_KEYS)
        name = item.get("name")
        if not isinstance(name, str) or name not in known:
            raise _bad(f"outputs[{index}].name must be one of: {', '.join(sorted(known))}")
        params = _parameters(item.get("parameters"), f"outputs[{index}]")
        requested.append(RequestedOutput(name, params.get("binary_data") is True))
    if len({r.name for r in requested}) != len(requested):
        raise _bad("an output is requested twice")
    return tuple(requested)


class _TensorDecoder:
    """Decodes inputs one by one, tracking the batch size and the binary offset."""

    def __init__(self, binary: memoryview, max_rows: int, *, allow_nan: bool) -> None:
        self.allow_nan = allow_nan
        self.binary = binary
        self.offset = 0
        self.max_rows = max_rows
        self.rows: int | None = None

    def decode(
        self, raw: object, index: int, specs: Mapping[str, TensorSpec]
    ) -> tuple[str, np.ndarray[Any, Any]]:
        where = f"inputs[{index}]"
        item = _object(raw, where, _INPUT_KEYS)
        name = item.get("name")
        if not isinstance(name, str) or name not in specs:
            raise _bad(
                f"{where}.name must be one of the model's inputs: {', '.join(sorted(specs))}"
            )
        spec = specs[name]
        where = f"input {name!r}"
        if item.get("datatype") != spec.datatype:
            raise _bad(f"{where} must have datatype {spec.datatype}")
        if spec.datatype not in SUPPORTED_DATATYPES:
            raise _bad(f"{where}: datatype {spec.datatype} is not supported")
        shape = self._shape(item.get("shape"), spec, where)
        count = math.prod(shape)
        params = _parameters(item.get("parameters"), where)
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise _bad(f"{where} has both data and binary_data_size")
            flat = self._binary(size, count, spec.datatype, where)
        else:
            flat = _json_elements(item.get("data"), count, spec.datatype, where)
        return name, flat.reshape(shape)

    def _shape(self, value: object, spec: TensorSpec, where: str) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != len(spec.shape):
            raise _bad(f"{where} must have a shape of rank {len(spec.shape)}")
        if not all(type(d) is int and d >= 0 for d in value):
            raise _bad(f"{where}: shape must hold non-negative integers")
        for got, want in zip(value, spec.shape, strict=True):
            if want >= 0 and got != want:
                raise _bad(f"{where} must have shape {list(spec.shape)} (-1: any)")
        rows = value[0] if value else 1
        if not 1 <= rows <= self.max_rows:
            raise _bad(f"{where}: the batch must have 1 to {self.max_rows} rows")
        if self.rows is not None and rows != self.rows:
            raise _bad("every input must have the same batch size")
        self.rows = rows
        return tuple(value)

    def _binary(self, size: object, count: int, datatype: str, where: str) -> np.ndarray[Any, Any]:
        if type(size) is not int or size < 0 or self.offset + size > len(self.binary):
            raise _bad(f"{where}: binary_data_size is out of range")
        chunk = self.binary[self.offset : self.offset + size]
        self.offset += size
        if datatype == "BYTES":
            return _bytes_elements(chunk, count, where)
        dtype = _NUMPY[datatype]
        if size != count * dtype.itemsize:
            raise _bad(f"{where}: binary_data_size does not match its shape and datatype")
        array = np.frombuffer(chunk, dtype=dtype).copy()
        if datatype == "BOOL":
            if not np.all(np.frombuffer(chunk, dtype=np.uint8) <= 1):
                raise _bad(f"{where}: BOOL bytes must be 0 or 1")
        elif (
            datatype.startswith("FP")
            and not np.all(np.isfinite(array))
            and (not self.allow_nan or np.any(np.isinf(array)))
        ):
            raise _bad(f"{where}: NaN and infinities are not accepted")
        return array


def _flatten(data: object, count: int, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise _bad(f"{where}.data must be a list")
    if len(data) == count and (count == 0 or not isinstance(data[0], list)):
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for element in stack[-1]:
            if isinstance(element, list):
                stack.append(iter(element))
                break
            flat.append(element)
            if len(flat) > count:
                raise _bad(f"{where}.data has more elements than its shape holds")
        else:
            stack.pop()
    if len(flat) != count:
        raise _bad(f"{where}.data must hold exactly {count} elements")
    return flat


def _json_elements(data: object, count: int, datatype: str, where: str) -> np.ndarray[Any, Any]:
    flat = _flatten(data, count, where)
    if datatype == "BYTES":
        if not all(type(x) is str and len(x) <= MAX_BYTES_ELEMENT for x in flat):
            raise _bad(f"{where}: BYTES elements must be strings of at most 64 KiB")
        return np.array(flat, dtype=object)
    if datatype == "BOOL":
        if not all(type(x) is bool for x in flat):
            raise _bad(f"{where}: BOOL elements must be true or false")
        return np.array(flat, dtype=np.bool_)
    if datatype in {"INT64", "INT32"}:
        low, high = (_INT64_MIN, _INT64_MAX) if datatype == "INT64" else (_INT32_MIN, _INT32_MAX)
        if not all(type(x) is int and low <= x <= high for x in flat):
            raise _bad(f"{where}: {datatype} elements must be integers in range")
        return np.array(flat, dtype=_NUMPY[datatype])
    if not _NUMBER_TYPES.issuperset(map(type, flat)):
        raise _bad(f"{where}: {datatype} elements must be numbers")
    # JSON numbers (as orjson parses them: finite floats, integers below 2**64) are all finite
    # as FP64; as FP32 they must not exceed the largest FP32 magnitude.
    array = np.array(flat, dtype=np.float64)
    if datatype == "FP32":
        if array.size and float(np.abs(array).max()) > _FP32_MAX:
            raise _bad(f"{where}: a number is out of range for {datatype}")
        return array.astype(np.float32)
    return array


def _bytes_elements(chunk: memoryview, count: int, where: str) -> np.ndarray[Any, Any]:
    elements: list[str] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(chunk):
            raise _bad(f"{where}: truncated BYTES element")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if length > MAX_BYTES_ELEMENT or offset + length > len(chunk):
            raise _bad(f"{where}: a BYTES element is too long or truncated")
        try:
            elements.append(bytes(chunk[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(f"{where}: BYTES elements must be UTF-8 text") from None
        offset += length
    if offset != len(chunk):
        raise _bad(f"{where}: binary_data_size does not match its elements")
    return np.array(elements, dtype=object)


# --- responses ----------------------------------------------------------------------------------


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "f":
        return {4: "FP32", 8: "FP64", 2: "FP16"}.get(size, "FP64")
    if kind == "i":
        return {8: "INT64", 4: "INT32", 2: "INT16", 1: "INT8"}[size]
    if kind == "u":
        return {8: "UINT64", 4: "UINT32", 2: "UINT16", 1: "UINT8"}[size]
    if kind == "b":
        return "BOOL"
    return "BYTES"


def _raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    parts: list[bytes] = []
    for element in array.ravel():
        data = element if isinstance(element, bytes) else str(element).encode("utf-8")
        parts.extend((_LENGTH.pack(len(data)), data))
    return b"".join(parts)


def _json_data(array: np.ndarray[Any, Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e) for e in array.ravel()
        ]
    return np.ascontiguousarray(array).ravel()


def encode_infer_response(
    model_name: str,
    model_version: int,
    request: InferRequest,
    results: Mapping[str, np.ndarray[Any, Any]],
    output_order: Sequence[str],
) -> tuple[bytes, str | None]:
    """The response body, and the ``Inference-Header-Content-Length`` value when it has a
    binary part (else None)."""
    wanted = request.outputs or tuple(
        RequestedOutput(n, request.binary_outputs) for n in output_order
    )
    outputs: list[dict[str, Any]] = []
    binary_parts: list[bytes] = []
    for output in wanted:
        array = np.asarray(results[output.name])
        datatype = datatype_of(array)
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if output.binary:
            raw = _raw(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            entry["data"] = _json_data(array, datatype)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), str(len(header))
