"""skops runtime: scikit-learn models saved with ``skops.io.dump``, loaded without pickle.

A skops file is a zip of a JSON tree (``schema.json``) and ``.npy`` arrays (read with
``allow_pickle=False``). Loading instantiates only types that skops trusts by default or that the
model's owner listed in the version's ``trusted_types`` (which are part of the signed manifest).

Invariants:

- ``validate`` asks ``skops.io.get_untrusted_types``, which reads the JSON tree and instantiates
  nothing, and refuses any type outside ``trusted_types`` with ``UntrustedTypesError``, before
  anything is loaded.
- Types that can run code or touch the system (``builtins.eval``, ``os.*``, ``subprocess.*``,
  ``pickle.*``...) are refused even when listed as trusted: owners tend to paste the whole
  untrusted list into ``trusted_types``. This deny-list is defence in depth, not the control.
- ``load`` repeats those checks, then calls ``skops.io.loads(data, trusted=trusted_types)``.

The model takes one input named ``input`` (a ``[batch, n_features]`` array) and returns
``probabilities`` from ``predict_proba`` when the estimator has it, else ``predictions``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from strongroom.core.registry.artifact import VerifiedArtifact
from strongroom.core.registry.formats import ModelFormat, check_format
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError, MissingExtraError, UntrustedTypesError

INPUT_NAME = "input"
NEVER_TRUSTED_MODULES = frozenset(
    {
        "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy",
        "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pty", "pdb", "shelve",
        "webbrowser", "multiprocessing", "signal", "threading", "_thread", "io", "_io",
        "pathlib", "tempfile", "urllib", "http", "asyncio", "dill", "joblib", "cloudpickle",
    }
)  # fmt: skip
NEVER_TRUSTED_NAMES = frozenset(
    {
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open",
        "builtins.__import__", "builtins.getattr", "builtins.setattr", "builtins.delattr",
        "builtins.globals", "builtins.locals", "builtins.vars", "builtins.breakpoint",
        "builtins.input", "builtins.exit", "builtins.quit", "builtins.help",
        "operator.attrgetter", "operator.methodcaller",
    }
)  # fmt: skip
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


def _never_trusted(type_name: str) -> bool:
    return type_name in NEVER_TRUSTED_NAMES or type_name.split(".", 1)[0] in NEVER_TRUSTED_MODULES


def check_trusted(sio: Any, data: bytes, trusted_types: tuple[str, ...]) -> None:
    """Raise ``UntrustedTypesError`` unless every type in ``data`` is trusted and allowed."""
    try:
        found = [str(name) for name in sio.get_untrusted_types(data=data)]
    except _PARSE_ERRORS as exc:
        raise InvalidInputError("model file is malformed: not a readable skops file") from exc
    denied = sorted({t for t in (*found, *trusted_types) if _never_trusted(t)})
    if denied:
        raise UntrustedTypesError(
            f"the skops file or trusted list names types that are never trusted: {denied[:20]}",
            hint="these types can run code; re-export the model without them",
        )
    untrusted = sorted(set(found) - set(trusted_types))
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
