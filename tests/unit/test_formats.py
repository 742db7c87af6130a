"""detect_format: the allow-list of model formats, checked on bytes and names only."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import pickle
import zipfile
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from strongroom.core.registry.formats import (
    ACCEPTED_EXTENSIONS,
    CONVERSION_HINT,
    ModelFormat,
    check_format,
    detect_format,
)
from strongroom.errors import TooLargeError, UnsupportedFormatError


def _onnx_bytes() -> bytes:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _skops_like(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _ubj() -> bytes:
    # {"learner": {}, "version": [3]} in UBJSON, the way XGBoost writes it (int64 lengths).
    def key(name: bytes) -> bytes:
        return b"L" + len(name).to_bytes(8, "big") + name

    return b"{" + key(b"learner") + b"{}" + key(b"version") + b"[i\x03]" + b"}"


VALID: dict[ModelFormat, tuple[str, bytes]] = {
    ModelFormat.ONNX: ("model.onnx", _onnx_bytes()),
    ModelFormat.SKOPS: ("model.skops", _skops_like({"schema.json": b"{}", "1.npy": b"x"})),
    ModelFormat.XGBOOST_UBJ: ("model.ubj", _ubj()),
    ModelFormat.XGBOOST_JSON: ("model.json", json.dumps({"learner": {}, "version": [3]}).encode()),
    ModelFormat.LIGHTGBM_TEXT: ("model.txt", b"tree\nversion=v4\nnum_class=1\n"),
}


class Payload:
    """Anything picklable; nothing here is ever unpickled."""


@pytest.mark.parametrize("fmt", list(ModelFormat))
def test_each_format_is_accepted_with_its_extension(fmt: ModelFormat) -> None:
    name, data = VALID[fmt]
    assert detect_format(name, data) is fmt
    assert detect_format(f"some/dir/{name.upper()}", memoryview(data), fmt) is fmt


def test_accepted_extensions_cover_every_format() -> None:
    assert set(ACCEPTED_EXTENSIONS.values()) == set(ModelFormat)


@pytest.mark.parametrize("fmt", list(ModelFormat))
@pytest.mark.parametrize("ext", sorted(ACCEPTED_EXTENSIONS))
def test_content_must_agree_with_the_extension(fmt: ModelFormat, ext: str) -> None:
    _, data = VALID[fmt]
    if ACCEPTED_EXTENSIONS[ext] is fmt:
        assert detect_format(f"m.{ext}", data) is fmt
    else:
        with pytest.raises(UnsupportedFormatError):
            detect_format(f"m.{ext}", data)


@pytest.mark.parametrize("declared", list(ModelFormat))
def test_declared_format_must_match(declared: ModelFormat) -> None:
    name, data = VALID[ModelFormat.ONNX]
    if declared is ModelFormat.ONNX:
        assert detect_format(name, data, declared) is declared
    else:
        with pytest.raises(UnsupportedFormatError, match="does not match"):
            detect_format(name, data, declared)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", ["m.pkl", "m.onnx", "m.json", "m.txt", "m.ubj", "m.skops", "m"])
def test_pickles_of_every_protocol_are_refused(protocol: int, name: str) -> None:
    data = pickle.dumps({"weights": [1.0, 2.0], "obj": Payload()}, protocol=protocol)
    with pytest.raises(UnsupportedFormatError) as info:
        detect_format(name, data)
    assert info.value.hint == CONVERSION_HINT


def test_refusal_hint_says_how_to_convert() -> None:
    for tool in ("skl2onnx", "skops.io.dump", "save_model('model.ubj')", "model.txt", "torch.onnx"):
        assert tool in CONVERSION_HINT


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_binary_pickle_message_names_pickle(protocol: int) -> None:
    with pytest.raises(UnsupportedFormatError, match="pickle"):
        detect_format("m.onnx", pickle.dumps([1, 2, 3], protocol=protocol))


def test_legacy_protocol_zero_pickle_message_names_pickle() -> None:
    with pytest.raises(UnsupportedFormatError, match="pickle"):
        detect_format("m.onnx", pickle.dumps(Payload(), protocol=0))


@pytest.mark.parametrize(
    ("compress", "label"),
    [
        (zlib.compress, "zlib"),
        (gzip.compress, "gzip"),
        (bz2.compress, "bz2"),
        (lzma.compress, "xz"),
        (lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE), "lzma"),
    ],
)
@pytest.mark.parametrize("name", ["m.joblib", "m.onnx", "m.txt", "m.json", "m"])
def test_compressed_blobs_are_refused(compress, label: str, name: str) -> None:
    data = compress(pickle.dumps(Payload(), protocol=4))
    with pytest.raises(UnsupportedFormatError, match=label):
        detect_format(name, data)


def test_numpy_files_are_refused() -> None:
    npy = io.BytesIO()
    np.save(npy, np.array([1.0, 2.0]))
    with pytest.raises(UnsupportedFormatError, match="NumPy"):
        detect_format("m.onnx", npy.getvalue())
    npz = io.BytesIO()
    np.savez(npz, a=np.array([1.0]), b=np.array([2.0]))
    with pytest.raises(UnsupportedFormatError, match="npz"):
        detect_format("m.skops", npz.getvalue())


@pytest.mark.parametrize("name", ["m.pt", "m.skops", "m.zip", "m"])
def test_torch_style_zip_is_refused(name: str) -> None:
    data = _skops_like({"archive/data.pkl": b"\x80\x02N.", "archive/version": b"3"})
    with pytest.raises(UnsupportedFormatError, match="pickled members"):
        detect_format(name, data)


def test_skops_with_a_pickle_member_is_refused() -> None:
    data = _skops_like({"schema.json": b"{}", "extra.pkl": b"\x80\x04N."})
    with pytest.raises(UnsupportedFormatError, match="pickled"):
        detect_format("m.skops", data)


def test_skops_needs_schema_json() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"schema\.json"):
        detect_format("m.skops", _skops_like({"other.json": b"{}"}))


@pytest.mark.parametrize(
    "ext", ["pkl", "pickle", "joblib", "pt", "pth", "bin", "sav", "dill", "cloudpickle", "npy"]
)
def test_refused_extensions_are_refused_even_with_valid_content(ext: str) -> None:
    _, data = VALID[ModelFormat.ONNX]
    with pytest.raises(UnsupportedFormatError, match="refused") as info:
        detect_format(f"model.{ext}", data)
    assert info.value.hint == CONVERSION_HINT


@pytest.mark.parametrize("name", ["model", "model.", "model.h5", "model.safetensors", "a.onnx/b"])
def test_unknown_or_missing_extension_is_refused(name: str) -> None:
    _, data = VALID[ModelFormat.ONNX]
    with pytest.raises(UnsupportedFormatError):
        detect_format(name, data)


def test_empty_file_is_refused() -> None:
    with pytest.raises(UnsupportedFormatError, match="empty"):
        detect_format("m.onnx", b"")


def test_onnx_structural_check() -> None:
    good = VALID[ModelFormat.ONNX][1]
    model = onnx.load_model_from_string(good)
    model.ClearField("graph")
    for bad in (good[:-3], model.SerializeToString(), b"\x08\x07" + b"\xff" * 20, b"\x0a\x00"):
        with pytest.raises(UnsupportedFormatError, match="not an ONNX model"):
            detect_format("m.onnx", bad)


def test_onnx_unknown_top_level_fields_are_skipped() -> None:
    good = VALID[ModelFormat.ONNX][1]
    # field 99, varint; then field 98, fixed32: future ONNX fields must not break detection
    extra = bytes([0x98, 0x06, 0x01, 0x95, 0x06, 1, 2, 3, 4])
    assert detect_format("m.onnx", good + extra) is ModelFormat.ONNX


@pytest.mark.parametrize(
    "doc", [b"[]", b'{"learner": 1}', b'{"version": [1]}', b"{not json", b"\xff\xfe"]
)
def test_xgboost_json_needs_a_learner_object(doc: bytes) -> None:
    with pytest.raises(UnsupportedFormatError):
        detect_format("m.json", doc)


def test_xgboost_json_deep_nesting_is_refused_not_crashing() -> None:
    with pytest.raises(UnsupportedFormatError):
        detect_format("m.json", b"[" * 100_000 + b"]" * 100_000)


def test_xgboost_json_size_cap() -> None:
    name, data = VALID[ModelFormat.XGBOOST_JSON]
    with pytest.raises(TooLargeError, match="UBJ") as info:
        detect_format(name, data, max_json_bytes=len(data) - 1)
    assert "ubj" in (info.value.hint or "")
    assert detect_format(name, data, max_json_bytes=len(data)) is ModelFormat.XGBOOST_JSON


@pytest.mark.parametrize("data", [b'{"learner": {}}', b"{i\x07learnex}", b"{", b"{L\x00"])
def test_ubj_needs_a_learner_key(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError):
        detect_format("m.ubj", data)


def test_ubj_with_short_length_markers() -> None:
    assert detect_format("m.ubj", b"{i\x07learner{}}") is ModelFormat.XGBOOST_UBJ
    assert detect_format("m.ubj", b"{U\x07learner{}}") is ModelFormat.XGBOOST_UBJ


@pytest.mark.parametrize("data", [b"tree\nnum_class=1\n", b"Tree=0\nversion=v4\n", b"tree"])
def test_lightgbm_text_needs_header_and_version(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError, match="LightGBM"):
        detect_format("m.txt", data)


def test_check_format_applies_the_same_allow_list() -> None:
    for fmt, (_, data) in VALID.items():
        check_format(fmt, data)
    with pytest.raises(UnsupportedFormatError):
        check_format(ModelFormat.ONNX, pickle.dumps(Payload(), protocol=4))
    with pytest.raises(UnsupportedFormatError):
        check_format(ModelFormat.LIGHTGBM_TEXT, VALID[ModelFormat.ONNX][1])


def test_long_hostile_names_are_shortened_in_messages() -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        detect_format("x" * 5000 + ".h5", b"data")
    assert len(info.value.message) < 300
