"""Malicious model uploads are refused before anything in them can run.

Every payload here would create a *canary* file if it were ever deserialised. Each test checks
the refusal AND that the canary does not exist afterwards, which proves nothing ran. So that the
absence of the canary means something, ``assert_live`` disassembles each payload (with
``pickletools``, which never executes) to show that it really calls the canary function.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import lzma
import operator
import os
import pickle
import pickletools
import tarfile
import types
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_array

from strongroom.adapters.runtimes.lightgbm import LightGBMRuntime
from strongroom.adapters.runtimes.onnx import OnnxRuntime
from strongroom.adapters.runtimes.skops import SkopsRuntime
from strongroom.adapters.runtimes.xgboost import XGBoostRuntime
from strongroom.core.registry.archive import unpack_archive
from strongroom.core.registry.artifact import issue_verified_artifact
from strongroom.core.registry.formats import ModelFormat, detect_format
from strongroom.core.registry.runtime import ModelRuntime
from strongroom.errors import InvalidInputError, UnsupportedFormatError, UntrustedTypesError

NAMES = [
    "model.pkl",
    "model.pickle",
    "model.joblib",
    "model.onnx",
    "model.skops",
    "model.ubj",
    "model.json",
    "model.txt",
    "model",
    "model.pt",
    "model.pth",
    "model.bin",
    "model.sav",
    "model.npy",
    "MODEL.ONNX",
]


def touch_canary(path: str) -> None:
    Path(path).touch()


class Exploit:
    """Unpickling this calls ``touch_canary(path)``."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (touch_canary, (self.canary,))


class Sneaky:
    """A custom estimator: skops would call ``__setstate__`` (touching the canary) on load."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["canary"]).touch()
        self.__dict__.update(state)

    def predict(self, x: Any) -> Any:
        return x


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A fresh canary per test, for payloads built in the test itself."""
    return tmp_path / "canary"


