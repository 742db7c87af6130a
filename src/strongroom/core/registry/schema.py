"""A model's input schema: feature names, dtypes, ranges and categories.

The schema goes into the signed manifest, so it has one canonical dict form (``to_dict``: fixed
key order, bounds as JSON numbers, categories sorted) and one strict parser (``from_dict``:
unknown keys, wrong types, NaN/inf bounds, ``min > max``, duplicate or odd names, more than
``MAX_FEATURES`` features all raise ``InvalidInputError`` naming the offending feature).
The optional keys ``max_length`` and ``text`` (string features only) are emitted only when set,
so schemas that do not use them keep the exact canonical bytes, and manifest digests, they had
before those keys existed.

What the keys mean at serving time (``core.detectors.inputs`` enforces them): ``min``/``max``
bound every value, inclusively; ``categories`` is the closed set of a string feature's values;
``nullable`` lets a numeric feature carry NaN (the usual missing-value encoding of tree models)
and a string feature be empty, while infinities are never accepted; ``max_length`` caps a
string's length in characters (``MAX_STRING_LENGTH`` when unset); ``text`` marks free text,
which is also screened for injection payloads (``core.policy.inputs``).

Two layouts, chosen by ``tensor_name``:

- **tabular** (``tensor_name`` set): the model has one 2-D input tensor ``[batch, d]`` and the
  features are its ``d`` columns, in order. This is the common case (skl2onnx, skops, XGBoost,
  LightGBM).
- **per tensor** (``tensor_name`` is ``None``): each feature is a whole input tensor of that
  name. Used for multi-input graphs and for inputs that are not 2-D. Limits: bounds and
  categories apply to every element of the tensor, and shapes are not part of the schema (the
  runtime's signature has them).

``infer_schema`` builds a schema from the runtime's ``ModelSignature`` and, optionally, a small
reference CSV (header row required): numeric columns give ``min``/``max``, string columns with
few distinct values give ``categories``, empty cells make a feature ``nullable``. Parsing is
strict: ``nan``, ``inf``, ``1_000`` and non-ASCII digits are refused. Pure Python, no numpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError, TooLargeError

SCHEMA_VERSION = 1
DTYPES = ("float32", "float64", "int64", "bool", "string")
NUMERIC_DTYPES = frozenset({"float32", "float64", "int64"})
MAX_FEATURES = 10_000
MAX_NAME_LENGTH = 256
MAX_CATEGORIES = 1024
MAX_CATEGORY_LENGTH = 256
MAX_STRING_LENGTH = 65536
"""The largest ``max_length``, and the length limit of a string feature that sets none."""
INFERRED_CATEGORY_LIMIT = 64
"""A CSV string column becomes categorical only with at most this many distinct values, each
seen at least twice on average (a column of unique values is free text or an identifier)."""
DEFAULT_MAX_CSV_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_SCHEMA_JSON_BYTES = 4 * 1024 * 1024

_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
_BOOL_WORDS = frozenset({"true", "false", "0", "1"})
_TOP_KEYS = frozenset({"version", "tensor_name", "features"})
_FEATURE_KEYS = frozenset(
    {"name", "dtype", "min", "max", "categories", "max_length", "text", "nullable"}
)
_DATATYPE_TO_DTYPE: MappingProxyType[str, str] = MappingProxyType(
    {
        "FP16": "float32",
        "BF16": "float32",
        "FP32": "float32",
        "FP64": "float64",
        "INT8": "int64",
        "INT16": "int64",
        "INT32": "int64",
        "INT64": "int64",
        "UINT8": "int64",
        "UINT16": "int64",
        "UINT32": "int64",
        "UINT64": "int64",
        "BOOL": "bool",
        "BYTES": "string",
    }
)


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInputError(f"{what} must be a string of 1 to {MAX_NAME_LENGTH} characters")
    if not name.isprintable() or name != name.strip():
        raise InvalidInputError(
            f"{what} {name!r} must be printable, without leading or trailing spaces"
        )
    return name


def _check_bound(value: object, feature: str, dtype: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInputError(f"feature {feature!r}: min and max must be numbers")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInputError(f"feature {feature!r}: min and max must be finite")
    if dtype == "float32" and abs(number) > _FLOAT32_MAX:
        raise InvalidInputError(f"feature {feature!r}: bound outside the float32 range")
    if dtype == "int64" and not _INT64_MIN <= number <= _INT64_MAX:
        raise InvalidInputError(f"feature {feature!r}: bound outside the int64 range")
    return number + 0.0  # -0.0 becomes 0.0, so the canonical form is unique


def _check_categories(value: object, feature: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"feature {feature!r}: categories must be a list of strings")
    if not 1 <= len(value) <= MAX_CATEGORIES:
        raise InvalidInputError(f"feature {feature!r}: 1 to {MAX_CATEGORIES} categories allowed")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_CATEGORY_LENGTH:
            raise InvalidInputError(
                f"feature {feature!r}: categories must be strings of at most"
                f" {MAX_CATEGORY_LENGTH} characters"
            )
    if len(set(value)) != len(value):
        raise InvalidInputError(f"feature {feature!r}: categories must be unique")
    return tuple(sorted(value))


def _check_max_length(value: object, feature: str, categories: tuple[str, ...] | None) -> None:
    if value is None:
        return
    if type(value) is not int or not 1 <= value <= MAX_STRING_LENGTH:
        raise InvalidInputError(
            f"feature {feature!r}: max_length must be an integer from 1 to {MAX_STRING_LENGTH}"
        )
    if categories is not None and any(len(c) > value for c in categories):
        raise InvalidInputError(f"feature {feature!r}: a category is longer than max_length")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature. Bounds apply to numeric dtypes only; categories, ``max_length`` and
    ``text`` to ``string`` only (see the module docstring for what each means when serving)."""

    name: str
    dtype: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    max_length: int | None = None
    text: bool = False

    def __post_init__(self) -> None:
        name = _check_name(self.name, "feature name")
        if self.dtype not in DTYPES:
            raise InvalidInputError(
                f"feature {name!r}: dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}"
            )
        lo = _check_bound(self.minimum, name, self.dtype)
        hi = _check_bound(self.maximum, name, self.dtype)
        if (lo is not None or hi is not None) and self.dtype not in NUMERIC_DTYPES:
            raise InvalidInputError(f"feature {name!r}: min/max need a numeric dtype")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInputError(f"feature {name!r}: min is greater than max")
        categories = _check_categories(self.categories, name)
        if categories is not None and self.dtype != "string":
            raise InvalidInputError(f"feature {name!r}: categories need dtype 'string'")
        if not isinstance(self.nullable, bool):
            raise InvalidInputError(f"feature {name!r}: nullable must be true or false")
        _check_max_length(self.max_length, name, categories)
        if not isinstance(self.text, bool):
            raise InvalidInputError(f"feature {name!r}: text must be true or false")
        if (self.max_length is not None or self.text) and self.dtype != "string":
            raise InvalidInputError(f"feature {name!r}: max_length and text need dtype 'string'")
        object.__setattr__(self, "minimum", lo)
        object.__setattr__(self, "maximum", hi)
        object.__setattr__(self, "categories", categories)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.max_length is not None:  # only when set: older schemas keep their exact bytes
            out["max_length"] = self.max_length
        if self.text:
            out["text"] = True
        out["nullable"] = self.nullable
        return out

    @classmethod
    def from_dict(cls, data: object, index: int) -> FeatureSpec:
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"features[{index}] must be an object")
        unknown = set(data) - _FEATURE_KEYS
        if unknown:
            raise InvalidInputError(f"features[{index}]: unknown keys {sorted(map(str, unknown))}")
        if "name" not in data or "dtype" not in data:
            raise InvalidInputError(f"features[{index}]: 'name' and 'dtype' are required")
        return cls(
            name=data["name"],
            dtype=data["dtype"],
            minimum=data.get("min"),
            maximum=data.get("max"),
            categories=data.get("categories"),
            nullable=data.get("nullable", False),
            max_length=data.get("max_length"),
            text=data.get("text", False),
        )


