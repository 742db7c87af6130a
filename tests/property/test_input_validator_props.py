"""InputValidator properties: in-range rows pass, one bad value is found and named, and nothing
but ``InvalidInputError`` ever escapes, whatever arrays are thrown at it."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from strongroom.core.detectors.inputs import InputValidator
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.core.registry.schema import FeatureSpec, InputSchema
from strongroom.errors import InvalidInputError

OUT = (TensorSpec("y", "FP32", (-1, 1)),)
F32_MAX = float(np.finfo(np.float32).max)
_finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@dataclass(frozen=True)
class Table:
    features: tuple[FeatureSpec, ...]
    validator: InputValidator

    def low(self, column: int) -> float:
        bound = self.features[column].minimum
        return -F32_MAX if bound is None else bound

    def high(self, column: int) -> float:
        bound = self.features[column].maximum
        return F32_MAX if bound is None else bound


@st.composite
def tables(draw: st.DrawFn) -> Table:
    features = []
    for i in range(draw(st.integers(1, 8))):
        a, b = sorted((draw(_finite32), draw(_finite32)))
        features.append(
            FeatureSpec(
                f"f{i}",
                "float32",
                minimum=draw(st.sampled_from([a, None])),
                maximum=draw(st.sampled_from([b, None])),
                nullable=draw(st.booleans()),
            )
        )
    signature = ModelSignature((TensorSpec("x", "FP32", (-1, len(features))),), OUT)
    schema = InputSchema(tuple(features), tensor_name="x")
    return Table(tuple(features), InputValidator(schema, signature))


@st.composite
def valid_rows(draw: st.DrawFn, table: Table) -> np.ndarray[Any, Any]:
    batch = draw(st.integers(1, 5))
    values = [
        [
            draw(
                st.floats(table.low(c), table.high(c), width=32)
                | (st.just(float("nan")) if table.features[c].nullable else st.nothing())
            )
            for c in range(len(table.features))
        ]
        for _ in range(batch)
    ]
    return np.array(values, dtype=np.float32)


def _bad_values(feature: FeatureSpec) -> list[float]:
    """Values that must be refused for ``feature``: infinities always, NaN unless nullable,
    the nearest float32 beyond each bound that is set."""
    bad = [float("inf"), float("-inf")]
    if not feature.nullable:
        bad.append(float("nan"))
    with np.errstate(over="ignore"):  # beyond the largest float32 is infinity: bad as well
        if feature.minimum is not None:
            bad.append(float(np.nextafter(np.float32(feature.minimum), np.float32(-np.inf))))
        if feature.maximum is not None:
            bad.append(float(np.nextafter(np.float32(feature.maximum), np.float32(np.inf))))
    return bad


@given(st.data())
def test_in_range_finite_rows_pass(data: st.DataObject) -> None:
    table = data.draw(tables())
    table.validator.validate({"x": data.draw(valid_rows(table))})


@given(st.data())
def test_one_value_pushed_out_is_found_and_named(data: st.DataObject) -> None:
    table = data.draw(tables())
    rows = data.draw(valid_rows(table))
    row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(0, len(table.features) - 1))
    rows[row, column] = data.draw(st.sampled_from(_bad_values(table.features[column])))
    with pytest.raises(InvalidInputError) as caught:
        table.validator.validate({"x": rows})
    name = table.features[column].name
    assert str(caught.value).startswith(f"input 'x', feature '{name}', row {row}: ")


_any_dtype = st.sampled_from(["<f4", "<f8", "<i8", "<i4", "?", "u1", "<f2", "O", "<U3", "S2"])


@st.composite
def any_array(draw: st.DrawFn) -> Any:
    dtype = np.dtype(draw(_any_dtype))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if dtype.kind == "O":
        elements = st.none() | st.text(max_size=4) | st.binary(max_size=4) | st.floats()
        return draw(hnp.arrays(dtype, shape, elements=elements))
    array = draw(hnp.arrays(dtype, shape))
    return draw(st.sampled_from([array, array.tolist(), None, "x"]))


@given(st.data())
def test_nothing_but_invalid_input_escapes(data: st.DataObject) -> None:
    table = data.draw(tables())
    text = FeatureSpec("t", "string", max_length=3, text=True, categories=None)
    strings = InputValidator(
        InputSchema((text,), tensor_name=None),
        ModelSignature((TensorSpec("t", "BYTES", (-1, 2)),), OUT),
    )
    names = st.sampled_from(["x", "t", "y"])
    inputs = data.draw(st.dictionaries(names, any_array(), max_size=3))
    for validator in (table.validator, strings):
        with contextlib.suppress(InvalidInputError):
            validator.validate(inputs)


_NOTE_REFUSAL = re.compile(
    r"input 'note', feature 'note', row \d: (?:longer than 32 characters|not valid UTF-8"
    r"|looks like (?:an SQL|a script|a template) injection|looks like a path traversal"
    r"|contains control characters)"
)


@given(st.lists(st.text(max_size=40) | st.binary(max_size=40), min_size=1, max_size=6))
def test_free_text_checks_raise_only_invalid_input(values: list[Any]) -> None:
    note = FeatureSpec("note", "string", max_length=32, text=True, nullable=True)
    validator = InputValidator(
        InputSchema((note,), tensor_name=None),
        ModelSignature((TensorSpec("note", "BYTES", (-1,)),), OUT),
    )
    array = np.empty(len(values), dtype=object)
    array[:] = values
    try:
        validator.validate({"note": array})
    except InvalidInputError as exc:
        message = str(exc)
    else:
        return
    assert _NOTE_REFUSAL.fullmatch(message), message  # a fixed form: never the payload
