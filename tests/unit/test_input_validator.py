"""InputValidator: each request checked against its version's schema; payloads never echoed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from conftest import N_FEATURES, Harness, TrainedModel
from strongroom.core.detectors.inputs import InputValidator
from strongroom.core.registry.artifact import issue_verified_artifact
from strongroom.core.registry.model import Stage
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.core.registry.schema import FeatureSpec, InputSchema
from strongroom.errors import IntegrityError, InvalidInputError
from strongroom.services.inference import ModelHost, ServedModel

OUT = (TensorSpec("probabilities", "FP32", (-1, 2)),)


def tabular(*features: FeatureSpec, datatype: str = "FP32", width: int = -1) -> InputValidator:
    signature = ModelSignature((TensorSpec("input", datatype, (-1, width)),), OUT)
    return InputValidator(InputSchema(features, tensor_name="input"), signature)


def per_tensor(*pairs: tuple[FeatureSpec, TensorSpec]) -> InputValidator:
    signature = ModelSignature(tuple(t for _, t in pairs), OUT)
    return InputValidator(InputSchema(tuple(f for f, _ in pairs), tensor_name=None), signature)


def refusal(validator: InputValidator, inputs: dict[str, Any]) -> str:
    with pytest.raises(InvalidInputError) as caught:
        validator.validate(inputs)
    assert caught.value.code == "input.invalid"
    return str(caught.value)


def rows(*values: list[float], dtype: str = "<f4") -> dict[str, Any]:
    return {"input": np.array(values, dtype=dtype)}


AMOUNT = FeatureSpec("amount", "float32", minimum=0.0, maximum=1e6)
AGE = FeatureSpec("age", "float32", minimum=18.0, maximum=120.0, nullable=True)
SCORE = FeatureSpec("score", "float32")
NUMBERS = tabular(AMOUNT, AGE, SCORE)


# --- numbers ------------------------------------------------------------------------------------


def test_in_range_rows_pass_with_inclusive_edges() -> None:
    NUMBERS.validate(rows([0.0, 18.0, -3.0e38], [1e6, 120.0, 3.0e38], [5.5, 40.0, 0.0]))


def test_negative_zero_meets_a_minimum_of_zero() -> None:
    NUMBERS.validate(rows([-0.0, 18.0, 0.0]))


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ([-0.5, 30.0, 0.0], "feature 'amount', row 0: below the minimum 0"),
        ([1e6 + 1024, 30.0, 0.0], "feature 'amount', row 0: above the maximum 1000000"),
        ([5.0, 17.5, 0.0], "feature 'age', row 0: below the minimum 18"),
        ([5.0, 121.0, 0.0], "feature 'age', row 0: above the maximum 120"),
    ],
)
def test_out_of_range_values_are_refused_naming_input_feature_row_and_bound(
    row: list[float], reason: str
) -> None:
    message = refusal(NUMBERS, rows(row))
    assert message == f"input 'input', {reason}"


def test_nan_passes_only_where_the_feature_is_nullable() -> None:
    NUMBERS.validate(rows([1.0, np.nan, 0.0]))
    assert refusal(NUMBERS, rows([np.nan, 30.0, 0.0])).endswith(
        "feature 'amount', row 0: NaN is not allowed"
    )
    assert refusal(NUMBERS, rows([1.0, 30.0, np.nan])).endswith(
        "feature 'score', row 0: NaN is not allowed"
    )


@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, 1, 2])
def test_infinities_are_always_refused(value: float, column: int) -> None:
    """Even for the unbounded ``score`` and the nullable ``age``."""
    row = [1.0, 30.0, 0.0]
    row[column] = value
    assert refusal(NUMBERS, rows(row)).endswith("infinity is not allowed")


def test_a_batch_reports_its_first_bad_row() -> None:
    message = refusal(
        NUMBERS,
        rows([1.0, 30.0, 0.0], [2.0, 30.0, 0.0], [3.0, 30.0, np.inf], [-1.0, 30.0, 0.0]),
    )
    assert message == "input 'input', feature 'score', row 2: infinity is not allowed"


def test_within_a_row_the_first_bad_column_is_named() -> None:
    message = refusal(NUMBERS, rows([1.0, 30.0, 0.0], [-1.0, 500.0, np.nan]))
    assert message == "input 'input', feature 'amount', row 1: below the minimum 0"


def test_the_offending_value_is_never_in_the_message() -> None:
    message = refusal(NUMBERS, rows([1.0, 30.0, 0.0], [987654.3125 * 4, 30.0, 0.0]))
    assert "3950617" not in message and "row 1" in message


def test_bounds_are_compared_at_the_tensor_precision() -> None:
    """0.1 sent as FP32 is slightly above 0.1 as a double; it still meets ``max: 0.1``."""
    validator = tabular(FeatureSpec("p", "float32", minimum=0.1, maximum=0.1))
    validator.validate(rows([0.1]))


def test_fp64_tensors_and_huge_bounds() -> None:
    validator = tabular(FeatureSpec("x", "float64", minimum=-1e300, maximum=1e300), datatype="FP64")
    validator.validate(rows([1e299], dtype="<f8"))
    assert refusal(validator, rows([1e301], dtype="<f8")).endswith("above the maximum 1e+300")


def test_a_float64_bound_beyond_float32_does_not_break_an_fp32_tensor() -> None:
    validator = tabular(FeatureSpec("x", "float64", minimum=-1e300, maximum=1e300))
    validator.validate(rows([3.0e38], [-3.0e38]))
    assert refusal(validator, rows([np.inf])).endswith("infinity is not allowed")


def test_integer_ranges_round_inward_and_apply_to_int32_and_int64() -> None:
    for datatype, dtype in (("INT64", "<i8"), ("INT32", "<i4")):
        validator = tabular(FeatureSpec("n", "int64", minimum=0.5, maximum=10.5), datatype=datatype)
        validator.validate(rows([1], [10], dtype=dtype))
        assert refusal(validator, rows([0], dtype=dtype)).endswith("below the minimum 0.5")
        assert refusal(validator, rows([11], dtype=dtype)).endswith("above the maximum 10.5")


def test_int64_extremes_pass_an_unbounded_feature() -> None:
    validator = tabular(FeatureSpec("n", "int64"), datatype="INT64")
    info = np.iinfo(np.int64)
    validator.validate(rows([info.min], [info.max], dtype="<i8"))


def test_booleans_pass_without_bounds() -> None:
    validator = tabular(FeatureSpec("a", "bool"), FeatureSpec("b", "bool"), datatype="BOOL")
    validator.validate({"input": np.array([[True, False]])})


# --- structure ------------------------------------------------------------------------------------


def test_wrong_dtype_shape_and_names_are_refused() -> None:
    assert "datatype" in refusal(NUMBERS, rows([1.0, 30.0, 0.0], dtype="<f8"))
    assert "3 columns" in refusal(NUMBERS, rows([1.0, 30.0]))
    assert "3 columns" in refusal(NUMBERS, {"input": np.zeros(3, dtype=np.float32)})
    assert "missing" in refusal(NUMBERS, {"other": np.zeros((1, 3), dtype=np.float32)})
    two = {"input": np.zeros((1, 3), np.float32), "x": np.zeros((1, 3), np.float32)}
    assert "exactly these inputs: input" in refusal(NUMBERS, two)
    assert "datatype" in refusal(NUMBERS, {"input": [[1.0, 30.0, 0.0]]})


def test_a_schema_that_does_not_fit_the_signature_fails_at_compile_time() -> None:
    with pytest.raises(InvalidInputError, match="expects 4 features, the schema lists 3"):
        tabular(AMOUNT, AGE, SCORE, width=4)
    signature = ModelSignature((TensorSpec("a", "FP32", (-1,)),), OUT)
    with pytest.raises(InvalidInputError, match="must be the model's inputs"):
        InputValidator(InputSchema((FeatureSpec("b", "float32"),), None), signature)
    with pytest.raises(InvalidInputError, match="does not fit input"):
        InputValidator(InputSchema((FeatureSpec("a", "string"),), None), signature)


def test_an_unsupported_datatype_is_refused_not_passed() -> None:
    validator = per_tensor((FeatureSpec("h", "float32"), TensorSpec("h", "BF16", (-1,))))
    assert "cannot be validated" in refusal(validator, {"h": np.zeros(2, np.float32)})


# --- per-tensor layout ----------------------------------------------------------------------------


PER_TENSOR = per_tensor(
    (
        FeatureSpec("amount", "float64", minimum=0.0, maximum=100.0),
        TensorSpec("amount", "FP64", (-1, 4)),
    ),
    (FeatureSpec("count", "int64", maximum=5.0), TensorSpec("count", "INT64", (-1,))),
    (FeatureSpec("gap", "float32", nullable=True), TensorSpec("gap", "FP32", (-1, 2, 2))),
)


def _per_tensor_inputs(batch: int = 2) -> dict[str, Any]:
    return {
        "amount": np.full((batch, 4), 50.0),
        "count": np.arange(batch, dtype=np.int64),
        "gap": np.zeros((batch, 2, 2), np.float32),
    }


def test_per_tensor_bounds_apply_to_every_element() -> None:
    inputs = _per_tensor_inputs(3)
    inputs["gap"][1, 1, 0] = np.nan  # nullable
    PER_TENSOR.validate(inputs)
    inputs["amount"][2, 3] = 100.5
    assert refusal(PER_TENSOR, inputs) == (
        "input 'amount', feature 'amount', row 2: above the maximum 100"
    )


def test_per_tensor_reports_the_batch_row_of_a_deep_element() -> None:
    inputs = _per_tensor_inputs(3)
    inputs["gap"][2, 0, 1] = -np.inf
    assert refusal(PER_TENSOR, inputs) == (
        "input 'gap', feature 'gap', row 2: infinity is not allowed"
    )
    inputs = _per_tensor_inputs(3)
    inputs["count"][1] = 6
    assert refusal(PER_TENSOR, inputs).endswith("'count', row 1: above the maximum 5")


def test_per_tensor_needs_every_input() -> None:
    inputs = _per_tensor_inputs()
    del inputs["count"]
    assert "amount, count, gap" in refusal(PER_TENSOR, inputs)


# --- strings --------------------------------------------------------------------------------------

COLOUR = FeatureSpec("colour", "string", categories=("blue", "red"), nullable=True)
CODE = FeatureSpec("code", "string", max_length=8)
NOTE = FeatureSpec("note", "string", max_length=256, text=True)
STRINGS = tabular(COLOUR, CODE, NOTE, datatype="BYTES")


def strings(*values: list[Any]) -> dict[str, Any]:
    array = np.empty((len(values), len(values[0])), dtype=object)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            array[i, j] = value
    return {"input": array}


def test_valid_strings_pass_as_str_or_utf8_bytes() -> None:
    STRINGS.validate(
        strings(["red", "A1", "O'Brien paid for rock & roll"], [b"blue", b"12345678", b"1/2"])
    )


def test_categories_and_nullable_empty_string() -> None:
    STRINGS.validate(strings(["", "x", "fine"]))  # colour is nullable: empty means missing
    message = refusal(STRINGS, strings(["red", "x", "ok"], ["green", "x", "ok"]))
    assert message == "input 'input', feature 'colour', row 1: not one of the feature's categories"
    assert "green" not in message


def test_an_empty_string_is_a_value_for_a_non_nullable_feature() -> None:
    validator = tabular(FeatureSpec("c", "string", categories=("a",)), datatype="BYTES")
    assert refusal(validator, strings([""])).endswith("not one of the feature's categories")


def test_max_length_counts_characters() -> None:
    STRINGS.validate(strings(["red", "\u00e9" * 8, "ok"]))  # 8 characters, 16 bytes
    message = refusal(STRINGS, strings(["red", "ABCDEFGHI", "ok"]))
    assert message.endswith("feature 'code', row 0: longer than 8 characters")
    assert "ABCDEFGHI" not in message


def test_strings_without_max_length_are_capped_at_65536() -> None:
    validator = tabular(FeatureSpec("s", "string"), datatype="BYTES")
    validator.validate(strings(["x" * 65536]))
    assert refusal(validator, strings(["x" * 65537])).endswith("longer than 65536 characters")


def test_invalid_utf8_is_refused_without_echo() -> None:
    message = refusal(STRINGS, strings(["red", b"\xff\xfeAB", "ok"]))
    assert message.endswith("feature 'code', row 0: not valid UTF-8")
    assert "xff" not in message and "AB" not in message
    assert refusal(STRINGS, strings(["red", "\ud800", "ok"])).endswith("not valid UTF-8")


def test_null_and_non_string_elements() -> None:
    STRINGS.validate(strings([None, "x", "ok"]))  # nullable colour
    assert refusal(STRINGS, strings(["red", None, "ok"])).endswith("null is not allowed")
    assert refusal(STRINGS, strings(["red", 7, "ok"])).endswith("not a string")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("<script>alert('pwned-1')</script>", "looks like a script injection"),
        ("x' UNION SELECT secret_col FROM t--", "looks like an SQL injection"),
        ("{{ config.secret_key }}", "looks like a template injection"),
        ("../../etc/passwd", "looks like a path traversal"),
        ("ring\x07the bell", "contains control characters"),
        ("%3Cscript%3Ealert(1)", "looks like a script injection"),
    ],
)
def test_free_text_is_screened_and_the_payload_is_not_echoed(payload: str, reason: str) -> None:
    message = refusal(STRINGS, strings(["red", "x", "fine"], ["red", "x", payload]))
    assert message == f"input 'input', feature 'note', row 1: {reason}"
    assert payload not in message
    for fragment in ("script", "UNION", "config", "passwd", "bell", "%3C"):
        if fragment in payload:
            assert fragment not in message.removesuffix(reason)


def test_only_free_text_features_get_the_injection_check() -> None:
    validator = tabular(FeatureSpec("s", "string"), datatype="BYTES")
    validator.validate(strings(["<script>"]))  # not marked text: only length applies


def test_per_tensor_string_input_checks_every_element() -> None:
    validator = per_tensor((NOTE, TensorSpec("note", "BYTES", (-1, 2))))
    array = np.array([["a", "b"], ["c", "{{7*7}}"]], dtype=object)
    assert refusal(validator, {"note": array}) == (
        "input 'note', feature 'note', row 1: looks like a template injection"
    )
    validator.validate({"note": np.array([["fine", "also fine"]], dtype=object)})


def test_numpy_unicode_arrays_are_accepted() -> None:
    validator = tabular(COLOUR, datatype="BYTES")
    validator.validate({"input": np.array([["red"], ["blue"]])})
    assert "datatype" in refusal(validator, {"input": np.zeros((1, 1), np.float32)})


# --- wiring: the version's schema reaches the served model ---------------------------------


def _served(harness: Harness, model: bytes, schema: dict[str, Any] | None) -> ServedModel:
    raw = None if schema is None else json.dumps(schema).encode()
    harness.publish("fraud", {"model.onnx": model}, input_schema_json=raw)
    harness.lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="t", actor="test")
    return ModelHost(harness.registry, lambda: datetime.now(UTC)).load_production("fraud")


def test_a_served_version_checks_inputs_against_its_signed_schema(
    fake_harness: Harness, trained_model: TrainedModel
) -> None:
    features = [
        {"name": f"f{i}", "dtype": "float32", "min": -1, "max": 1} for i in range(N_FEATURES)
    ]
    features[1]["nullable"] = True
    served = _served(
        fake_harness, trained_model.onnx, {"tensor_name": "input", "features": features}
    )
    good = np.zeros((2, 6), np.float32)
    good[1, 1] = np.nan  # nullable
    served.check_inputs({"input": good})
    bad = np.zeros((2, 6), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"feature 'f0', row 1: NaN is not allowed"):
        served.check_inputs({"input": bad})
    bad[1, 0] = 1.5
    with pytest.raises(InvalidInputError, match=r"feature 'f0', row 1: above the maximum 1"):
        served.check_inputs({"input": bad})


def test_an_inferred_schema_without_ranges_still_refuses_nan_and_infinity(
    fake_harness: Harness, trained_model: TrainedModel
) -> None:
    """Versions pushed without a schema (inferred from the signature) keep loading and serving;
    their features have no bounds, but non-finite numbers are refused."""
    served = _served(fake_harness, trained_model.onnx, None)
    served.check_inputs({"input": np.full((1, 6), 1e30, np.float32)})
    with pytest.raises(InvalidInputError, match="row 0: infinity is not allowed"):
        served.check_inputs({"input": np.full((1, 6), np.inf, np.float32)})


def test_a_schema_that_no_longer_fits_fails_the_load_as_an_integrity_error(
    fake_harness: Harness, trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake_harness.registry.load_version
    misfit = InputSchema((FeatureSpec("only", "float32"),), tensor_name="input")

    def drifted(name: str, version: int | None = None) -> Any:
        return replace(real(name, version), input_schema=misfit)

    monkeypatch.setattr(fake_harness.registry, "load_version", drifted)
    with pytest.raises(IntegrityError) as caught:
        _served(fake_harness, trained_model.onnx, None)
    assert isinstance(caught.value.__cause__, InvalidInputError)


def test_a_manifest_schema_that_does_not_parse_fails_the_load_as_an_integrity_error(
    fake_harness: Harness, trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake_harness.registry.open_verified

    def odd_schema(name: str, version: int | None = None) -> Any:
        artifact = real(name, version)
        fields = {f: getattr(artifact, f) for f in artifact.__slots__}
        return issue_verified_artifact(**{**fields, "input_schema": {"features": "odd"}})

    monkeypatch.setattr(fake_harness.registry, "open_verified", odd_schema)
    with pytest.raises(IntegrityError) as caught:
        _served(fake_harness, trained_model.onnx, None)
    assert isinstance(caught.value.__cause__, InvalidInputError)
