"""InputSchema: inference from a signature and a CSV, canonical form, strict parsing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.core.registry.schema import (
    MAX_FEATURES,
    FeatureSpec,
    InputSchema,
    infer_schema,
    schema_from_json,
)
from strongroom.errors import InvalidInputError, TooLargeError

OUT = (TensorSpec("probabilities", "FP32", (-1, 2)),)


def tabular(width: int = 3, datatype: str = "FP32", name: str = "X") -> ModelSignature:
    return ModelSignature(inputs=(TensorSpec(name, datatype, (-1, width)),), outputs=OUT)


# --- inference --------------------------------------------------------------------------------


def test_tabular_without_csv_names_features_f0_to_fn() -> None:
    schema = infer_schema(tabular(3), None)
    assert schema.tensor_name == "X"
    assert [f.name for f in schema.features] == ["f0", "f1", "f2"]
    assert {f.dtype for f in schema.features} == {"float32"}
    assert all(f.minimum is None and not f.nullable for f in schema.features)


def test_csv_gives_names_ranges_and_nullability() -> None:
    csv_data = b"amount,age,score\n10.5,30,-1e-3\n2,41,\n-7.25,19,0.5\n"
    schema = infer_schema(tabular(3, "FP64"), csv_data)
    amount, age, score = schema.features
    assert (amount.name, amount.minimum, amount.maximum) == ("amount", -7.25, 10.5)
    assert (age.minimum, age.maximum, age.dtype) == (19.0, 41.0, "float64")
    assert (score.minimum, score.maximum, score.nullable) == (-1e-3, 0.5, True)
    assert not amount.nullable


def test_csv_with_bom_crlf_and_quoted_header() -> None:
    csv_data = '\ufeff"a b",c\r\n1,2\r\n3,4\r\n'.encode()
    schema = infer_schema(tabular(2), csv_data)
    assert [f.name for f in schema.features] == ["a b", "c"]
    assert schema.features[0].maximum == 3.0


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-Infinity", "1_000", "0x10", "1e999", "\u0661"]
)
def test_numeric_parsing_is_strict(value: str) -> None:
    with pytest.raises(InvalidInputError, match="column 'a'"):
        infer_schema(tabular(2), f"a,b\n1,2\n{value},3\n".encode())


def test_int64_columns_parse_integers_only() -> None:
    schema = infer_schema(tabular(1, "INT64"), b"n\n-3\n+12\n")
    assert (schema.features[0].minimum, schema.features[0].maximum) == (-3.0, 12.0)
    with pytest.raises(InvalidInputError, match="int64"):
        infer_schema(tabular(1, "INT64"), b"n\n1.5\n")
    with pytest.raises(InvalidInputError, match="int64 range"):
        infer_schema(tabular(1, "INT64"), b"n\n9999999999999999999\n")


def test_float32_range_is_enforced() -> None:
    with pytest.raises(InvalidInputError, match="float32"):
        infer_schema(tabular(1, "FP32"), b"x\n1e300\n")
    assert infer_schema(tabular(1, "FP64"), b"x\n1e300\n").features[0].maximum == 1e300


def test_bool_columns() -> None:
    schema = infer_schema(tabular(1, "BOOL"), b"flag\ntrue\nFALSE\n0\n1\n")
    assert schema.features[0].dtype == "bool"
    with pytest.raises(InvalidInputError, match="flag"):
        infer_schema(tabular(1, "BOOL"), b"flag\nyes\n")


def test_string_columns_with_few_values_become_categories() -> None:
    rows = "\n".join(["colour,note", *(f"{c},note {i}" for i, c in enumerate("rgbrgbrgbb"))])
    schema = infer_schema(tabular(2, "BYTES"), rows.encode())
    colour, note = schema.features
    assert colour.categories == ("b", "g", "r")
    assert note.categories is None  # all values unique: free text, not a category
    assert colour.dtype == note.dtype == "string"


def test_non_numeric_value_in_a_numeric_tensor_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"column 'colour'.*'red'"):
        infer_schema(tabular(2), b"x,colour\n1,red\n")


def test_csv_width_must_match_the_model() -> None:
    with pytest.raises(InvalidInputError, match="3 columns") as info:
        infer_schema(tabular(2), b"a,b,label\n1,2,0\n")
    assert "feature_names" in (info.value.hint or "")


def test_feature_names_pick_columns_from_a_wider_csv() -> None:
    schema = infer_schema(tabular(2), b"label,b,a\n0,5,1\n1,6,2\n", feature_names=["a", "b"])
    assert [(f.name, f.maximum) for f in schema.features] == [("a", 2.0), ("b", 6.0)]
    with pytest.raises(InvalidInputError, match="lacks"):
        infer_schema(tabular(2), b"a,x\n1,2\n", feature_names=["a", "b"])
    with pytest.raises(InvalidInputError, match="2 features"):
        infer_schema(tabular(2), None, feature_names=["a"])


def test_dynamic_width_needs_names() -> None:
    with pytest.raises(InvalidInputError, match="dynamic"):
        infer_schema(tabular(-1), None)
    assert len(infer_schema(tabular(-1), b"a,b,c,d\n1,2,3,4\n").features) == 4
    assert len(infer_schema(tabular(-1), None, feature_names=["p", "q"]).features) == 2


def test_more_than_max_features_is_refused_without_building_them() -> None:
    with pytest.raises(InvalidInputError, match="more than"):
        infer_schema(tabular(10**9), None)


@pytest.mark.parametrize(
    ("csv_data", "match"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"a,a\n1,2\n", "duplicate"),
        (b"a,\n1,2\n", "CSV column 2"),
        (b"a,b\n1,2\n3\n", "row 3"),
        (b"a,b\n\xff\xfe,1\n", "UTF-8"),
        (b'a,b\n"unterminated,1\n', "row|UTF-8"),
    ],
)
def test_malformed_csv(csv_data: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        infer_schema(tabular(2), csv_data)


def test_csv_size_cap() -> None:
    data = b"a,b\n" + b"1,2\n" * 100
    with pytest.raises(TooLargeError):
        infer_schema(tabular(2), data, max_csv_bytes=len(data) - 1)
    assert infer_schema(tabular(2), data, max_csv_bytes=len(data)).features[0].maximum == 1.0


def test_header_only_csv_gives_names_without_bounds() -> None:
    schema = infer_schema(tabular(2), b"a,b\n")
    assert [(f.name, f.minimum) for f in schema.features] == [("a", None), ("b", None)]


def test_multi_input_graph_gets_one_feature_per_tensor() -> None:
    signature = ModelSignature(
        inputs=(
            TensorSpec("age", "INT64", (-1, 1)),
            TensorSpec("city", "BYTES", (-1, 1)),
            TensorSpec("income", "FP64", (-1, 1)),
        ),
        outputs=OUT,
    )
    schema = infer_schema(signature, b"income,age,city\n10,30,x\n20,40,x\n")
    assert schema.tensor_name is None
    assert [(f.name, f.dtype) for f in schema.features] == [
        ("age", "int64"),
        ("city", "string"),
        ("income", "float64"),
    ]
    assert schema.features[2].maximum == 20.0
    assert schema.features[1].categories == ("x",)
    with pytest.raises(InvalidInputError, match="every model input"):
        infer_schema(signature, b"income,age\n1,2\n")
    with pytest.raises(InvalidInputError, match="one 2-D input"):
        infer_schema(signature, None, feature_names=["a"])


def test_single_non_tabular_input_is_per_tensor() -> None:
    image = ModelSignature(inputs=(TensorSpec("pixels", "UINT8", (-1, 3, 8, 8)),), outputs=OUT)
    schema = infer_schema(image, None)
    assert (schema.tensor_name, schema.features[0].name, schema.features[0].dtype) == (
        None,
        "pixels",
        "int64",
    )


def test_no_inputs_or_unknown_datatype() -> None:
    with pytest.raises(InvalidInputError, match="no inputs"):
        infer_schema(ModelSignature(inputs=(), outputs=OUT), None)
    with pytest.raises(InvalidInputError, match="unsupported type"):
        infer_schema(tabular(2, "COMPLEX64"), None)


# --- canonical form ---------------------------------------------------------------------------


def _schema() -> InputSchema:
    return InputSchema(
        features=(
            FeatureSpec("amount", "float32", minimum=-0.0, maximum=10),
            FeatureSpec("colour", "string", categories=("red", "blue"), nullable=True),
            FeatureSpec("flag", "bool"),
        ),
        tensor_name="X",
    )


def test_canonical_dict_form() -> None:
    data = _schema().to_dict()
    assert list(data) == ["version", "tensor_name", "features"]
    assert data["version"] == 1
    amount, colour, flag = data["features"]
    assert list(amount) == ["name", "dtype", "min", "max", "nullable"]
    assert amount["min"] == 0.0
    assert math.copysign(1.0, amount["min"]) == 1.0  # -0.0 normalised away
    assert isinstance(amount["max"], float)
    assert colour["categories"] == ["blue", "red"]  # sorted
    assert flag == {"name": "flag", "dtype": "bool", "nullable": False}


def test_round_trip_through_json() -> None:
    schema = _schema()
    text = json.dumps(schema.to_dict())
    assert schema_from_json(text.encode()) == schema
    assert InputSchema.from_dict(json.loads(text)).to_dict() == schema.to_dict()


def test_version_and_optional_keys_may_be_omitted_or_null() -> None:
    schema = InputSchema.from_dict(
        {"features": [{"name": "a", "dtype": "float64", "min": None, "categories": None}]}
    )
    assert schema.tensor_name is None
    assert schema.features[0].minimum is None


def _with_feature(**changes: Any) -> dict[str, Any]:
    feature: dict[str, Any] = {"name": "a", "dtype": "float64", "min": 0.0, "max": 1.0}
    feature.update(changes)
    return {"version": 1, "tensor_name": "X", "features": [feature]}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"version": 1, "features": [], "extra": 1}, "unknown keys"),
        (_with_feature(colour="red"), "unknown keys"),
        ({"features": [{"dtype": "float64"}]}, "required"),
        (_with_feature(dtype="float16"), "dtype"),
        (_with_feature(min=math.nan), "finite"),
        (_with_feature(max=math.inf), "finite"),
        (_with_feature(min=2.0), "greater than max"),
        (_with_feature(min=True), "numbers"),
        (_with_feature(min="0"), "numbers"),
        (_with_feature(max=10**400), "finite"),
        (_with_feature(dtype="float32", max=1e39), "float32"),
        (_with_feature(dtype="int64", max=2.0**64), "int64"),
        (_with_feature(dtype="string"), "numeric dtype"),
        (_with_feature(dtype="bool"), "numeric dtype"),
        (_with_feature(categories=["a"]), "categories need"),
        (_with_feature(dtype="string", min=None, max=None, categories=["a", "a"]), "unique"),
        (_with_feature(dtype="string", min=None, max=None, categories=[]), "categories"),
        (_with_feature(dtype="string", min=None, max=None, categories="ab"), "list of strings"),
        (_with_feature(dtype="string", min=None, max=None, categories=[1]), "strings"),
        (_with_feature(nullable="yes"), "nullable"),
        (_with_feature(name=""), "1 to 256"),
        (_with_feature(name=" a"), "leading or trailing"),
        (_with_feature(name="a\nb"), "printable"),
        (_with_feature(name="x" * 300), "1 to 256"),
        (_with_feature(name=7), "string"),
        ({"version": 2, "features": [{"name": "a", "dtype": "bool"}]}, "version"),
        ({"version": True, "features": [{"name": "a", "dtype": "bool"}]}, "version"),
        ({"features": "a,b"}, "must be a list"),
        ({"features": []}, "1 to"),
        ({"features": [1]}, "object"),
        ({"tensor_name": "", "features": [{"name": "a", "dtype": "bool"}]}, "tensor_name"),
        (
            {"features": [{"name": "a", "dtype": "bool"}, {"name": "a", "dtype": "int64"}]},
            "used twice",
        ),
        (
            {"features": [{"name": f"f{i}", "dtype": "bool"} for i in range(MAX_FEATURES + 1)]},
            "1 to",
        ),
    ],
)
def test_from_dict_is_strict(data: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        InputSchema.from_dict(data)


def test_from_dict_refuses_non_mappings() -> None:
    with pytest.raises(InvalidInputError, match="object"):
        InputSchema.from_dict([])  # type: ignore[arg-type]


def test_max_features_is_allowed() -> None:
    features = [{"name": f"f{i}", "dtype": "float32"} for i in range(MAX_FEATURES)]
    assert len(InputSchema.from_dict({"features": features}).features) == MAX_FEATURES


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b'{"features": [{"name": "a", "dtype": "float64", "min": NaN}]}', "NaN"),
        (b'{"features": [{"name": "a", "dtype": "float64", "max": Infinity}]}', "Infinity"),
        (b'{"features": [], "features": []}', "repeats"),
        (b"{", "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
    ],
)
def test_schema_json_is_strict(text: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        schema_from_json(text)


def test_schema_json_size_cap() -> None:
    with pytest.raises(TooLargeError):
        schema_from_json(b" " * 101, max_bytes=100)


# --- schema vs signature ----------------------------------------------------------------------


def test_check_signature_accepts_matching_schemas() -> None:
    infer_schema(tabular(3), None).check_signature(tabular(3))
    InputSchema((FeatureSpec("a", "int64"), FeatureSpec("b", "float32")), "X").check_signature(
        tabular(-1)
    )
    # per-tensor layout: one feature covering the whole 2-D tensor, bounds element-wise
    InputSchema((FeatureSpec("X", "float32", maximum=1.0),), None).check_signature(tabular(2))


@pytest.mark.parametrize(
    "schema",
    [
        InputSchema((FeatureSpec("a", "float32"),), "X"),  # wrong width
        InputSchema((FeatureSpec("a", "float32"), FeatureSpec("b", "string")), "X"),
        InputSchema((FeatureSpec("a", "float32"), FeatureSpec("b", "float32")), "Y"),
        InputSchema((FeatureSpec("Z", "float32"),), None),
    ],
)
def test_check_signature_refuses_mismatches(schema: InputSchema) -> None:
    with pytest.raises(InvalidInputError):
        schema.check_signature(tabular(2))


# --- properties -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_feature = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c"]), "dtype": st.sampled_from(["float64", "string"])},
    optional={
        "min": st.floats() | st.integers(),
        "max": st.floats() | st.integers(),
        "categories": st.lists(st.text(max_size=3), max_size=3),
        "nullable": st.booleans(),
        "odd": _json,
    },
)


@given(
    st.one_of(
        _json,
        st.fixed_dictionaries({"features": st.lists(_feature, max_size=3)}),
        st.fixed_dictionaries(
            {"features": st.lists(_feature, max_size=3)}, optional={"tensor_name": _json}
        ),
    )
)
def test_from_dict_either_refuses_cleanly_or_round_trips(data: Any) -> None:
    try:
        schema = InputSchema.from_dict(data)
    except InvalidInputError:
        return
    assert InputSchema.from_dict(schema.to_dict()) == schema
    assert json.loads(json.dumps(schema.to_dict(), allow_nan=False)) == schema.to_dict()


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_infer_schema_on_random_csv_raises_only_invalid_input(data: bytes) -> None:
    for datatype in ("FP64", "BYTES", "INT64", "BOOL"):
        try:
            schema = infer_schema(tabular(-1, datatype), data)
        except InvalidInputError:
            continue
        assert InputSchema.from_dict(schema.to_dict()) == schema


def test_canonical_json_golden() -> None:
    """The exact canonical bytes (compact JSON) of a fixed schema; a change here changes every
    manifest digest, so it must be deliberate and come with a schema version bump."""
    text = json.dumps(_schema().to_dict(), separators=(",", ":"), allow_nan=False)
    assert text == (
        '{"version":1,"tensor_name":"X","features":['
        '{"name":"amount","dtype":"float32","min":0.0,"max":10.0,"nullable":false},'
        '{"name":"colour","dtype":"string","categories":["blue","red"],"nullable":true},'
        '{"name":"flag","dtype":"bool","nullable":false}]}'
    )


# --- max_length and text (string features) -----------------------------------------------------


def test_max_length_and_text_round_trip_and_are_emitted_only_when_set() -> None:
    note = FeatureSpec(name="note", dtype="string", max_length=256, text=True, nullable=True)
    assert note.to_dict() == {
        "name": "note",
        "dtype": "string",
        "max_length": 256,
        "text": True,
        "nullable": True,
    }
    plain = FeatureSpec(name="code", dtype="string", categories=("a", "b"))
    assert "max_length" not in plain.to_dict() and "text" not in plain.to_dict()
    schema = InputSchema(features=(note, plain), tensor_name=None)
    assert InputSchema.from_dict(schema.to_dict()) == schema


def test_text_false_is_accepted_and_left_out_of_the_canonical_form() -> None:
    data = {"features": [{"name": "s", "dtype": "string", "text": False}]}
    feature = InputSchema.from_dict(data).features[0]
    assert feature.text is False and "text" not in feature.to_dict()


def test_schema_json_with_the_new_keys_parses() -> None:
    document = {
        "tensor_name": None,
        "features": [{"name": "memo", "dtype": "string", "max_length": 1, "text": True}],
    }
    feature = schema_from_json(json.dumps(document).encode()).features[0]
    assert (feature.max_length, feature.text) == (1, True)


@pytest.mark.parametrize("value", [0, -1, 65537, True, 1.5, "10", [10]])
def test_max_length_must_be_an_integer_from_1_to_65536(value: Any) -> None:
    with pytest.raises(InvalidInputError, match="feature 's': max_length"):
        FeatureSpec.from_dict({"name": "s", "dtype": "string", "max_length": value}, 0)


def test_max_length_limits_are_inclusive() -> None:
    for value in (1, 65536):
        assert FeatureSpec(name="s", dtype="string", max_length=value).max_length == value


@pytest.mark.parametrize("value", [1, 0, "true", None, [True]])
def test_text_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(InvalidInputError, match="feature 's': text"):
        FeatureSpec.from_dict({"name": "s", "dtype": "string", "text": value}, 0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
@pytest.mark.parametrize("key", [{"max_length": 8}, {"text": True}])
def test_max_length_and_text_need_a_string_feature(dtype: str, key: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="need dtype 'string'"):
        FeatureSpec.from_dict({"name": "s", "dtype": dtype, **key}, 0)


def test_max_length_shorter_than_a_category_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="longer than max_length"):
        FeatureSpec(name="s", dtype="string", categories=("abc",), max_length=2)


def test_unknown_feature_keys_are_still_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown keys"):
        FeatureSpec.from_dict({"name": "s", "dtype": "string", "maxlength": 3}, 0)


def test_the_new_keys_leave_existing_canonical_bytes_unchanged() -> None:
    """A schema written before ``max_length``/``text`` existed parses and re-serialises to
    the same bytes, so the digests of manifests already signed do not move."""
    before = (
        '{"version":1,"tensor_name":"X","features":['
        '{"name":"amount","dtype":"float32","min":0.0,"max":10.0,"nullable":false},'
        '{"name":"colour","dtype":"string","categories":["blue","red"],"nullable":true}]}'
    )
    again = InputSchema.from_dict(json.loads(before)).to_dict()
    assert json.dumps(again, separators=(",", ":"), allow_nan=False) == before