@pytest.fixture(scope="module")
def payload_canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The canary every shared pickle payload would create; checked after each refusal."""
    return tmp_path_factory.mktemp("payloads") / "canary"


def assert_live(raw_pickle: bytes) -> None:
    """The pickle stream calls ``touch_canary`` (checked by disassembly, never by loading)."""
    ops = list(pickletools.genops(raw_pickle))
    names = {op.name for op, _, _ in ops}
    assert "REDUCE" in names
    assert names & {"GLOBAL", "STACK_GLOBAL"}
    assert any(isinstance(arg, str) and "touch_canary" in arg for _, arg, _ in ops)


def _joblib(tmp_path: Path, obj: Any, compress: Any) -> bytes:
    path = tmp_path / f"dump-{compress!s}.joblib".replace("'", "").replace(" ", "")
    joblib.dump(obj, path, compress=compress)
    return path.read_bytes()


def _torch_zip(raw_pickle: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", raw_pickle)
        zf.writestr("archive/data/0", b"\x00" * 16)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _npy_with_object(obj: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([obj], dtype=object), allow_pickle=True)
    return buf.getvalue()


DECOMPRESS = {
    "joblib-zlib": zlib.decompress,
    "joblib-gzip": gzip.decompress,
    "joblib-bz2": bz2.decompress,
    "joblib-lzma": lzma.decompress,
    "joblib-xz": lzma.decompress,
}


@pytest.fixture(scope="module")
def payloads(payload_canary: Path) -> dict[str, bytes]:
    tmp_path = payload_canary.parent
    exploit = Exploit(payload_canary)
    out = {f"pickle-p{p}": pickle.dumps(exploit, protocol=p) for p in range(6)}
    out["joblib-raw"] = _joblib(tmp_path, exploit, 0)
    for method in ("zlib", "gzip", "bz2", "lzma", "xz"):
        out[f"joblib-{method}"] = _joblib(tmp_path, exploit, (method, 3))
    out["torch-zip"] = _torch_zip(out["pickle-p2"])
    out["npy-object"] = _npy_with_object(exploit)
    return out


def _raw_pickle(kind: str, blob: bytes) -> bytes:
    if kind in DECOMPRESS:
        return DECOMPRESS[kind](blob)
    if kind == "torch-zip":
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return zf.read("archive/data.pkl")
    if kind == "npy-object":
        return blob[blob.index(b"\n") + 1 :]  # after the .npy header comes the pickle
    return blob


KINDS = [f"pickle-p{p}" for p in range(6)] + [
    "joblib-raw",
    "joblib-zlib",
    "joblib-gzip",
    "joblib-bz2",
    "joblib-lzma",
    "joblib-xz",
    "torch-zip",
    "npy-object",
]


@pytest.mark.parametrize("kind", KINDS)
def test_payloads_are_live(kind: str, payloads: dict[str, bytes]) -> None:
    assert_live(_raw_pickle(kind, payloads[kind]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_detect_format_refuses_before_anything_runs(
    kind: str, name: str, payloads: dict[str, bytes], payload_canary: Path
) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        detect_format(name, payloads[kind])
    assert not payload_canary.exists()
    assert "skl2onnx" in (info.value.hint or info.value.message)


@pytest.mark.parametrize("declared", list(ModelFormat))
def test_declaring_a_format_does_not_help(
    declared: ModelFormat, payloads: dict[str, bytes], payload_canary: Path
) -> None:
    for blob in payloads.values():
        with pytest.raises(UnsupportedFormatError):
            detect_format(f"model.{declared.value.split('-')[-1]}", blob, declared)
    assert not payload_canary.exists()


RUNTIMES: list[ModelRuntime] = [OnnxRuntime(), SkopsRuntime(), XGBoostRuntime(), LightGBMRuntime()]


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: type(r).__name__)
def test_runtimes_called_directly_refuse_payloads(
    runtime: ModelRuntime, payloads: dict[str, bytes], payload_canary: Path
) -> None:
    for fmt in runtime.formats:
        for blob in payloads.values():
            with pytest.raises(UnsupportedFormatError):
                runtime.validate(fmt, blob, ())
            artifact = issue_verified_artifact(
                model="evil",
                version=1,
                manifest_digest="sha256:" + "0" * 64,
                format=fmt,
                primary="model",
                files={"model": blob},
                trusted_types=(),
                input_schema={},
                signer=None,
            )
            with pytest.raises(UnsupportedFormatError):
                runtime.load(artifact)
    assert not payload_canary.exists()


def _zip_upload(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_upload(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "pack"), [("up.zip", _zip_upload), ("up.tar.gz", _tar_upload)]
)
def test_payloads_inside_archives_are_refused(
    filename: str,
    pack: Callable[[dict[str, bytes]], bytes],
    payloads: dict[str, bytes],
    payload_canary: Path,
) -> None:
    lower_case_names = {name.lower() for name in NAMES}  # MODEL.ONNX would collide with model.onnx
    members = {
        f"{kind}/{name}": blob for kind, blob in payloads.items() for name in lower_case_names
    }
    files = unpack_archive(filename, pack(members), max_total_bytes=64 << 20, max_members=1000)
    assert files == members  # the names are safe; the contents are what gets refused
    for path, blob in files.items():
        with pytest.raises(UnsupportedFormatError):
            detect_format(path, blob)
    assert not payload_canary.exists()


# --- skops ----------------------------------------------------------------------------------------


def test_skops_untrusted_custom_type_is_refused(canary: Path) -> None:
    blob = sio.dumps(Sneaky(canary))
    assert detect_format("model.skops", blob) is ModelFormat.SKOPS
    with pytest.raises(UntrustedTypesError, match="Sneaky"):
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, ())
    with pytest.raises(UntrustedTypesError, match="Sneaky"):
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, ("sklearn.linear_model.Ridge",))
    assert not canary.exists()


def test_skops_load_also_refuses_untrusted_types(canary: Path) -> None:
    blob = sio.dumps(Sneaky(canary))
    artifact = issue_verified_artifact(
        model="evil",
        version=1,
        manifest_digest="sha256:" + "0" * 64,
        format=ModelFormat.SKOPS,
        primary="model.skops",
        files={"model.skops": blob},
        trusted_types=(),
        input_schema={},
        signer=None,
    )
    with pytest.raises(UntrustedTypesError):
        SkopsRuntime().load(artifact)
    assert not canary.exists()


def test_skops_canary_control_trusting_the_type_runs_it(canary: Path) -> None:
    """Control: the canary does work when skops itself trusts the type, so its absence in the
    other tests means the check stopped the load."""
    blob = sio.dumps(Sneaky(canary))
    sio.loads(blob, trusted=[f"{Sneaky.__module__}.Sneaky"])
    assert canary.exists()


def test_skops_custom_type_is_refused_even_when_trusted(canary: Path) -> None:
    blob = sio.dumps(Sneaky(canary))
    type_name = f"{Sneaky.__module__}.Sneaky"
    with pytest.raises(UntrustedTypesError, match=r"Sneaky \(not on the allow-list\)"):
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, (type_name,))
    with pytest.raises(UntrustedTypesError, match="Sneaky"):
        SkopsRuntime().load(_skops_artifact(blob, (type_name,)))
    assert not canary.exists()


def _skops_artifact(blob: bytes, trusted: tuple[str, ...]) -> Any:
    return issue_verified_artifact(
        model="evil",
        version=1,
        manifest_digest="sha256:" + "0" * 64,
        format=ModelFormat.SKOPS,
        primary="model.skops",
        files={"model.skops": blob},
        trusted_types=trusted,
        input_schema={},
        signer=None,
    )


def _fitted_pipeline(first_step: Any) -> bytes:
    """``first_step`` then a fitted logistic regression, as the reviewer's proof of concept."""
    x = np.random.default_rng(0).normal(size=(50, 3))
    pipe = make_pipeline(first_step, LogisticRegression())
    pipe.steps[1] = ("logisticregression", LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)))
    return sio.dumps(pipe)


