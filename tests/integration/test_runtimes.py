"""Model runtimes: every accepted format round-trips validate -> VerifiedArtifact -> predict.

Models are trained here on a tiny synthetic data set (200 rows x 5 features) and the loaded
model's predictions must equal the in-process model's.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import pytest
import skops.io as sio
import xgboost as xgb
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from strongroom.adapters.runtimes.lightgbm import LightGBMRuntime
from strongroom.adapters.runtimes.onnx import OnnxRuntime
from strongroom.adapters.runtimes.skops import SkopsRuntime, refusal_reason
from strongroom.adapters.runtimes.xgboost import XGBoostRuntime
from strongroom.core.registry.artifact import VerifiedArtifact, issue_verified_artifact
from strongroom.core.registry.formats import ModelFormat, detect_format
from strongroom.core.registry.runtime import ModelRuntime, ModelSignature, TensorSpec
from strongroom.core.registry.schema import infer_schema
from strongroom.errors import (
    InvalidInputError,
    MissingExtraError,
    UnsupportedFormatError,
    UntrustedTypesError,
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240601)
    x = rng.normal(size=(200, 5))
    binary = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    multi = np.digitize(x[:, 2], [-0.5, 0.5]).astype(np.int64)
    return x, binary, multi


@pytest.fixture(scope="module")
def logreg(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y, _ = data
    return LogisticRegression().fit(x, y)


def publish(runtime: ModelRuntime, filename: str, blob: bytes, trusted: tuple[str, ...] = ()):
    """What the registry does: detect, validate, then (after verification) issue and load."""
    fmt = detect_format(filename, blob)
    signature = runtime.validate(fmt, blob, trusted)
    artifact = artifact_for(fmt, filename, blob, signature, trusted)
    return signature, runtime.load(artifact)


def artifact_for(
    fmt: ModelFormat,
    filename: str,
    blob: bytes,
    signature: ModelSignature,
    trusted: tuple[str, ...] = (),
) -> VerifiedArtifact:
    return issue_verified_artifact(
        model="test-model",
        version=1,
        manifest_digest="sha256:" + "0" * 64,
        format=fmt,
        primary=filename,
        files={filename: blob},
        trusted_types=trusted,
        input_schema=infer_schema(signature, None).to_dict(),
        signer=None,
    )


# --- ONNX ---------------------------------------------------------------------------------------


def test_onnx_round_trip(data: Any, logreg: LogisticRegression) -> None:
    x, _, _ = data
    blob = to_onnx(logreg, x[:1].astype(np.float32), options={"zipmap": False})
    signature, model = publish(OnnxRuntime(), "fraud.onnx", blob.SerializeToString())
    assert signature.inputs == (TensorSpec("X", "FP32", (-1, 5)),)
    assert [o.name for o in signature.outputs] == ["label", "probabilities"]
    assert model.signature == signature
    out = model.predict({"X": x})  # float64 in: cast to the declared FP32
    np.testing.assert_allclose(out["probabilities"], logreg.predict_proba(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out["label"], logreg.predict(x))


def test_onnx_session_is_cpu_only_with_configured_threads(data: Any, logreg: Any) -> None:
    x, _, _ = data
    blob = to_onnx(logreg, x[:1].astype(np.float32), options={"zipmap": False})
    _, model = publish(OnnxRuntime(intra_op_threads=2), "m.onnx", blob.SerializeToString())
    session = model._session
    assert session.get_providers() == ["CPUExecutionProvider"]
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_onnx_zipmap_output_is_refused_with_a_hint(data: Any, logreg: Any) -> None:
    x, _, _ = data
    blob = to_onnx(logreg, x[:1].astype(np.float32)).SerializeToString()  # zipmap on
    with pytest.raises(InvalidInputError, match="not a tensor") as info:
        OnnxRuntime().validate(ModelFormat.ONNX, blob, ())
    assert "zipmap" in (info.value.hint or "")


def test_onnx_predict_refuses_bad_inputs(data: Any, logreg: Any) -> None:
    x, _, _ = data
    blob = to_onnx(logreg, x[:1].astype(np.float32), options={"zipmap": False})
    _, model = publish(OnnxRuntime(), "m.onnx", blob.SerializeToString())
    with pytest.raises(InvalidInputError, match="expects inputs"):
        model.predict({"wrong": x})
    with pytest.raises(InvalidInputError, match="does not fit"):
        model.predict({"X": x[:, :3]})
    with pytest.raises(InvalidInputError, match="does not fit"):
        model.predict({"X": [["a", "b", "c", "d", "e"]]})


def test_onnx_checker_failure_is_malformed() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["missing"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidInputError, match="model file is malformed"):
        OnnxRuntime().validate(ModelFormat.ONNX, blob.SerializeToString(), ())


def test_onnx_protobuf_garbage_is_malformed() -> None:
    # Passes the top-level walk (ir_version, then a graph field) but the graph is garbage.
    blob = b"\x08\x08" + b"\x3a\x04\xff\xff\xff\xff"
    with pytest.raises(InvalidInputError, match="model file is malformed"):
        OnnxRuntime().validate(ModelFormat.ONNX, blob, ())


def test_onnx_runtime_refuses_other_formats() -> None:
    with pytest.raises(InvalidInputError, match="cannot validate"):
        OnnxRuntime().validate(ModelFormat.SKOPS, b"PK", ())
    with pytest.raises(ValueError, match="at least 1"):
        OnnxRuntime(intra_op_threads=0)


# --- skops --------------------------------------------------------------------------------------


def test_skops_round_trip(data: Any, logreg: LogisticRegression) -> None:
    x, _, _ = data
    signature, model = publish(SkopsRuntime(), "m.skops", sio.dumps(logreg))
    assert signature.inputs == (TensorSpec("input", "FP64", (-1, 5)),)
    assert signature.outputs == (TensorSpec("probabilities", "FP64", (-1, 2)),)
    out = model.predict({"input": x})
    np.testing.assert_allclose(out["probabilities"], logreg.predict_proba(x))


def test_skops_regressor_uses_predict(data: Any) -> None:
    x, _, _ = data
    reg = LinearRegression().fit(x, x @ np.arange(5.0))
    signature, model = publish(SkopsRuntime(), "m.skops", sio.dumps(reg))
    assert signature.outputs == (TensorSpec("predictions", "FP64", (-1,)),)
    np.testing.assert_allclose(model.predict({"input": x})["predictions"], reg.predict(x))
    with pytest.raises(InvalidInputError, match="one input named 'input'"):
        model.predict({"X": x})
    with pytest.raises(InvalidInputError, match="does not fit"):
        model.predict({"input": x[:, :2]})


def test_skops_malformed() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", "{not json")
    with pytest.raises(InvalidInputError, match="model file is malformed"):
        SkopsRuntime().validate(ModelFormat.SKOPS, buf.getvalue(), ())


def test_skops_object_without_predict_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no predict"):
        SkopsRuntime().validate(ModelFormat.SKOPS, sio.dumps({"a": 1}), ())


def _column_pipeline() -> Pipeline:
    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), [0, 1, 2, 3]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [4]),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression())])


REAL_SKLEARN_MODELS: dict[str, Callable[[], Any]] = {
    "logistic_regression": LogisticRegression,
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=10, random_state=0),
    "column_transformer_pipeline": _column_pipeline,
    "svc_probability": lambda: SVC(probability=True, random_state=0),
    "k_neighbors": KNeighborsClassifier,
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0),
    "isolation_forest": lambda: IsolationForest(n_estimators=10, random_state=0),
}
"""The representative models the skops allow-list was derived from (see the runtime's docstring)."""


def _fit_real_model(name: str, data: Any) -> Any:
    x, _, multi = data
    # the column pipeline's last column is categorical (three values), the rest numeric
    features = np.column_stack([x[:, :4], multi]) if name.startswith("column") else x
    with warnings.catch_warnings():
        # SVC(probability=True) is deprecated in newer scikit-learn; the short MLP run does not
        # converge. Neither matters here: the point is what the fitted model serialises to.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = REAL_SKLEARN_MODELS[name]()
        if name == "isolation_forest":
            return model.fit(features), features
        return model.fit(features, multi), features


@pytest.mark.parametrize("name", sorted(REAL_SKLEARN_MODELS))
def test_skops_real_models_round_trip_with_the_types_skops_reports(name: str, data: Any) -> None:
    model, features = _fit_real_model(name, data)
    blob = sio.dumps(model)
    reported = tuple(sio.get_untrusted_types(data=blob))
    assert all(refusal_reason(*t.rsplit(".", 1)) is None for t in reported), reported
    signature, loaded = publish(SkopsRuntime(), "m.skops", blob, reported)
    assert signature.inputs == (TensorSpec("input", "FP64", (-1, features.shape[1])),)
    (output,) = signature.outputs
    method = model.predict_proba if output.name == "probabilities" else model.predict
    np.testing.assert_allclose(loaded.predict({"input": features})[output.name], method(features))
    if reported:  # the allow-list is on top of the owner's list, never instead of it
        with pytest.raises(UntrustedTypesError, match="untrusted types"):
            SkopsRuntime().validate(ModelFormat.SKOPS, blob, ())


def test_skops_real_models_cover_the_types_the_allow_list_was_derived_for(data: Any) -> None:
    """The representative set really exercises the non-default sklearn internals."""
    reported: set[str] = set()
    for name in REAL_SKLEARN_MODELS:
        reported.update(sio.get_untrusted_types(data=sio.dumps(_fit_real_model(name, data)[0])))
    assert {"sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree"} <= reported


# --- XGBoost ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "raw_format"), [("m.ubj", "ubj"), ("m.json", "json")])
@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob"])
def test_xgboost_round_trip(data: Any, filename: str, raw_format: str, objective: str) -> None:
    x, binary, multi = data
    labels, params = (multi, {"num_class": 3}) if objective.startswith("multi") else (binary, {})
    booster = xgb.train(
        {"objective": objective, "max_depth": 3, "nthread": 1, **params},
        xgb.DMatrix(x, label=labels),
        num_boost_round=5,
    )
    blob = bytes(booster.save_raw(raw_format))
    signature, model = publish(XGBoostRuntime(), filename, blob)
    expected = booster.predict(xgb.DMatrix(x))
    assert signature.inputs == (TensorSpec("input", "FP32", (-1, 5)),)
    assert signature.outputs[0].shape == (-1, *expected.shape[1:])
    np.testing.assert_allclose(model.predict({"input": x})["predictions"], expected, rtol=1e-6)
    with pytest.raises(InvalidInputError, match="shape"):
        model.predict({"input": x[:, :4]})


def test_xgboost_malformed() -> None:
    blob = json.dumps({"learner": {"nonsense": True}}).encode()
    with pytest.raises(InvalidInputError, match="model file is malformed"):
        XGBoostRuntime().validate(ModelFormat.XGBOOST_JSON, blob, ())


# --- LightGBM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["binary", "multiclass"])
def test_lightgbm_round_trip(data: Any, objective: str) -> None:
    x, binary, multi = data
    labels, params = (multi, {"num_class": 3}) if objective == "multiclass" else (binary, {})
    booster = lgb.train(
        {"objective": objective, "verbose": -1, "num_threads": 1, **params},
        lgb.Dataset(x, label=labels),
        num_boost_round=5,
    )
    blob = booster.model_to_string().encode()
    signature, model = publish(LightGBMRuntime(), "m.txt", blob)
    expected = booster.predict(x)
    assert signature.inputs == (TensorSpec("input", "FP64", (-1, 5)),)
    assert signature.outputs[0].shape == (-1, *expected.shape[1:])
    np.testing.assert_allclose(model.predict({"input": x})["predictions"], expected)
    with pytest.raises(InvalidInputError, match="does not fit"):
        model.predict({"input": x[:, :4]})


def test_lightgbm_malformed() -> None:
    with pytest.raises(InvalidInputError, match="model file is malformed"):
        LightGBMRuntime().validate(ModelFormat.LIGHTGBM_TEXT, b"tree\nversion=v4\n", ())


# --- shared behaviour ---------------------------------------------------------------------------

RUNTIMES = [OnnxRuntime(), SkopsRuntime(), XGBoostRuntime(), LightGBMRuntime()]


def test_runtimes_cover_every_format_exactly_once() -> None:
    formats = [fmt for runtime in RUNTIMES for fmt in runtime.formats]
    assert sorted(formats) == sorted(ModelFormat)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: type(r).__name__)
