"""ONNX runtime: validates ONNX models with ``onnx`` and runs them with ``onnxruntime`` on CPU.

Invariants:

- No tensor may use external data (``data_location == EXTERNAL`` or ``external_data`` entries),
  anywhere: graph and sparse initializers, node attributes, subgraphs of control-flow nodes,
  model-local functions and training graphs. External data names a file path that onnxruntime
  resolves relative to its working directory, which is a path-traversal and file-read hole.
- Only the standard operator domains (``""``, ``ai.onnx``, ``ai.onnx.ml``) are allowed, so that
  no custom-op library is ever needed or loaded.
- Inputs and outputs must be tensors. skl2onnx classifiers must be converted with
  ``options={"zipmap": False}`` (``strongroom quickstart`` does this) so that probabilities come
  out as a ``[batch, n_classes]`` tensor instead of a list of dicts.
- ``load`` repeats every check of ``validate`` before building the session (defence in depth:
  the artifact was validated at publish time by possibly older code).
- Sessions run on ``CPUExecutionProvider`` only, with ``intra_op_threads`` threads, one inter-op
  thread, sequential execution and all graph optimisations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
import onnx.checker
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from strongroom.core.registry.artifact import VerifiedArtifact
from strongroom.core.registry.formats import ModelFormat, check_format
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
ZIPMAP_HINT = "convert sklearn classifiers with skl2onnx options={'zipmap': False}"

_T = onnx.TensorProto
_ELEM_TO_DATATYPE: MappingProxyType[int, str] = MappingProxyType(
    {
        _T.FLOAT: "FP32",
        _T.DOUBLE: "FP64",
        _T.FLOAT16: "FP16",
        _T.BFLOAT16: "BF16",
        _T.INT8: "INT8",
        _T.INT16: "INT16",
        _T.INT32: "INT32",
        _T.INT64: "INT64",
        _T.UINT8: "UINT8",
        _T.UINT16: "UINT16",
        _T.UINT32: "UINT32",
        _T.UINT64: "UINT64",
        _T.BOOL: "BOOL",
        _T.STRING: "BYTES",
    }
)
_DATATYPE_TO_NUMPY: MappingProxyType[str, Any] = MappingProxyType(
    {
        "FP32": np.float32,
        "FP64": np.float64,
        "FP16": np.float16,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "BOOL": np.bool_,
        "BYTES": np.str_,
    }
)
_ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotFound,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
    ValueError,
    TypeError,
)


def _malformed(reason: str) -> InvalidInputError:
    return InvalidInputError(f"model file is malformed: {reason}")


def _parse(data: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _malformed("not a valid ONNX protobuf") from exc


def _check_tensor(tensor: onnx.TensorProto) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        raise InvalidInputError(
            f"ONNX tensor {tensor.name[:80]!r} uses external data, which is refused",
            hint="save the model with all tensors inside the file (save_as_external_data=False)",
        )


def _check_sparse(sparse: onnx.SparseTensorProto) -> None:
    _check_tensor(sparse.values)
    _check_tensor(sparse.indices)


def _check_node(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """Check one node's domain and attribute tensors; yield its subgraphs."""
    if node.domain not in ALLOWED_DOMAINS:
        raise InvalidInputError(
            f"ONNX operator domain {node.domain[:80]!r} is not allowed",
            hint="only the standard domains '', 'ai.onnx' and 'ai.onnx.ml' are supported",
        )
    for attr in node.attribute:
        _check_tensor(attr.t)
        _check_sparse(attr.sparse_tensor)
        for tensor in attr.tensors:
            _check_tensor(tensor)
        for sparse in attr.sparse_tensors:
            _check_sparse(sparse)
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def check_model_safety(model: onnx.ModelProto) -> None:
    """Refuse external data and non-standard domains anywhere in ``model``."""
    domains = [o.domain for o in model.opset_import] + [f.domain for f in model.functions]
    bad = sorted({d for d in domains if d not in ALLOWED_DOMAINS})
    if bad:
        raise InvalidInputError(f"ONNX operator domains {bad[:5]} are not allowed")
    graphs = [model.graph]
    for info in model.training_info:
        graphs += [info.initialization, info.algorithm]
    for function in model.functions:
        for node in function.node:
            graphs.extend(_check_node(node))
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            _check_tensor(tensor)
        for sparse in graph.sparse_initializer:
            _check_sparse(sparse)
        for node in graph.node:
            graphs.extend(_check_node(node))