def _savetxt_model(canary: Path) -> bytes:
    return _fitted_pipeline(FunctionTransformer(func=functools.partial(np.savetxt, str(canary))))


def test_skops_savetxt_control_predict_writes_a_file_when_trusted(canary: Path) -> None:
    """Control for the next test: loaded by skops with the types trusted, one predict_proba call
    writes the canary (then fails, because ``savetxt`` returns ``None``)."""
    blob = _savetxt_model(canary)
    found = sio.get_untrusted_types(data=blob)
    assert found == ["functools.partial", "numpy.savetxt"]
    model = sio.loads(blob, trusted=found)
    with pytest.raises(ValueError, match="Expected 2D array"):
        model.predict_proba(np.ones((1, 3)))
    assert canary.exists()


def test_skops_savetxt_partial_is_refused_even_when_trusted(canary: Path) -> None:
    blob = _savetxt_model(canary)
    trusted = tuple(sio.get_untrusted_types(data=blob))
    with pytest.raises(UntrustedTypesError, match="never trusted") as at_validate:
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, trusted)
    message = str(at_validate.value)
    assert "functools.partial (a functools.partial call)" in message
    assert "numpy.savetxt (a function reference)" in message
    with pytest.raises(UntrustedTypesError, match=r"numpy\.savetxt"):
        SkopsRuntime().load(_skops_artifact(blob, trusted))
    assert not canary.exists()


