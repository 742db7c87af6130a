"""XGBoost runtime: boosters saved with ``Booster.save_model("model.ubj")`` or ``"model.json"``.

UBJ and JSON are data formats: loading one builds trees, it runs no code. The legacy binary
format and pickled ``XGBClassifier`` objects are refused before this module sees them
(``core.registry.formats``), and ``check_format`` repeats that allow-list here.

The model takes one input named ``input`` (``[batch, n_features]`` float32; NaN means missing)
and returns ``predictions`` as ``Booster.inplace_predict`` gives them: ``[batch]`` for binary
and regression objectives, ``[batch, n_classes]`` for ``multi:softprob``. ``xgboost`` is an
optional extra, imported on first use; without it the runtime raises ``MissingExtraError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from strongroom.core.registry.artifact import VerifiedArtifact
from strongroom.core.registry.formats import ModelFormat, check_format
from strongroom.core.registry.runtime import ModelSignature, TensorSpec
from strongroom.errors import InvalidInputError, MissingExtraError

INPUT_NAME = "input"
OUTPUT_NAME = "predictions"
_FORMATS = frozenset({ModelFormat.XGBOOST_UBJ, ModelFormat.XGBOOST_JSON})


def _xgboost() -> Any:
    try:
        import xgboost  # noqa: PLC0415 - optional extra, imported only when used
    except ImportError as exc:
        raise MissingExtraError("XGBoost runtime", "xgboost") from exc
    return xgboost


class XGBoostRuntime:
    """``ModelRuntime`` for XGBoost UBJ and JSON boosters."""

    def __init__(self, nthread: int = 1) -> None:
        if nthread < 1:
            raise ValueError("nthread must be at least 1")
        self._nthread = nthread

    @property
    def formats(self) -> frozenset[ModelFormat]:
        return _FORMATS

    def validate(
        self,
        fmt: ModelFormat,
        data: bytes,
        trusted_types: tuple[str, ...],  # noqa: ARG002 - port signature; only skops uses it
    ) -> ModelSignature:
        return self._load(fmt, data)[1]

    def load(self, artifact: VerifiedArtifact) -> XGBoostModel:
        booster, signature = self._load(artifact.format, artifact.primary_bytes)
        return XGBoostModel(booster, signature)

    def _load(self, fmt: ModelFormat, data: bytes) -> tuple[Any, ModelSignature]:
        """Parse the booster and derive its signature from one all-zero row."""
        if fmt not in _FORMATS:
            raise InvalidInputError(f"the XGBoost runtime cannot load {fmt.value!r} models")
        check_format(fmt, data)
        xgb = _xgboost()
        try:
            booster = xgb.Booster(params={"nthread": self._nthread})
            booster.load_model(bytearray(data))
            n_features = int(booster.num_features())
            probe = booster.inplace_predict(np.zeros((1, max(n_features, 1)), dtype=np.float32))
        except (xgb.core.XGBoostError, ValueError, TypeError) as exc:
            raise InvalidInputError("model file is malformed: xgboost cannot parse it") from exc
        signature = ModelSignature(
            inputs=(TensorSpec(name=INPUT_NAME, datatype="FP32", shape=(-1, n_features)),),
            outputs=(TensorSpec(name=OUTPUT_NAME, datatype="FP32", shape=(-1, *probe.shape[1:])),),
        )
        return booster, signature


class XGBoostModel:
    """A loaded booster; ``inplace_predict`` is thread-safe for tree boosters."""

    def __init__(self, booster: Any, signature: ModelSignature) -> None:
        self._booster = booster
        self._signature = signature

    @property
    def signature(self) -> ModelSignature:
        return self._signature

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if set(inputs) != {INPUT_NAME}:
            raise InvalidInputError(f"the model expects one input named {INPUT_NAME!r}")
        try:
            batch = np.asarray(inputs[INPUT_NAME], dtype=np.float32)
            width = self._signature.inputs[0].shape[1]
            if batch.ndim != 2 or batch.shape[1] != width:  # noqa: PLR2004 - a 2-D batch
                raise InvalidInputError(f"the input must have shape [batch, {width}]")
            return {OUTPUT_NAME: np.asarray(self._booster.inplace_predict(batch))}
        except (ValueError, TypeError) as exc:
            raise InvalidInputError("the input does not fit the model's inputs") from exc
