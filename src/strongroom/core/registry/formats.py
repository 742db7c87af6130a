"""Model formats Strongroom accepts, and refusal of everything else *before* deserialisation.

Accepted: ONNX, skops (with a per-model trusted-type list), XGBoost UBJ/JSON, LightGBM text.
Refused: pickle, joblib, PyTorch ``.pt``/``.pth``/``.bin`` and anything unknown. Detection only
looks at bytes (magic numbers, container listings) and never unpickles, imports or executes.
"""

from __future__ import annotations

from enum import StrEnum


class ModelFormat(StrEnum):
    ONNX = "onnx"
    SKOPS = "skops"
    XGBOOST_UBJ = "xgboost-ubj"
    XGBOOST_JSON = "xgboost-json"
    LIGHTGBM_TEXT = "lightgbm-text"
