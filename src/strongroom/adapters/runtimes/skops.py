"""skops runtime: scikit-learn models saved with ``skops.io.dump``, loaded without pickle.

A skops file is a zip of a JSON tree (``schema.json``) and ``.npy`` arrays (read with
``allow_pickle=False``). Loading instantiates only types that skops trusts by default or that the
model's owner listed in the version's ``trusted_types`` (which are part of the signed manifest).

Trust policy: an ALLOW-list applied on top of the owner's list. A type can be trusted (by skops'
defaults or by the owner) only if it is a *class* from this set:

- scikit-learn classes (``sklearn.*``, resolved by import and required to be a class defined
  under ``sklearn``; test helpers, vendored ``externals`` and ``datasets`` loaders excluded);
- ``numpy.ndarray``, ``numpy.dtype``, numpy scalar types (subclasses of ``numpy.generic``) and
  the random state types ``numpy.random.mtrand.RandomState`` and
  ``numpy.random._generator.Generator``;
- scipy sparse matrix and array classes (``scipy.sparse.*`` subclasses of ``spmatrix`` or
  ``sparray``);
- ``collections.OrderedDict``, ``collections.defaultdict`` and the builtins ``dict``, ``list``,
  ``tuple``, ``set``, ``frozenset``, ``slice``, ``str``, ``bytes``, ``int``, ``float``, ``bool``.

Everything else is refused with ``UntrustedTypesError`` even when the owner lists it. In
particular every *function* reference (``FunctionNode``: ``numpy.savetxt``, ``numpy.log1p``, any
ufunc), ``functools.partial``, bound methods and ``operator`` call helpers are refused: a
function stored in a model (``FunctionTransformer(func=...)``, a callable metric) runs with
arguments of the file's choosing at predict time, so it can write files or call anything. A
pipeline that needs such a step should be converted to ONNX (``skl2onnx``) instead.

Invariants:

- The policy is applied to *every* type the file references, read from ``schema.json`` without
  importing anything the file names first: skops' own default-trusted types (numpy ufuncs, for
  one) never show up in ``skops.io.get_untrusted_types``, so that list alone is not enough. It is
  also applied to what ``get_untrusted_types`` reports (which includes names hidden in node
  contents, such as a ``Generator``'s bit generator) and to the owner's ``trusted_types``.
- Only names already inside an allowed prefix are imported to check that they are classes.
- After the policy, any type skops reports as untrusted must be in ``trusted_types``.
- ``validate`` and ``load`` both go through ``_load``, so the checks run before anything is
  built at publish time and again on every load; ``load`` then calls
  ``skops.io.loads(data, trusted=trusted_types)``.

The model takes one input named ``input`` (a ``[batch, n_features]`` array) and returns
``probabilities`` from ``predict_proba`` when the estimator has it, else ``predictions``.
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import numpy as np

from strongroom.core.registry.artifact import VerifiedArtifact
from strongroom.core.registry.formats import ModelFormat, check_format
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError, MissingExtraError, UntrustedTypesError

INPUT_NAME = "input"
ALLOWED_TYPE_NAMES: Final = frozenset(
    {
        "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
        "builtins.slice", "builtins.str", "builtins.bytes", "builtins.int", "builtins.float",
        "builtins.bool", "collections.OrderedDict", "collections.defaultdict",
        "numpy.ndarray", "numpy.dtype", "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
    }
)  # fmt: skip
"""Exact names allowed outside the class families checked by import (see the module docstring)."""
REFUSED_NODE_KINDS: Final = MappingProxyType(
    {
        "FunctionNode": "a function reference",
        "PartialNode": "a functools.partial call",
        "MethodNode": "a bound method",
        "OperatorFuncNode": "an operator call helper",
    }
)
"""skops node kinds that store something callable: refused whatever the type."""
ALLOWED_NODE_KINDS: Final = frozenset(
    {
        "DictNode", "DefaultDictNode", "ListNode", "SetNode", "TupleNode", "BytesNode",
        "SliceNode", "TypeNode", "ConstructorFromReduceNode", "ObjectNode", "JsonNode",
        "CachedNode", "NdArrayNode", "DTypeNode", "RandomStateNode", "RandomGeneratorNode",
        "SparseMatrixNode", "TreeNode", "LossNode",
    }
)  # fmt: skip
"""Node kinds that build data or instances; a kind added by a later skops fails closed."""
_SKLEARN_EXCLUDED_PARTS: Final = frozenset(
    {"tests", "_testing", "externals", "datasets", "experimental", "conftest", "_build_utils"}
)
_WHY: Final = (
    "only scikit-learn classes, numpy arrays, dtypes and scalars, scipy sparse matrices and "
    "builtin containers can be trusted: function references and non-scikit-learn code can run "
    "arbitrary operations at predict time; convert such a pipeline to ONNX (skl2onnx) instead"
)
_PARSE_ERRORS = (
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    ImportError,
    OSError,
    EOFError,
    RecursionError,
)
_KIND_TO_DATATYPE: MappingProxyType[str, str] = MappingProxyType(
    {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL", "U": "BYTES", "O": "BYTES"}
)


def _skops_io() -> Any:
    try:
        import skops.io  # noqa: PLC0415 - optional extra, imported only when used
    except ImportError as exc:
        raise MissingExtraError("skops runtime", "skops") from exc
    return skops.io


# --- the allow-list -----------------------------------------------------------------------------


def _resolve(module: str, attribute: str) -> object | None:
    """Import ``module`` and return its ``attribute``; ``None`` if either does not exist.

    Called only for modules under ``sklearn``, ``numpy`` or ``scipy.sparse`` (installed library
    code that skops would import anyway), never for a module the file names freely.
    """
    if not attribute.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        return None
    try:
        return getattr(importlib.import_module(module), attribute, None)
    except (ImportError, ValueError):
        return None


def _is_sparse_class(found: object) -> bool:
    sparse = importlib.import_module("scipy.sparse")
    bases = tuple(b for b in (sparse.spmatrix, getattr(sparse, "sparray", None)) if b)
    return isinstance(found, type) and issubclass(found, bases)


def _sklearn_refusal(module: str, attribute: str) -> str | None:
    found = _resolve(module, attribute)
    if found is None:
        return "not an importable scikit-learn name"
    if not isinstance(found, type):
        return "a function, not a class"
    if not str(getattr(found, "__module__", "")).startswith("sklearn."):
        return "not defined by scikit-learn"
    return None


def _array_refusal(module: str, attribute: str) -> str | None:
    """numpy scalar types and scipy sparse classes; anything else there is refused."""
    found = _resolve(module, attribute)
    if not isinstance(found, type):
        return "not on the allow-list" if found is None else "a function, not a class"
    if module == "numpy" and issubclass(found, np.generic):
        return None
    if module != "numpy" and _is_sparse_class(found):
        return None
    return "not on the allow-list"


def refusal_reason(module: str, attribute: str) -> str | None:
    """Why ``module.attribute`` can never be trusted, or ``None`` if the allow-list admits it."""
    if f"{module}.{attribute}" in ALLOWED_TYPE_NAMES:
        return None
    parts = module.split(".")
    if parts[0] == "sklearn" and not _SKLEARN_EXCLUDED_PARTS.intersection(parts):
        return _sklearn_refusal(module, attribute)
    if module == "numpy" or parts[:2] == ["scipy", "sparse"]:
        return _array_refusal(module, attribute)
    return "not on the allow-list"


def _split(type_name: str) -> tuple[str, str]:
    module, _, attribute = type_name.rpartition(".")
    return module, attribute


def _nodes(schema: object) -> Iterator[tuple[str, str, str]]:
    """Every skops node in the JSON tree as (node kind, module, class); iterative, no imports."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if "__loader__" in item:
                kind, module, name = (
                    item.get(k) for k in ("__loader__", "__module__", "__class__")
                )
                if not (
                    isinstance(kind, str) and isinstance(module, str) and isinstance(name, str)
                ):
                    raise InvalidInputError("model file is malformed: a skops node has no type")
                yield kind, module, name
            stack.extend(item.values())