@dataclass(frozen=True, slots=True)
class InputSchema:
    features: tuple[FeatureSpec, ...]
    tensor_name: str | None
    """The single 2-D input whose columns the features are, or None for one tensor each."""

    def __post_init__(self) -> None:
        features: object = self.features
        if isinstance(features, str | bytes) or not isinstance(features, Sequence):
            raise InvalidInputError("features must be a list")
        if not 1 <= len(self.features) <= MAX_FEATURES:
            raise InvalidInputError(f"a schema needs 1 to {MAX_FEATURES} features")
        if not all(isinstance(f, FeatureSpec) for f in self.features):
            raise InvalidInputError("features must be FeatureSpec values")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise InvalidInputError(f"feature name {duplicate!r} is used twice")
        if self.tensor_name is not None:
            _check_name(self.tensor_name, "tensor_name")
        object.__setattr__(self, "features", tuple(self.features))

    def to_dict(self) -> dict[str, Any]:
        """The canonical form that goes into the signed manifest."""
        return {
            "version": SCHEMA_VERSION,
            "tensor_name": self.tensor_name,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSchema:
        if not isinstance(data, Mapping):
            raise InvalidInputError("an input schema must be a JSON object")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise InvalidInputError(f"input schema: unknown keys {sorted(map(str, unknown))}")
        version = data.get("version", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:
            raise InvalidInputError(f"input schema version must be {SCHEMA_VERSION}")
        features = data.get("features")
        if isinstance(features, str | bytes) or not isinstance(features, Sequence):
            raise InvalidInputError("input schema: 'features' must be a list")
        if len(features) > MAX_FEATURES:
            raise InvalidInputError(f"a schema needs 1 to {MAX_FEATURES} features")
        specs = tuple(FeatureSpec.from_dict(item, i) for i, item in enumerate(features))
        return cls(features=specs, tensor_name=data.get("tensor_name"))

    def check_signature(self, signature: ModelSignature) -> None:
        """Raise ``InvalidInputError`` unless the schema describes the model's inputs."""
        inputs = {spec.name: spec for spec in signature.inputs}
        if self.tensor_name is not None:
            spec = inputs.get(self.tensor_name)
            if spec is None or len(signature.inputs) != 1 or len(spec.shape) != 2:  # noqa: PLR2004
                raise InvalidInputError(
                    f"tensor_name {self.tensor_name!r} is not the model's single 2-D input"
                )
            if spec.shape[1] not in {-1, len(self.features)}:
                raise InvalidInputError(
                    f"the model expects {spec.shape[1]} features, the schema lists"
                    f" {len(self.features)}"
                )
            pairs = [(f, spec) for f in self.features]
        else:
            if {f.name for f in self.features} != set(inputs):
                raise InvalidInputError(
                    f"the schema's features must be the model's inputs: {sorted(inputs)}"
                )
            pairs = [(f, inputs[f.name]) for f in self.features]
        for feature, tensor in pairs:
            if (feature.dtype == "string") != (dtype_of(tensor) == "string"):
                raise InvalidInputError(
                    f"feature {feature.name!r} ({feature.dtype}) does not fit input"
                    f" {tensor.name!r} ({tensor.datatype})"
                )


def schema_from_json(data: bytes, *, max_bytes: int = DEFAULT_MAX_SCHEMA_JSON_BYTES) -> InputSchema:
    """Parse a user-supplied schema JSON strictly: no NaN/Infinity, no duplicate keys."""
    if len(data) > max_bytes:
        raise TooLargeError(f"input schema JSON exceeds {max_bytes} bytes")

    def no_constants(token: str) -> None:
        raise InvalidInputError(f"input schema JSON may not contain {token}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("input schema JSON repeats a key")
        return dict(pairs)

    try:
        doc = json.loads(data, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError("input schema is not valid JSON") from exc
    return InputSchema.from_dict(doc)


def dtype_of(tensor: TensorSpec) -> str:
    """The schema dtype of an Open Inference Protocol datatype."""
    dtype = _DATATYPE_TO_DTYPE.get(tensor.datatype)
    if dtype is None:
        raise InvalidInputError(f"input {tensor.name!r} has unsupported type {tensor.datatype!r}")
    return dtype


# --- inference ----------------------------------------------------------------------------------


def infer_schema(
    signature: ModelSignature,
    reference_csv: bytes | None,
    *,
    feature_names: Sequence[str] | None = None,
    max_csv_bytes: int = DEFAULT_MAX_CSV_BYTES,
) -> InputSchema:
    """Infer a schema from a signature and an optional reference CSV (see module docstring)."""
    if not signature.inputs:
        raise InvalidInputError("the model declares no inputs")
    table = None if reference_csv is None else _parse_csv(reference_csv, max_csv_bytes)
    if len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:  # noqa: PLR2004
        tensor = signature.inputs[0]
        names = _tabular_names(tensor.shape[1], feature_names, table)
        dtype = dtype_of(tensor)
        features = [_infer_feature(n, dtype, None if table is None else table[n]) for n in names]
        return InputSchema(features=tuple(features), tensor_name=tensor.name)
    if feature_names is not None:
        raise InvalidInputError("feature_names applies only to a model with one 2-D input")
    if table is not None and not {t.name for t in signature.inputs} <= set(table):
        raise InvalidInputError("the reference CSV must have a column for every model input")
    features = [
        _infer_feature(t.name, dtype_of(t), None if table is None else table[t.name])
        for t in signature.inputs
    ]
    return InputSchema(features=tuple(features), tensor_name=None)


def _tabular_names(
    width: int, feature_names: Sequence[str] | None, table: Mapping[str, list[str]] | None
) -> list[str]:
    if width > MAX_FEATURES:
        raise InvalidInputError(f"the model has more than {MAX_FEATURES} features")
    if feature_names is not None:
        names = list(feature_names)
        if width not in {-1, len(names)}:
            raise InvalidInputError(f"the model has {width} features, {len(names)} names given")
        missing = [n for n in names if table is not None and n not in table]
        if missing:
            raise InvalidInputError(f"the reference CSV lacks columns {missing[:10]}")
        return names
    if table is not None:
        if width not in {-1, len(table)}:
            raise InvalidInputError(
                f"the reference CSV has {len(table)} columns, the model expects {width}",
                hint="pass feature_names to pick the model's columns from a wider CSV",
            )
        return list(table)
    if width < 1:
        raise InvalidInputError(
            "the model's feature count is dynamic", hint="give a reference CSV or feature names"
        )
    return [f"f{i}" for i in range(width)]


def _parse_csv(data: bytes, max_bytes: int) -> dict[str, list[str]]:
    """Header -> column values, in header order. Every row must have the header's width."""
    if len(data) > max_bytes:
        raise TooLargeError(f"the reference CSV exceeds {max_bytes} bytes")
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError("the reference CSV is not valid UTF-8 CSV") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise InvalidInputError("the reference CSV is empty; a header row is required")
    header = [_check_name(name.strip(), f"CSV column {i + 1}") for i, name in enumerate(rows[0])]
    if len(set(header)) != len(header) or len(header) > MAX_FEATURES:
        raise InvalidInputError("the reference CSV header has duplicate or too many columns")
    columns: dict[str, list[str]] = {name: [] for name in header}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidInputError(
                f"reference CSV row {line} has {len(row)} fields, not {len(header)}"
            )
        for name, value in zip(header, row, strict=True):
            columns[name].append(value.strip())
    return columns


def _parse_number(value: str, dtype: str, feature: str) -> float:
    pattern = _INT_RE if dtype == "int64" else _FLOAT_RE
    if not pattern.fullmatch(value):
        raise InvalidInputError(f"column {feature!r}: {value[:40]!r} is not a valid {dtype}")
    number = float(int(value)) if dtype == "int64" else float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"column {feature!r}: {value[:40]!r} is out of range")
    return number


def _infer_feature(name: str, dtype: str, values: list[str] | None) -> FeatureSpec:
    if values is None:
        return FeatureSpec(name=name, dtype=dtype)
    present = [v for v in values if v]
    nullable = len(present) != len(values)
    if dtype in NUMERIC_DTYPES:
        numbers = [_parse_number(v, dtype, name) for v in present]
        lo, hi = (min(numbers), max(numbers)) if numbers else (None, None)
        return FeatureSpec(name=name, dtype=dtype, minimum=lo, maximum=hi, nullable=nullable)
    if dtype == "bool":
        bad = next((v for v in present if v.lower() not in _BOOL_WORDS), None)
        if bad is not None:
            raise InvalidInputError(f"column {name!r}: {bad[:40]!r} is not true/false/0/1")
        return FeatureSpec(name=name, dtype=dtype, nullable=nullable)
    distinct = set(present)
    few = 0 < len(distinct) <= INFERRED_CATEGORY_LIMIT and 2 * len(distinct) <= len(present)
    short = all(len(v) <= MAX_CATEGORY_LENGTH for v in distinct)
    categories = tuple(distinct) if few and short else None
    return FeatureSpec(name=name, dtype=dtype, categories=categories, nullable=nullable)