def test_skops_plain_numpy_function_is_refused_although_skops_trusts_it() -> None:
    """``numpy.log1p`` is in skops' own default-trusted set, so skops reports nothing; the
    runtime reads the tree itself and refuses every function reference (convert to ONNX)."""
    blob = _fitted_pipeline(FunctionTransformer(np.log1p))
    assert sio.get_untrusted_types(data=blob) == []
    with pytest.raises(UntrustedTypesError, match=r"numpy\.log1p \(a function reference\)") as info:
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, ())
    assert info.value.hint is not None
    assert "ONNX" in info.value.hint
    with pytest.raises(UntrustedTypesError, match=r"numpy\.log1p"):
        SkopsRuntime().load(_skops_artifact(blob, ()))


DANGEROUS_CALLABLES: dict[str, Any] = {
    "numpy.save": np.save,
    "numpy.load": np.load,
    "numpy.savetxt": np.savetxt,
    "numpy.memmap": np.memmap,
    "numpy.fromfile": np.fromfile,
    "numpy.ndarray.tofile": np.ndarray.tofile,
    "operator.call": operator.call,
    "operator.methodcaller": operator.methodcaller("tofile", "/nonexistent/x"),
    "operator.attrgetter": operator.attrgetter("__class__"),
    "types.FunctionType": types.FunctionType,
    "functools.partial": functools.partial(print, "x"),
    "builtins.eval": eval,
    "builtins.exec": exec,
    "builtins.getattr": getattr,
    "builtins.open": open,
    "os.system": os.system,
}


@pytest.mark.parametrize("name", sorted(DANGEROUS_CALLABLES))
def test_skops_dangerous_types_are_refused_even_when_trusted(name: str) -> None:
    blob = sio.dumps(FunctionTransformer(DANGEROUS_CALLABLES[name]))
    found = sio.get_untrusted_types(data=blob)
    assert found
    with pytest.raises(UntrustedTypesError, match="never trusted") as info:
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, tuple(found))
    assert all(type_name in str(info.value) for type_name in found)


def test_skops_trusted_list_naming_a_function_is_refused() -> None:
    blob = sio.dumps(LogisticRegression())
    with pytest.raises(UntrustedTypesError, match=r"numpy\.savetxt \(a function, not a class\)"):
        SkopsRuntime().validate(ModelFormat.SKOPS, blob, ("numpy.savetxt",))