def _referenced(data: bytes) -> dict[str, str]:
    """Every type the file names, mapped to why it is refused ("" when it is allowed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except _PARSE_ERRORS as exc:
        raise InvalidInputError("model file is malformed: not a readable skops file") from exc
    found: dict[str, str] = {}
    for kind, module, attribute in _nodes(schema):
        name = f"{module}.{attribute}"
        if kind in REFUSED_NODE_KINDS:
            found[name] = REFUSED_NODE_KINDS[kind]
        elif kind not in ALLOWED_NODE_KINDS:
            found[name] = f"stored by the skops node kind {kind!r}, which is not allowed"
        elif name not in found:
            found[name] = refusal_reason(module, attribute) or ""
    return found


def _refuse(reasons: Mapping[str, str]) -> None:
    if reasons:
        listed = [f"{name} ({reasons[name]})" for name in sorted(reasons)[:20]]
        raise UntrustedTypesError(
            f"the skops file or trusted list names types that are never trusted: {listed}",
            hint=_WHY,
        )


def _named_refusals(names: Iterable[str], known: Mapping[str, str]) -> dict[str, str]:
    """Refusal reasons for names that are not already classified in ``known``."""
    reasons = {name: refusal_reason(*_split(name)) for name in names if name not in known}
    return {name: why for name, why in reasons.items() if why}


def check_trusted(sio: Any, data: bytes, trusted_types: tuple[str, ...]) -> None:
    """Raise ``UntrustedTypesError`` unless every type in ``data`` is allowed and trusted.

    The allow-list is checked against the file's own tree and the owner's list before skops
    parses anything, then against what skops reports; last, skops' untrusted types must all be
    in ``trusted_types``.
    """
    referenced = _referenced(data)
    reasons = {name: why for name, why in referenced.items() if why}
    _refuse(reasons | _named_refusals(trusted_types, referenced))
    try:
        reported = [str(name) for name in sio.get_untrusted_types(data=data)]
    except _PARSE_ERRORS as exc:
        raise InvalidInputError("model file is malformed: not a readable skops file") from exc
    _refuse(_named_refusals(reported, referenced))
    untrusted = sorted(set(reported) - set(trusted_types))
    if untrusted:
        raise UntrustedTypesError(
            f"the skops file uses untrusted types: {untrusted[:20]}",
            hint="review them, and if you trust them list them in the version's trusted types",
        )


def _datatype(values: Any) -> str:
    return _KIND_TO_DATATYPE.get(np.asarray(values).dtype.kind, "BYTES")


def signature_of(model: Any) -> ModelSignature:
    """Inputs from ``n_features_in_`` (``-1`` if unknown); outputs from ``classes_``."""
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError("model file is malformed: the skops object has no predict()")
    n_features = getattr(model, "n_features_in_", -1)
    width = n_features if isinstance(n_features, int) and n_features > 0 else -1
    inputs = (TensorSpec(name=INPUT_NAME, datatype="FP64", shape=(-1, width)),)
    classes = getattr(model, "classes_", None)
    if hasattr(model, "predict_proba"):
        n_classes = len(classes) if classes is not None else -1
        output = TensorSpec(name="probabilities", datatype="FP64", shape=(-1, n_classes))
    else:
        datatype = "FP64" if classes is None else _datatype(classes)
        output = TensorSpec(name="predictions", datatype=datatype, shape=(-1,))
    return ModelSignature(inputs=inputs, outputs=(output,))


class SkopsRuntime:
    """``ModelRuntime`` for skops files; see the module docstring."""

    @property
    def formats(self) -> frozenset[ModelFormat]:
        return frozenset({ModelFormat.SKOPS})

    def validate(
        self, fmt: ModelFormat, data: bytes, trusted_types: tuple[str, ...]
    ) -> ModelSignature:
        return signature_of(self._load(fmt, data, trusted_types))

    def load(self, artifact: VerifiedArtifact) -> SkopsModel:
        model = self._load(artifact.format, artifact.primary_bytes, artifact.trusted_types)
        return SkopsModel(model, signature_of(model))

    @staticmethod
    def _load(fmt: ModelFormat, data: bytes, trusted_types: tuple[str, ...]) -> Any:
        """Check the format and the types, then let skops build only trusted objects."""
        if fmt is not ModelFormat.SKOPS:
            raise InvalidInputError(f"the skops runtime cannot load {fmt.value!r} models")
        check_format(fmt, data)
        sio = _skops_io()
        check_trusted(sio, data, trusted_types)
        try:
            return sio.loads(data, trusted=list(trusted_types))
        except _PARSE_ERRORS as exc:
            if type(exc).__name__ == "UntrustedTypesFoundException":
                raise UntrustedTypesError("the skops file uses untrusted types") from exc
            raise InvalidInputError("model file is malformed: skops cannot load it") from exc


class SkopsModel:
    """A loaded scikit-learn estimator behind the ``LoadedModel`` protocol."""

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        self._model = model
        self._signature = signature
        self._output = signature.outputs[0].name

    @property
    def signature(self) -> ModelSignature:
        return self._signature

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if set(inputs) != {INPUT_NAME}:
            raise InvalidInputError(f"the model expects one input named {INPUT_NAME!r}")
        batch = np.asarray(inputs[INPUT_NAME])
        method = (
            self._model.predict_proba if self._output == "probabilities" else self._model.predict
        )
        try:
            return {self._output: np.asarray(method(batch))}
        except (ValueError, TypeError) as exc:
            raise InvalidInputError("the input does not fit the model's inputs") from exc
