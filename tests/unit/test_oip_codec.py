"""Open Inference Protocol v2 bodies: strict decoding, JSON and binary tensors, responses."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.entrypoints.http import oip
from strongroom.errors import InvalidInputError

FP32_MAX = float(np.finfo(np.float32).max)
SIG = ModelSignature(
    inputs=(TensorSpec("x", "FP32", (-1, 3)),),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("p", "FP32", (-1, 2))),
)


def _body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def _decode(body: bytes, header: str | None = None, sig: ModelSignature = SIG) -> oip.InferRequest:
    return oip.decode_infer_request(body, header, sig, max_rows=4)


def _x(data: Any, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": shape or [1, 3], "data": data, **extra}


def test_flat_and_nested_data_decode_to_the_same_array() -> None:
    flat = _decode(_body([_x([1, 2.5, 3], [1, 3])]))
    nested = _decode(_body([_x([[1, 2.5, 3]], [1, 3])]))
    assert flat.rows == nested.rows == 1
    np.testing.assert_array_equal(flat.inputs["x"], nested.inputs["x"])
    assert flat.inputs["x"].dtype == np.float32
    assert flat.inputs["x"].shape == (1, 3)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "valid JSON"),
        (b"[]", "JSON object"),
        (orjson.dumps({"inputs": [], "extra": 1}), "unknown member"),
        (_body([]), "non-empty"),
        (_body([_x([1, 2, 3], nonsense=True)]), "unknown member"),
        (_body([{**_x([1, 2, 3]), "name": "y"}]), "name must be one of"),
        (_body([{**_x([1, 2, 3]), "datatype": "FP64"}]), "datatype FP32"),
        (_body([_x([1, 2, 3], [3])]), "rank"),
        (_body([_x([1, 2, 3, 4], [1, 4])]), "shape [-1, 3]"),
        (_body([_x([1, 2], [1, 3])]), "exactly 3"),
        (_body([_x([1, 2, 3, 4], [1, 3])]), "more elements"),
        (_body([_x([1, True, 3])]), "must be numbers"),
        (_body([_x([1, "2", 3])]), "must be numbers"),
        (_body([_x([1, None, 3])]), "must be numbers"),
        (_body([_x([1, 1e39, 3])]), "out of range"),
        (_body([_x([1, float(np.nextafter(FP32_MAX, np.inf)), 3])]), "out of range"),
        (_body([_x([1, -float(np.nextafter(FP32_MAX, np.inf)), 3])]), "out of range"),
        (_body([_x([0.0] * 15, [5, 3])]), "1 to 4 rows"),
        (_body([_x([], [0, 3])]), "1 to 4 rows"),
        (_body([_x([1, 2, 3]), _x([1, 2, 3])]), "takes 1 input"),
        (_body([_x([1, 2, 3])]).replace(b"[1,2,3]", b"[NaN,1,2]"), "JSON"),
        (_body([_x([1, 2, 3])]).replace(b"[1,2,3]", b"[Infinity,1,2]"), "JSON"),
        (_body([_x([1, 2, 3])], outputs=[{"name": "nope"}]), "outputs[0].name"),
        (_body([_x([1, 2, 3])], id=5), "id must be"),
        (_body([_x([1, 2, 3])], parameters={"a": [1]}), "finite scalar"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=None) as caught:
        _decode(body)
    assert fragment in str(caught.value)


def test_int64_bool_and_bytes_inputs_are_strict() -> None:
    sig = ModelSignature(
        inputs=(
            TensorSpec("n", "INT64", (-1,)),
            TensorSpec("b", "BOOL", (-1,)),
            TensorSpec("s", "BYTES", (-1,)),
        ),
        outputs=(),
    )
    good = [
        {"name": "n", "datatype": "INT64", "shape": [2], "data": [1, -(2**63)]},
        {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
    ]
    decoded = _decode(_body(good), sig=sig)
    assert decoded.inputs["n"].tolist() == [1, -(2**63)]
    assert decoded.inputs["b"].tolist() == [True, False]
    assert decoded.inputs["s"].tolist() == ["a", "é"]
    for index, bad in ((0, [1, 2.0]), (0, [True, 1]), (1, [1, 0]), (2, ["a", 1])):
        inputs = [dict(item) for item in good]
        inputs[index]["data"] = bad
        with pytest.raises(InvalidInputError):
            _decode(_body(inputs), sig=sig)


def test_int64_out_of_range_is_refused() -> None:
    sig = ModelSignature(inputs=(TensorSpec("n", "INT64", (-1,)),), outputs=())
    body = b'{"inputs":[{"name":"n","datatype":"INT64","shape":[1],"data":[9223372036854775808]}]}'
    with pytest.raises(InvalidInputError):
        _decode(body, sig=sig)


def _binary_request(array: np.ndarray[Any, Any], size: int | None = None) -> tuple[bytes, str]:
    raw = array.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + raw, str(len(header))


def test_binary_tensors_decode_exactly() -> None:
    array = np.array([[0.5, -1.25, 3.0], [1, 2, 3]], dtype=np.float32)
    body, header = _binary_request(array)
    decoded = _decode(body, header)
    np.testing.assert_array_equal(decoded.inputs["x"], array)
    assert decoded.binary_outputs is True


@pytest.mark.parametrize("trailing", [b"", b"\x00"])
def test_binary_sizes_must_account_for_every_byte(trailing: bytes) -> None:
    array = np.zeros((1, 3), dtype=np.float32)
    body, header = _binary_request(array, size=8)  # 12 bytes needed
    with pytest.raises(InvalidInputError):
        _decode(body + trailing, header)
    good, header = _binary_request(array)
    if trailing:
        with pytest.raises(InvalidInputError, match="no input accounts"):
            _decode(good + trailing, header)


def test_binary_nan_is_refused() -> None:
    body, header = _binary_request(np.array([[np.nan, 1, 2]], dtype=np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        _decode(body, header)


@pytest.mark.parametrize("header", ["-1", "abc", "99999999", "1e3"])
def test_bad_header_length_is_refused(header: str) -> None:
    with pytest.raises(InvalidInputError):
        _decode(_body([_x([1, 2, 3])]), header)


def test_binary_bytes_elements() -> None:
    sig = ModelSignature(inputs=(TensorSpec("s", "BYTES", (-1,)),), outputs=())
    raw = b"".join(struct.pack("<I", len(v)) + v for v in (b"ab", "é".encode()))
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    decoded = _decode(header + raw, str(len(header)), sig)
    assert decoded.inputs["s"].tolist() == ["ab", "é"]
    truncated = header + raw[:-1]
    with pytest.raises(InvalidInputError):
        _decode(truncated, str(len(header)), sig)


def test_response_json_and_binary_round_trip() -> None:
    request = _decode(_body([_x([1, 2, 3])], id="req-1"))
    results = {
        "label": np.array([1], dtype=np.int64),
        "p": np.array([[0.25, 0.75]], dtype=np.float32),
    }
    body, header = oip.encode_infer_response("fraud", 3, request, results, ["label", "p"])
    assert header is None
    document = orjson.loads(body)
    assert document["model_name"] == "fraud"
    assert document["model_version"] == "3"
    assert document["id"] == "req-1"
    assert document["outputs"][0] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [1],
        "data": [1],
    }
    assert document["outputs"][1]["data"] == [0.25, 0.75]

    wire, length = _binary_request(np.ones((1, 3), dtype=np.float32))
    binary_request = _decode(wire, length)
    body, header = oip.encode_infer_response("fraud", 3, binary_request, results, ["label", "p"])
    assert header is not None
    json_part = orjson.loads(body[: int(header)])
    tail = body[int(header) :]
    sizes = [o["parameters"]["binary_data_size"] for o in json_part["outputs"]]
    assert sizes == [8, 8]
    assert np.frombuffer(tail[:8], "<i8").tolist() == [1]
    assert np.frombuffer(tail[8:], "<f4").tolist() == [0.25, 0.75]


def test_requested_outputs_filter_and_choose_encoding() -> None:
    request = _decode(
        _body([_x([1, 2, 3])], outputs=[{"name": "p", "parameters": {"binary_data": False}}])
    )
    results = {"label": np.array([0]), "p": np.array([[0.5, 0.5]], dtype=np.float32)}
    body, header = oip.encode_infer_response("m", 1, request, results, ["label", "p"])
    assert header is None
    assert [o["name"] for o in orjson.loads(body)["outputs"]] == ["p"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(0, 300).map(str)))
def test_decoder_never_fails_other_than_invalid_input(body: bytes, header: str | None) -> None:
    with contextlib.suppress(InvalidInputError):
        _decode(body, header)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=3, max_size=12
    ).filter(lambda v: len(v) % 3 == 0)
)
def test_any_finite_batch_round_trips(values: list[float]) -> None:
    rows = len(values) // 3
    if rows > 4:
        return
    decoded = _decode(_body([_x(values, [rows, 3])]))
    np.testing.assert_array_equal(
        decoded.inputs["x"], np.array(values, dtype=np.float32).reshape(rows, 3)
    )


def test_fp32_accepts_its_largest_magnitude_exactly() -> None:
    body = _body([_x([FP32_MAX, -FP32_MAX, 0])])
    decoded = _decode(body)
    assert decoded.inputs["x"].dtype == np.float32
    assert decoded.inputs["x"].tolist() == [[FP32_MAX, -FP32_MAX, 0.0]]