def _craft(blob: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Apply ``edit`` to every node of the skops tree, as an attacker editing the file would."""
    with zipfile.ZipFile(io.BytesIO(blob)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    stack: list[Any] = [schema := json.loads(members["schema.json"])]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                edit(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    members["schema.json"] = json.dumps(schema).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as target:
        for name, content in members.items():
            target.writestr(name, content)
    return buf.getvalue()


def _rename(old: tuple[str, str], new: tuple[str, str]) -> Callable[[dict[str, Any]], None]:
    def edit(node: dict[str, Any]) -> None:
        if (node["__module__"], node["__class__"]) == old:
            node["__module__"], node["__class__"] = new

    return edit


def test_skops_crafted_type_reference_control_yields_a_function() -> None:
    """Control: a type node renamed to a scikit-learn *function* makes skops hand back that
    function, which ``FunctionTransformer`` would call at predict time. (``int`` because ``str``
    also names the type of every dict key, which skops calls on the key while loading.)"""
    blob = sio.dumps(FunctionTransformer(int))
    target = ("sklearn.utils.validation", "check_array")
    crafted = _craft(blob, _rename(("builtins", "int"), target))
    assert "sklearn.utils.validation.check_array" in sio.get_untrusted_types(data=crafted)
    loaded = sio.loads(crafted, trusted=["sklearn.utils.validation.check_array"])
    assert loaded.func is check_array


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (("builtins", "int"), ("sklearn.utils.validation", "check_array"), "a function, not"),
        (("builtins", "int"), ("sklearn.datasets", "dump_svmlight_file"), "not on the allow"),
        (("builtins", "int"), ("sklearn.utils._param_validation", "Integral"), "not defined by"),
        (("builtins", "int"), ("sklearn.no_such_module", "Thing"), "not an importable"),
        (("builtins", "int"), ("numpy", "memmap"), "not on the allow-list"),
        (("numpy", "float64"), ("numpy", "fromfile"), "a function, not a class"),
        (("numpy", "float64"), ("scipy.sparse", "save_npz"), "a function, not a class"),
    ],
)
def test_skops_crafted_references_are_refused_even_when_trusted(
    old: tuple[str, str], new: tuple[str, str], reason: str
) -> None:
    model = {"step": FunctionTransformer(int), "scalar": np.float64(1.5)}
    crafted = _craft(sio.dumps(model), _rename(old, new))
    name = ".".join(new)
    with pytest.raises(UntrustedTypesError, match=reason) as info:
        SkopsRuntime().validate(ModelFormat.SKOPS, crafted, (name,))
    assert name in str(info.value)


def test_skops_hidden_bit_generator_name_is_refused_even_when_trusted() -> None:
    """skops reports a Generator's bit generator name (a string, not a node) as a type; the
    allow-list applies to what skops reports too."""

    def rename_bit_generator(node: dict[str, Any]) -> None:
        if node["__loader__"] == "JsonNode" and node["content"] == '"PCG64"':
            node["content"] = '"seed"'

    crafted = _craft(sio.dumps({"rng": np.random.default_rng(0)}), rename_bit_generator)
    assert "numpy.random.seed" in sio.get_untrusted_types(data=crafted)
    with pytest.raises(UntrustedTypesError, match=r"numpy\.random\.seed \(not on the allow"):
        SkopsRuntime().validate(ModelFormat.SKOPS, crafted, ("numpy.random.seed",))


def test_skops_unknown_node_kind_is_refused() -> None:
    def edit(node: dict[str, Any]) -> None:
        if node["__loader__"] == "TypeNode":
            node["__loader__"] = "EvalNode"

    crafted = _craft(sio.dumps(FunctionTransformer(str)), edit)
    with pytest.raises(UntrustedTypesError, match="node kind 'EvalNode'"):
        SkopsRuntime().validate(ModelFormat.SKOPS, crafted, ())


def test_skops_node_without_a_type_is_malformed() -> None:
    def edit(node: dict[str, Any]) -> None:
        if node["__loader__"] == "TypeNode":
            node["__module__"] = 7

    crafted = _craft(sio.dumps(FunctionTransformer(str)), edit)
    with pytest.raises(InvalidInputError, match="malformed"):
        SkopsRuntime().validate(ModelFormat.SKOPS, crafted, ())


# --- ONNX -----------------------------------------------------------------------------------------


def _external(tensor: TensorProto, location: str) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "20")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _onnx_external_initializer(location: str) -> bytes:
    weight = _external(numpy_helper.from_array(np.ones((5, 1), np.float32), "W"), location)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _onnx_external_in_subgraph(location: str) -> bytes:
    value = _external(numpy_helper.from_array(np.ones((1,), np.float32), "c"), location)

    def branch(name: str) -> Any:
        return helper.make_graph(
            [helper.make_node("Constant", [], [name], value=value)],
            f"{name}_branch",
            [],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])],
        )

    node = helper.make_node("If", ["cond"], ["Y"], then_branch=branch("t"), else_branch=branch("e"))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("build", [_onnx_external_initializer, _onnx_external_in_subgraph])
@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "weights.bin"])
def test_onnx_external_data_is_refused(build: Callable[[str], bytes], location: str) -> None:
    blob = build(location)
    assert detect_format("model.onnx", blob) is ModelFormat.ONNX  # structurally ONNX
    with pytest.raises(InvalidInputError, match="external data"):
        OnnxRuntime().validate(ModelFormat.ONNX, blob, ())


def test_onnx_custom_operator_domain_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Exec", ["X"], ["Y"], domain="com.evil")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 5])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)]
    )
    with pytest.raises(InvalidInputError, match="domain"):
        OnnxRuntime().validate(ModelFormat.ONNX, model.SerializeToString(), ())
