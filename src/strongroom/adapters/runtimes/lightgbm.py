"""LightGBM runtime: boosters saved with ``Booster.save_model("model.txt")``.

The text format is data (trees, parameters, feature names); ``lightgbm.Booster(model_str=...)``
parses it and runs no code. It needs lightgbm >= 4.6, which fixed a remote-code-execution bug
in model parsing (CVE-2024-43598); ``pyproject.toml`` pins that floor. ``check_format`` repeats
the allow-list of ``core.registry.formats`` before the parser sees the bytes.

The model takes one input named ``input`` (``[batch, n_features]`` float64; NaN means missing)
and returns ``predictions``: ``[batch]``, or ``[batch, n_classes]`` for multiclass objectives.
``lightgbm`` is an optional extra, imported on first use (``MissingExtraError`` without it).
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


def _lightgbm() -> Any:
    try:
        import lightgbm  # noqa: PLC0415 - optional extra, imported only when used
    except ImportError as exc:
        raise MissingExtraError("LightGBM runtime", "lightgbm") from exc
    return lightgbm


class LightGBMRuntime:
    """``ModelRuntime`` for LightGBM text models."""

    def __init__(self, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ValueError("num_threads must be at least 1")
        self._num_threads = num_threads

    @property
    def formats(self) -> frozenset[ModelFormat]:
        return frozenset({ModelFormat.LIGHTGBM_TEXT})

    def validate(
        self,
        fmt: ModelFormat,
        data: bytes,
        trusted_types: tuple[str, ...],  # noqa: ARG002 - port signature; only skops uses it
    ) -> ModelSignature:
        return self._load(fmt, data)[1]

    def load(self, artifact: VerifiedArtifact) -> LightGBMModel:
        booster, signature = self._load(artifact.format, artifact.primary_bytes)
        return LightGBMModel(booster, signature, self._num_threads)

    @staticmethod
    def _load(fmt: ModelFormat, data: bytes) -> tuple[Any, ModelSignature]:
        if fmt is not ModelFormat.LIGHTGBM_TEXT:
            raise InvalidInputError(f"the LightGBM runtime cannot load {fmt.value!r} models")
        check_format(fmt, data)
        lgb = _lightgbm()
        try:
            booster = lgb.Booster(model_str=data.decode("utf-8"))
            n_features = int(booster.num_feature())
            per_iteration = int(booster.num_model_per_iteration())
        except (lgb.basic.LightGBMError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidInputError("model file is malformed: lightgbm cannot parse it") from exc
        output_shape = (-1,) if per_iteration == 1 else (-1, per_iteration)
        signature = ModelSignature(
            inputs=(TensorSpec(name=INPUT_NAME, datatype="FP64", shape=(-1, n_features)),),
            outputs=(TensorSpec(name=OUTPUT_NAME, datatype="FP64", shape=output_shape),),
        )
        return booster, signature


class LightGBMModel:
    """A loaded booster. Each ``predict`` builds its own predictor, so calls may overlap."""

    def __init__(self, booster: Any, signature: ModelSignature, num_threads: int) -> None:
        self._booster = booster
        self._signature = signature
        self._num_threads = num_threads

    @property
    def signature(self) -> ModelSignature:
        return self._signature

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if set(inputs) != {INPUT_NAME}:
            raise InvalidInputError(f"the model expects one input named {INPUT_NAME!r}")
        lgb = _lightgbm()
        try:
            batch = np.asarray(inputs[INPUT_NAME], dtype=np.float64)
            if batch.ndim != 2:  # noqa: PLR2004 - a 2-D batch
                raise InvalidInputError("the input must be a 2-D [batch, n_features] array")
            result = self._booster.predict(batch, num_threads=self._num_threads)
        except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
            raise InvalidInputError("the input does not fit the model's inputs") from exc
        return {OUTPUT_NAME: np.asarray(result)}