def test_runtimes_refuse_formats_they_do_not_own(runtime: ModelRuntime) -> None:
    for fmt in set(ModelFormat) - runtime.formats:
        with pytest.raises(InvalidInputError):
            runtime.validate(fmt, b"\x08\x01", ())


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: type(r).__name__)
def test_runtimes_apply_the_format_allow_list_themselves(runtime: ModelRuntime) -> None:
    for fmt in runtime.formats:
        with pytest.raises(UnsupportedFormatError):
            runtime.validate(fmt, b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00N.", ())


def test_load_rechecks_the_artifact() -> None:
    bogus = artifact_for(
        ModelFormat.ONNX,
        "m.onnx",
        b"\x80\x04N.",
        ModelSignature(inputs=(TensorSpec("X", "FP32", (-1, 5)),), outputs=()),
    )
    with pytest.raises(UnsupportedFormatError):
        OnnxRuntime().load(bogus)


@pytest.mark.parametrize(
    ("module", "runtime", "fmt", "extra"),
    [
        ("skops", SkopsRuntime(), ModelFormat.SKOPS, "skops"),
        ("xgboost", XGBoostRuntime(), ModelFormat.XGBOOST_JSON, "xgboost"),
        ("lightgbm", LightGBMRuntime(), ModelFormat.LIGHTGBM_TEXT, "lightgbm"),
    ],
)
def test_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    runtime: ModelRuntime,
    fmt: ModelFormat,
    extra: str,
) -> None:
    blobs = {
        ModelFormat.SKOPS: sio.dumps(LinearRegression()),
        ModelFormat.XGBOOST_JSON: b'{"learner": {}}',
        ModelFormat.LIGHTGBM_TEXT: b"tree\nversion=v4\n",
    }
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as info:
        runtime.validate(fmt, blobs[fmt], ())
    assert info.value.extra == extra


def test_onnx_symbolic_and_unknown_dims_are_dynamic(data: Any) -> None:
    x, _, _ = data
    value = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [value],
    )
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(blob)
    signature, model = publish(OnnxRuntime(), "relu.onnx", blob.SerializeToString())
    assert signature.outputs == (TensorSpec("y", "FP32", (-1, -1)),)
    np.testing.assert_allclose(model.predict({"x": x})["y"], np.maximum(x, 0), rtol=1e-6)