def _tensor_spec(value: onnx.ValueInfoProto, role: str) -> TensorSpec:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidInputError(f"ONNX {role} {value.name!r} is not a tensor", hint=ZIPMAP_HINT)
    tensor_type = value.type.tensor_type
    datatype = _ELEM_TO_DATATYPE.get(tensor_type.elem_type)
    if datatype is None:
        raise InvalidInputError(f"ONNX {role} {value.name!r} has an unsupported element type")
    shape: tuple[int, ...] = ()
    if tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)


def signature_of(model: onnx.ModelProto) -> ModelSignature:
    """Graph inputs (minus initializers, which old IR versions list as inputs) and outputs.

    A tensor without shape information gets shape ``()``: unknown rank.
    """
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(
        _tensor_spec(v, "input") for v in model.graph.input if v.name not in initializers
    )
    outputs = tuple(_tensor_spec(v, "output") for v in model.graph.output)
    if not inputs or not outputs:
        raise _malformed("the graph has no inputs or no outputs")
    return ModelSignature(inputs=inputs, outputs=outputs)


class OnnxRuntime:
    """``ModelRuntime`` for ONNX; see the module docstring for what it refuses."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        if intra_op_threads < 1:
            raise ValueError("intra_op_threads must be at least 1")
        self._intra_op_threads = intra_op_threads

    @property
    def formats(self) -> frozenset[ModelFormat]:
        return frozenset({ModelFormat.ONNX})

    def validate(
        self,
        fmt: ModelFormat,
        data: bytes,
        trusted_types: tuple[str, ...],  # noqa: ARG002 - port signature; only skops uses it
    ) -> ModelSignature:
        """Parse (protobuf only, no execution), check safety and the ONNX spec, list I/O."""
        if fmt is not ModelFormat.ONNX:
            raise InvalidInputError(f"the ONNX runtime cannot validate {fmt.value!r} models")
        check_format(fmt, data)
        model = _parse(data)
        check_model_safety(model)
        try:
            onnx.checker.check_model(data)  # bytes: spares a re-serialisation of the model
        except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
            raise _malformed(str(exc).splitlines()[0][:200] if str(exc) else "invalid") from exc
        return signature_of(model)

    def load(self, artifact: VerifiedArtifact) -> OnnxModel:
        data = artifact.primary_bytes
        signature = self.validate(artifact.format, data, artifact.trusted_types)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings would leak into server logs
        options.add_session_config_entry("session.load_model_format", "ONNX")
        try:
            session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise _malformed("onnxruntime cannot load it") from exc
        return OnnxModel(session, signature)


class OnnxModel:
    """A loaded ONNX session. ``predict`` is safe to call from several threads."""

    def __init__(self, session: Any, signature: ModelSignature) -> None:
        self._session = session
        self._signature = signature
        self._input_names = frozenset(spec.name for spec in signature.inputs)
        self._feeds = tuple(
            (spec.name, _DATATYPE_TO_NUMPY.get(spec.datatype)) for spec in signature.inputs
        )
        self._output_names = [spec.name for spec in signature.outputs]

    @property
    def signature(self) -> ModelSignature:
        return self._signature

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Cast each input to its declared type, run the session, name the outputs."""
        if inputs.keys() != self._input_names:
            raise InvalidInputError(f"the model expects inputs {sorted(self._input_names)}")
        try:
            feed = {name: np.asarray(inputs[name], dtype=dtype) for name, dtype in self._feeds}
            results = self._session.run(self._output_names, feed)
        except _ORT_ERRORS as exc:
            raise InvalidInputError("the input does not fit the model's inputs") from exc
        return dict(zip(self._output_names, results, strict=True))
