"""Strict validation of an inference request against the model version's input schema.

An ``InputValidator`` is compiled once per model version from its signed ``InputSchema`` and
the runtime's ``ModelSignature`` (a schema that does not describe the signature fails here,
at load time, not on the first request). ``validate`` then checks every request before it
reaches the model: the tensors are exactly the model's inputs, with the expected numpy dtype
and (tabular layout) the schema's number of columns; every number lies within its feature's
``min``/``max`` (inclusive) and is finite, except that NaN passes where the feature is
``nullable``; every string is valid UTF-8, at most ``max_length`` characters
(``MAX_STRING_LENGTH`` when unset), one of the feature's ``categories`` if it has any, and, for
a free-text feature (``text``), free of the injection patterns of ``core.policy.inputs``. An
empty string counts as missing: it passes a ``nullable`` string feature.

Invariants:

* **No NaN reaches a model unless its feature is nullable; no infinity ever does.**
* **Errors never echo the payload.** ``InvalidInputError`` names the input tensor, the feature,
  the first offending row and the reason (with the schema's bound, which is no secret of the
  caller's), never the offending value, so that replies and logs carry no request data.
* **Numbers are checked in one vectorised pass per tensor**, in the tensor's own precision:
  bounds are rounded to the tensor's dtype when compiled (so ``0.1`` sent as FP32 meets a
  ``max`` of ``0.1``), and an unset bound is the dtype's largest finite value rather than an
  infinity, so that the same two comparisons also catch infinities and NaN (NaN fails every
  comparison). Only a failing request pays for finding the row and the reason.
* Strings are checked element by element in Python: they are short and few in tabular models.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from strongroom.core.policy import inputs as text_rules
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.core.registry.schema import MAX_STRING_LENGTH, FeatureSpec, InputSchema
from strongroom.errors import InvalidInputError

Array = np.ndarray[Any, Any]

_NUMPY_DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_STRING_KINDS: Final = frozenset("OUS")
_TEXT_REASONS: Final[Mapping[str, str]] = {
    text_rules.SQL: "looks like an SQL injection",
    text_rules.SCRIPT: "looks like a script injection",
    text_rules.TEMPLATE: "looks like a template injection",
    text_rules.PATH: "looks like a path traversal",
    text_rules.CONTROL: "contains control characters",
}
_INT64: Final = np.iinfo(np.int64)
_EXACT_INTEGERS: Final = 2.0**53
"""Bounds of smaller magnitude are printed as integers in messages."""


class _Check(Protocol):
    @property
    def tensor(self) -> str: ...

    def run(self, array: object) -> None: ...


class InputValidator:
    """The compiled input checks of one model version; see the module docstring."""

    __slots__ = ("_checks", "_names")

    def __init__(self, schema: InputSchema, signature: ModelSignature) -> None:
        schema.check_signature(signature)
        specs = {spec.name: spec for spec in signature.inputs}
        if schema.tensor_name is not None:
            tensor = specs[schema.tensor_name]
            checks = [_compile(tensor, schema.features, tabular=True)]
        else:
            checks = [_compile(specs[f.name], (f,), tabular=False) for f in schema.features]
        self._checks: tuple[_Check, ...] = tuple(checks)
        self._names = ", ".join(sorted(specs))

    def validate(self, inputs: Mapping[str, Array]) -> None:
        """Raise ``InvalidInputError`` naming the first problem; return None if all pass."""
        if len(inputs) != len(self._checks):
            raise InvalidInputError(f"the model takes exactly these inputs: {self._names}")
        for check in self._checks:
            array = inputs.get(check.tensor)
            if array is None:
                raise InvalidInputError(
                    f"input {check.tensor!r} is missing; the model takes: {self._names}"
                )
            check.run(array)


# --- compiling ----------------------------------------------------------------------------------


def _compile(tensor: TensorSpec, features: Sequence[FeatureSpec], *, tabular: bool) -> _Check:
    width = len(features) if tabular else None
    if tensor.datatype == "BYTES":
        return _StringCheck(tensor.name, width, tuple(_StringRule.of(f) for f in features))
    dtype = _NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        return _UnsupportedCheck(tensor.name, tensor.datatype)
    if dtype.kind == "f":
        lower, upper = _float_bounds(features, dtype)
    else:
        lower, upper = _integer_bounds(features)
    nullable = np.array([f.nullable for f in features], dtype=np.bool_)
    for array in (lower, upper, nullable):
        array.setflags(write=False)  # shared by every request: never changed after compiling
    return _NumberCheck(
        tensor=tensor.name,
        features=tuple(features),
        dtype=dtype,
        width=width,
        lower=lower,
        upper=upper,
        nan_ok=nullable if dtype.kind == "f" and bool(nullable.any()) else None,
        needed=dtype.kind == "f" or any(_bounded(f) for f in features),
    )


def _bounded(feature: FeatureSpec) -> bool:
    return feature.minimum is not None or feature.maximum is not None


def _float_bounds(features: Sequence[FeatureSpec], dtype: np.dtype[Any]) -> tuple[Array, Array]:
    """Bounds in the tensor's precision; an unset bound is the largest finite value (clipped
    first, so that casting a float64 bound to float32 never overflows)."""
    big = float(np.finfo(dtype).max)
    lower = [-big if f.minimum is None else max(f.minimum, -big) for f in features]
    upper = [big if f.maximum is None else min(f.maximum, big) for f in features]
    bounds = np.array([lower, upper], dtype=np.float64).astype(dtype)
    return bounds[0], bounds[1]


def _integer_bounds(features: Sequence[FeatureSpec]) -> tuple[Array, Array]:
    """Integer bounds as int64 (``min`` rounded up, ``max`` down), clamped to its range."""

    def clamp(value: int) -> int:
        return min(max(value, int(_INT64.min)), int(_INT64.max))

    lower = [
        int(_INT64.min) if f.minimum is None else clamp(math.ceil(f.minimum)) for f in features
    ]
    upper = [
        int(_INT64.max) if f.maximum is None else clamp(math.floor(f.maximum)) for f in features
    ]
    return np.array(lower, dtype=np.int64), np.array(upper, dtype=np.int64)


# --- checks -------------------------------------------------------------------------------------


def _refuse(tensor: str, feature: str, row: int, reason: str) -> InvalidInputError:
    return InvalidInputError(f"input {tensor!r}, feature {feature!r}, row {row}: {reason}")


def _as_rows(array: object, tensor: str, dtype_ok: bool, width: int | None) -> Array:
    """``array`` as a 2-D view ``[row, column]``: the tabular tensor itself, or a per-tensor
    input with everything after its first (batch) dimension flattened into columns."""
    if not isinstance(array, np.ndarray) or not dtype_ok:
        raise InvalidInputError(f"input {tensor!r} does not have the model's datatype")
    if width is not None:
        if array.ndim != 2 or array.shape[1] != width:  # noqa: PLR2004 - rows x columns
            raise InvalidInputError(f"input {tensor!r} must be 2-D with {width} columns")
        return array
    if array.ndim == 0:
        return array.reshape(1, 1)
    rows = array.shape[0]
    return array.reshape(rows, array.size // rows if rows else 0)


@dataclass(frozen=True, slots=True)
class _NumberCheck:
    tensor: str
    features: tuple[FeatureSpec, ...]
    dtype: np.dtype[Any]
    width: int | None
    """Columns of a tabular tensor; None for a per-tensor feature (bounds for every element)."""
    lower: Array
    upper: Array
    nan_ok: Array | None
    """Per column: NaN passes (nullable float features); None when no column allows it."""
    needed: bool
    """False for integer or boolean tensors without bounds: only dtype and shape to check."""

    def run(self, array: object) -> None:
        ok_dtype = isinstance(array, np.ndarray) and array.dtype == self.dtype
        view = _as_rows(array, self.tensor, ok_dtype, self.width)
        if not self.needed:
            return
        ok = view >= self.lower
        ok &= view <= self.upper
        if ok.all():
            return
        if self.nan_ok is not None:
            ok |= np.isnan(view) & self.nan_ok
            if ok.all():
                return
        row, column = divmod(int(np.argmin(ok)), ok.shape[1])  # the first failure, row-major
        raise self._explain(row, column, view[row, column])

    def _explain(self, row: int, column: int, element: Any) -> InvalidInputError:
        index = column if self.width is not None else 0
        feature = self.features[index]
        value = element.item()
        if isinstance(value, float) and math.isnan(value):
            reason = "NaN is not allowed"
        elif isinstance(value, float) and math.isinf(value):
            reason = "infinity is not allowed"
        elif value < self.lower[index] and feature.minimum is not None:
            reason = f"below the minimum {_number(feature.minimum)}"
        elif feature.maximum is not None:
            reason = f"above the maximum {_number(feature.maximum)}"
        else:  # unreachable for finite values; kept so that a refusal always has a reason
            reason = "out of range"
        return _refuse(self.tensor, feature.name, row, reason)


def _number(bound: float) -> str:
    """A schema bound as a caller would write it: ``0``, ``1000000``, ``0.5``, ``1e+300``."""
    if bound.is_integer() and abs(bound) < _EXACT_INTEGERS:
        return str(int(bound))
    return repr(bound)


@dataclass(frozen=True, slots=True)
class _StringRule:
    feature: str
    max_length: int
    categories: frozenset[str] | None
    nullable: bool
    text: bool

    @classmethod
    def of(cls, feature: FeatureSpec) -> _StringRule:
        categories = None if feature.categories is None else frozenset(feature.categories)
        max_length = MAX_STRING_LENGTH if feature.max_length is None else feature.max_length
        return cls(feature.name, max_length, categories, feature.nullable, feature.text)

    def reason(self, value: object) -> str | None:
        """Why ``value`` is refused, or None. Never includes the value itself."""
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return "not valid UTF-8"
        if not isinstance(value, str):
            if value is None:
                return None if self.nullable else "null is not allowed"
            return "not a string"
        if not value and self.nullable:
            return None
        return self._content(value)

    def _content(self, value: str) -> str | None:
        if not value.isascii() and not _encodable(value):
            return "not valid UTF-8"
        if len(value) > self.max_length:
            return f"longer than {self.max_length} characters"
        if self.categories is not None and value not in self.categories:
            return "not one of the feature's categories"
        category = text_rules.check_text(value) if self.text else None
        return None if category is None else _TEXT_REASONS[category]


def _encodable(value: str) -> bool:
    """False for a string holding lone surrogates (which no valid UTF-8 encodes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _StringCheck:
    tensor: str
    width: int | None
    rules: tuple[_StringRule, ...]
    """One per column (tabular) or the one rule of a per-tensor feature."""

    def run(self, array: object) -> None:
        ok_dtype = isinstance(array, np.ndarray) and array.dtype.kind in _STRING_KINDS
        view = _as_rows(array, self.tensor, ok_dtype, self.width)
        for row, values in enumerate(view.tolist()):
            rules = self.rules if self.width is not None else itertools.repeat(self.rules[0])
            for value, rule in zip(values, rules, strict=False):
                reason = rule.reason(value)
                if reason is not None:
                    raise _refuse(self.tensor, rule.feature, row, reason)


@dataclass(frozen=True, slots=True)
class _UnsupportedCheck:
    """An input whose datatype has no numpy equivalent here (BF16): refused, never passed
    unchecked. The version still loads, so that one odd model does not fail readiness."""

    tensor: str
    datatype: str

    def run(self, array: object) -> None:  # noqa: ARG002 - the _Check signature
        raise InvalidInputError(
            f"input {self.tensor!r}: datatype {self.datatype} cannot be validated, so it is"
            " not accepted"
        )
